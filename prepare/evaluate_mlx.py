"""evaluate_bpb for MLX models: the same metric as the torch path, computed with MLX.

    val_bpb = sum over targets of cross-entropy (nats) / (ln 2 * sum of the targets' UTF-8 bytes)

`prepare.evaluate.evaluate_bpb` sends every model that is not a torch module here; the evaluator
(`prepare.evaluate_program`) uses `mlx_losses` on a handed-off MLX program. The rows are the same
pinned validation rows (`prepare.evalset`), so the paths differ only in the framework that runs
the model.

Memory is bounded on purpose (a 24 GB Mac shares it with everything else): each batch is cut
into slices of rows whose float32 logits hold at most CHUNK_ELEMENTS values, and every slice is
evaluated (a lazy-evaluation boundary) before the next is built, so at most one slice's
activations and logits are alive whatever `batch_size` the train file asks for. Each slice's
per-target nats (rows x seq_len numbers, tiny next to the logits) are summed in float64 with
NumPy: Metal has no float64, and a float32 sum of many near-equal values drifts.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from prepare.evalset import bits_per_byte, eval_batches_numpy
from prepare.tokenizer import Tokenizer

CHUNK_ELEMENTS = 1 << 26  # float32 logits per forward slice: 256 MiB (4 rows of 2048 x 8192)


def slice_rows(seq_len: int, vocab: int) -> int:
    return max(1, CHUNK_ELEMENTS // (seq_len * max(vocab, 1)))


def check_logits(logits: Any, shape: tuple[int, int], vocab_size: int) -> int:
    import mlx.core as mx

    if not isinstance(logits, mx.array) or logits.ndim != 3 or tuple(logits.shape[:2]) != shape:
        raise TypeError(
            "model(idx) must return logits of shape (batch, seq_len, vocab); "
            f"got {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
        )
    vocab = int(logits.shape[-1])
    if vocab < vocab_size:
        raise TypeError(f"the model's logits have {vocab} classes but the tokenizer has {vocab_size} ids")
    return vocab


def mlx_losses(logits: Any, targets: Any) -> Any:
    """Per-position cross-entropy (nats, float32): logsumexp minus the target's logit, in float32."""
    import mlx.core as mx

    logits = logits.astype(mx.float32)
    picked = mx.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return mx.logsumexp(logits, axis=-1) - picked


def evaluate_bpb_mlx(model: Any, tokenizer: Tokenizer, batch_size: int) -> float:
    """Bits per byte of an MLX model (`model(idx) -> logits`) on the active profile's validation rows."""
    import mlx.core as mx

    token_bytes = np.asarray(tokenizer.token_bytes, dtype=np.int64)
    was_training = bool(getattr(model, "training", False))
    if hasattr(model, "eval"):
        model.eval()
    total_nats, total_bytes = 0.0, 0
    rows_per_slice = 0  # set from the first slice's vocabulary width
    try:
        for x_np, y_np in eval_batches_numpy(tokenizer, batch_size):
            seq_len = x_np.shape[1]
            start = 0
            while start < x_np.shape[0]:
                step = rows_per_slice or 1  # the very first slice is one row: it tells us the vocab width
                x = mx.array(x_np[start : start + step])
                y = mx.array(y_np[start : start + step])
                logits = model(x)
                vocab = check_logits(logits, (x.shape[0], seq_len), tokenizer.vocab_size)
                rows_per_slice = slice_rows(seq_len, vocab)
                nats = mlx_losses(logits, y)
                tb = token_bytes[y_np[start : start + step]]
                counted = tb > 0  # special tokens (zero bytes) are masked out of both sums
                masked = mx.where(mx.array(counted), nats, 0.0)
                # boundary: evaluate this slice now so its activations are freed before the next one
                mx.eval(masked)
                # the sum in float64 on the host: (rows, seq_len) numbers, tiny next to the logits
                total_nats += float(np.array(masked).astype(np.float64).sum())
                total_bytes += int(tb.sum())
                start += x.shape[0]
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    return bits_per_byte(total_nats, total_bytes)
