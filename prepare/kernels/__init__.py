"""prepare.kernels: fused Triton kernels a train file may use for training (never for the metric).

    from prepare.kernels import usable, relu2_mlp, linear_softcap_cross_entropy

    if usable(x):   # Triton can run on x (CUDA, or the interpreter) and nobody is exporting
        y = relu2_mlp(x, c_fc.weight, c_proj.weight)                       # c_proj(relu(c_fc(x))^2)
        loss = linear_softcap_cross_entropy(h, lm_head.weight, targets, 15.0)  # mean CE of cap*tanh(h W^T / cap)

* `relu2_mlp` computes the MLP's first matmul with ReLU^2 in its epilogue (the pre-activation is
  kept for the backward, whose gradient matmul applies 2 * relu(h) in its epilogue): the hidden
  activation, four times the width, is never read back just to square it.
* `linear_softcap_cross_entropy` computes the lm_head, the logit soft-cap and the cross-entropy
  over slices of rows: only one slice's logits exist at a time, and the forward pass already
  leaves the gradients (the backward only scales them), so the full (rows x vocabulary) logits
  are never written.

Both are `torch.library` custom operators (opaque to torch.compile, so a compiled block calls
them as they are) with their backward registered. They are immutable like the rest of prepare,
and they are for *training* only: `hand_off` exports the model while `torch.compiler.is_exporting()`
is true, so a model that asks `usable(x)` before each fused call exports its plain PyTorch path
(the evaluator refuses custom operators and computes the metric from the plain logits).

`import prepare.kernels` imports torch but not triton; the first call of a kernel imports triton.
TRITON_INTERPRET=1 runs the kernels on CPU tensors (slowly: for tests on small shapes).
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["usable", "relu2_mlp", "linear_softcap_cross_entropy"]


def interpreting() -> bool:
    """True when Triton's interpreter runs kernels on the CPU (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def usable(x: Any) -> bool:
    """Whether the fused kernels can run on tensor `x` now: on CUDA (or under Triton's
    interpreter), with triton importable, and not while torch.export traces the model."""
    import torch

    if torch.compiler.is_exporting():
        return False
    if not (x.is_cuda or (interpreting() and x.device.type == "cpu")):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def relu2_mlp(x: Any, w_fc: Any, w_proj: Any) -> Any:
    """`F.linear(F.relu(F.linear(x, w_fc)).square(), w_proj)` with ReLU^2 fused into the matmuls.

    x (..., dim); w_fc (hidden, dim); w_proj (dim, hidden). Computes in x's dtype (bf16 under
    the train file's autocast); the weights' gradients come back in their own dtype.
    """
    from prepare.kernels.relu2 import relu2_mlp as impl

    return impl(x, w_fc, w_proj)


def linear_softcap_cross_entropy(
    x: Any, weight: Any, targets: Any, softcap: float, ignore_index: int = -1, chunk_rows: int = 0
) -> Any:
    """Mean cross-entropy of `softcap * tanh((x @ weight.T) / softcap)` against `targets`.

    x (..., dim), weight (vocab, dim), targets (...) int64; rows whose target is `ignore_index`
    count neither in the loss nor in the mean. The logits are float32 from x's dtype (like
    `F.linear(x, w).float()` under autocast). `chunk_rows` rows are computed at a time (0: a
    slice of about 32 MB of logits, which stays in the GPU's L2 cache between the kernels).
    """
    from prepare.kernels.cross_entropy import linear_softcap_cross_entropy as impl

    return impl(x, weight, targets, softcap, ignore_index, chunk_rows)
