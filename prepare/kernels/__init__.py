"""prepare.kernels: fused Triton kernels a train file may use for training (never for the metric).

    from prepare.kernels import usable, relu2_mlp, linear_softcap_cross_entropy

    y = relu2_mlp(x, c_fc.weight, c_proj.weight)                         # c_proj(relu(c_fc(x))^2)
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
and they are for *training* only. Each function runs its fused kernels only when `usable(x)`:
triton is installed, x is on CUDA (or on the CPU under TRITON_INTERPRET=1), and torch.export is
not tracing. Otherwise it computes the same thing in plain PyTorch, so a CPU run and the model
`hand_off` exports (the evaluator refuses custom operators and computes the metric from the
plain logits) never see a kernel.

`import prepare.kernels` imports torch and, when installed, triton, and defines the kernels then
(not inside a torch.compile trace); `import prepare` imports none of it.
TRITON_INTERPRET=1 runs the kernels on CPU tensors (slowly: for tests on small shapes).
"""

from __future__ import annotations

from typing import Any

from prepare.kernels.runtime import HAVE_TRITON as _HAVE_TRITON
from prepare.kernels.runtime import interpreting

__all__ = ["usable", "relu2_mlp", "linear_softcap_cross_entropy"]


def usable(x: Any) -> bool:
    """Whether the fused kernels run on tensor `x` now: triton is installed, x is on CUDA (or on
    the CPU under Triton's interpreter), and torch.export is not tracing the model."""
    import torch

    if torch.compiler.is_exporting() or not _HAVE_TRITON:
        return False
    return bool(x.is_cuda) or (x.device.type == "cpu" and interpreting())


def relu2_mlp(x: Any, w_fc: Any, w_proj: Any) -> Any:
    """`F.linear(F.relu(F.linear(x, w_fc)).square(), w_proj)`, with ReLU^2 fused into the matmuls
    when `usable(x)`, else exactly that PyTorch expression.

    x (..., dim); w_fc (hidden, dim); w_proj (dim, hidden). The fused path computes in x's dtype
    (bf16 under the train file's autocast); the weights' gradients come back in their own dtype.
    """
    if not usable(x):
        import torch.nn.functional as F

        return F.linear(F.relu(F.linear(x, w_fc)).square(), w_proj)
    return _relu2.relu2_mlp(x, w_fc, w_proj)


def linear_softcap_cross_entropy(
    x: Any, weight: Any, targets: Any, softcap: float, ignore_index: int = -1, chunk_rows: int = 0
) -> Any:
    """Mean cross-entropy of `softcap * tanh(F.linear(x, weight).float() / softcap)` against
    `targets`, fused when `usable(x)`, else exactly that PyTorch expression.

    x (..., dim), weight (vocab, dim), targets (...) int64; rows whose target is `ignore_index`
    count neither in the loss nor in the mean. The fused path computes `chunk_rows` rows at a
    time (0: as many as make 64 MB of logits in x's dtype).
    """
    if not usable(x):
        import torch
        import torch.nn.functional as F

        logits = F.linear(x, weight).float()
        logits = softcap * torch.tanh(logits / softcap)
        return F.cross_entropy(
            logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index
        )
    return _cross_entropy.linear_softcap_cross_entropy(x, weight, targets, softcap, ignore_index, chunk_rows)


if _HAVE_TRITON:  # define the kernels and operators now, never inside a torch.compile trace
    from prepare.kernels import cross_entropy as _cross_entropy
    from prepare.kernels import relu2 as _relu2
