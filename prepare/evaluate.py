"""evaluate_bpb: the fixed metric. Bits per byte of the pinned validation data.

    val_bpb = sum over targets of cross-entropy (nats) / (ln 2 * sum of the targets' UTF-8 bytes)

Special-token targets (byte length 0) are masked out of both sums. The cross-entropy is
computed here, in float32, from the logits `model(idx)` returns (never by a loss the agent can
edit), a slice of rows at a time so its memory stays bounded whatever the batch size. Every
call reads the same rows: EVAL_TOKENS // MAX_SEQ_LEN rows of the validation split, packed
exactly as for training; the last batch is smaller when batch_size does not divide that count,
so the result does not depend on batch_size (up to float summation order). Sums are kept in
float64 on the device and read once at the end (no per-batch sync).

Torch models (CUDA or CPU) run here; any other model goes to `prepare.evaluate_mlx`. Both
read the same rows and write the same record through `prepare.evalset` (one JSON line per
call to $AUTORESEARCH_EVAL_RECORD when it is set).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from prepare import env, markers
from prepare.evalset import eval_batches_numpy, eval_rows, record_result
from prepare.tokenizer import Tokenizer

CHUNK_ELEMENTS = 1 << 27  # float32 logits per cross-entropy slice: 512 MiB


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def evaluate_bpb(model: Any, tokenizer: Tokenizer, batch_size: int) -> float:
    """Bits per byte of `model` on the pinned validation rows of the active dataset and profile."""
    markers.hand_off()
    if not _is_torch_module(model):
        from prepare.evaluate_mlx import evaluate_bpb_mlx

        return float(evaluate_bpb_mlx(model, tokenizer, batch_size))
    return _evaluate_torch(model, tokenizer, batch_size)


def _evaluate_torch(model: Any, tokenizer: Tokenizer, batch_size: int) -> float:
    import torch
    import torch.nn.functional as F

    t0 = time.perf_counter()
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cuda" if env.device() == "cuda" else "cpu")
    token_bytes = torch.tensor(tokenizer.token_bytes, dtype=torch.int64, device=device)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.int64, device=device)
    ntargets = torch.zeros((), dtype=torch.int64, device=device)
    pin = device.type == "cuda"
    was_training = model.training
    model.eval()
    n_rows = 0
    try:
        with torch.no_grad():
            for x_np, y_np in eval_batches_numpy(tokenizer, batch_size):
                x_cpu, y_cpu = torch.from_numpy(x_np).long(), torch.from_numpy(y_np).long()
                if pin:
                    x_cpu, y_cpu = x_cpu.pin_memory(), y_cpu.pin_memory()
                x, y = x_cpu.to(device, non_blocking=pin), y_cpu.to(device, non_blocking=pin)
                logits = model(x)
                if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or logits.shape[:2] != x.shape:
                    raise TypeError(
                        "evaluate_bpb needs model(idx) to return logits of shape (batch, seq_len, vocab); "
                        f"got {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
                    )
                vocab = logits.shape[-1]
                if vocab < tokenizer.vocab_size:
                    raise TypeError(
                        f"the model's logits have {vocab} classes but the tokenizer has {tokenizer.vocab_size} ids"
                    )
                step = max(1, CHUNK_ELEMENTS // (x.shape[1] * vocab))
                for i in range(0, x.shape[0], step):
                    flat = logits[i : i + step].float().reshape(-1, vocab)
                    tgt = y[i : i + step].reshape(-1)
                    loss = F.cross_entropy(flat, tgt, reduction="none")
                    tb = token_bytes[tgt]
                    mask = tb > 0
                    nats += torch.where(mask, loss, torch.zeros_like(loss)).sum(dtype=torch.float64)
                    nbytes += tb.sum()
                    ntargets += mask.sum()
                n_rows += x.shape[0]
                del logits
    finally:
        model.train(was_training)
    total_nats, total_bytes, target_tokens = nats.item(), int(nbytes.item()), int(ntargets.item())
    seq_len = eval_rows()[1]
    return record_result(total_nats, total_bytes, target_tokens, n_rows * seq_len, time.perf_counter() - t0)
