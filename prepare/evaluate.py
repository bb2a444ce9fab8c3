"""The metric: bits per byte of the pinned validation data, and the in-process reference evaluate_bpb.

    val_bpb = sum over targets of cross-entropy (nats) / (ln 2 * sum of the targets' UTF-8 bytes)

Special-token targets (byte length 0) are masked out of both sums. The cross-entropy is
computed here, in float32, from the logits the model returns, a slice of rows at a time so its
memory stays bounded whatever the batch size (`torch_losses`). Every evaluation reads the same
rows: EVAL_TOKENS // MAX_SEQ_LEN rows of the validation split, packed exactly as for training.

Judged runs are evaluated by `prepare.evaluate_program`, in its own process, on the model the
train file handed off (`prepare.hand_off`); it computes the losses with `torch_losses` /
`prepare.evaluate_mlx.mlx_losses`, so its number is this one. `evaluate_bpb(model, tokenizer,
batch_size)` evaluates a live model in the calling process: the reference the evaluator is
tested against, and a tool for notebooks and benchmarks. Torch models run here; any other model
goes to `prepare.evaluate_mlx`. The result does not depend on batch_size (up to float
summation order). Sums are kept in float64 on the device and read once at the end.
"""

from __future__ import annotations

import sys
from typing import Any

from prepare import env, markers
from prepare.evalset import bits_per_byte, eval_batches_numpy
from prepare.tokenizer import Tokenizer

CHUNK_ELEMENTS = 1 << 27  # float32 logits per cross-entropy slice: 512 MiB


def _is_torch_module(model: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(model, torch.nn.Module)


def check_logits(logits: Any, shape: tuple[int, ...], vocab_size: int) -> int:
    """The logits' vocabulary width; TypeError unless they are (batch, seq_len, >= vocab_size) floats."""
    import torch

    if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or tuple(logits.shape[:2]) != tuple(shape):
        raise TypeError(
            "model(idx) must return logits of shape (batch, seq_len, vocab); "
            f"got {type(logits).__name__} {tuple(getattr(logits, 'shape', ()))}"
        )
    if not logits.is_floating_point():
        raise TypeError(f"the model's logits must be floating point, got {logits.dtype}")
    vocab = int(logits.shape[-1])
    if vocab < vocab_size:
        raise TypeError(f"the model's logits have {vocab} classes but the tokenizer has {vocab_size} ids")
    return vocab


def torch_losses(logits: Any, targets: Any) -> Any:
    """Per-position cross-entropy (nats, float32, shape of `targets`), a slice of rows at a time."""
    import torch
    import torch.nn.functional as F

    rows, seq_len, vocab = logits.shape
    step = max(1, CHUNK_ELEMENTS // (seq_len * vocab))
    out = torch.empty((rows, seq_len), dtype=torch.float32, device=logits.device)
    for i in range(0, rows, step):
        flat = logits[i : i + step].float().reshape(-1, vocab)
        out[i : i + step] = F.cross_entropy(flat, targets[i : i + step].reshape(-1), reduction="none").view(
            -1, seq_len
        )
    return out


def evaluate_bpb(model: Any, tokenizer: Tokenizer, batch_size: int) -> float:
    """Bits per byte of a live `model` (model(idx) -> logits) on the pinned validation rows."""
    markers.hand_off()  # training is over (an experiment that evaluates in its own process)
    if not _is_torch_module(model):
        from prepare.evaluate_mlx import evaluate_bpb_mlx

        return float(evaluate_bpb_mlx(model, tokenizer, batch_size))
    return _evaluate_torch(model, tokenizer, batch_size)


def _evaluate_torch(model: Any, tokenizer: Tokenizer, batch_size: int) -> float:
    import torch

    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cuda" if env.device() == "cuda" else "cpu")
    token_bytes = torch.tensor(tokenizer.token_bytes, dtype=torch.int64, device=device)
    nats = torch.zeros((), dtype=torch.float64, device=device)
    nbytes = torch.zeros((), dtype=torch.int64, device=device)
    pin = device.type == "cuda"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for x_np, y_np in eval_batches_numpy(tokenizer, batch_size):
                x_cpu, y_cpu = torch.from_numpy(x_np).long(), torch.from_numpy(y_np).long()
                if pin:
                    x_cpu, y_cpu = x_cpu.pin_memory(), y_cpu.pin_memory()
                x, y = x_cpu.to(device, non_blocking=pin), y_cpu.to(device, non_blocking=pin)
                logits = model(x)
                check_logits(logits, tuple(x.shape), tokenizer.vocab_size)
                loss = torch_losses(logits, y)
                del logits
                tb = token_bytes[y]
                nats += torch.where(tb > 0, loss, torch.zeros_like(loss)).sum(dtype=torch.float64)
                nbytes += tb.sum()
    finally:
        model.train(was_training)
    return bits_per_byte(nats.item(), int(nbytes.item()))
