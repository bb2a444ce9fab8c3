"""lm_head + logit soft-cap + cross-entropy, one slice of rows at a time, gradients in the forward.

For each slice of rows: one matmul writes the slice's logits (x dtype), one Triton program per
row reads its logits twice (an online log-sum-exp of the soft-capped values, then the gradient,
written over the logits in place), and two matmuls turn that gradient into the slice's share of
grad_x and grad_weight. The backward pass only multiplies the stored gradients by the incoming
scalar. Peak memory is one slice of logits instead of all of them, in x's dtype, and nothing of
the (rows x vocabulary) logits outlives its slice.

Reference (what it computes, within float32 rounding of the same bf16 logits):

    z = softcap * tanh(F.linear(x, weight).float() / softcap)
    F.cross_entropy(z, targets, ignore_index=ignore_index)      # mean over the counted rows

d loss / d logit = (softmax(z) - onehot(target)) * (1 - (z / softcap)^2) / counted rows.
With no counted row at all the loss is 0 (the reference gives nan).
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from prepare.kernels.runtime import interpreting

SLICE_BYTES = 64 * 2**20  # logits of one slice: large matmuls, few accumulations into grad_weight


@triton.jit
def _tanh(y):
    # tanh through exp: exact at both tails (exp overflows to inf -> 1), available everywhere
    return 1.0 - 2.0 / (tl.exp(2.0 * y) + 1.0)


@triton.jit
def _softcap_ce_rows(
    logits_ptr,
    stride_row,
    targets_ptr,
    loss_ptr,
    scale_ptr,
    softcap,
    ignore_index,
    N_COLS: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One row: loss = lse(z) - z[target]; logits row := d loss / d logits (times scale).

    N_COLS (the vocabulary) is a compile-time constant: the loops have fixed trip counts, and
    Triton's interpreter (numpy 2) cannot take a loop bound from a runtime scalar.
    """
    row = tl.program_id(0).to(tl.int64)
    base = logits_ptr + row * stride_row
    target = tl.load(targets_ptr + row).to(tl.int64)
    valid = target != ignore_index
    cols = tl.arange(0, BLOCK)
    # pass 1: online log-sum-exp with one running max per row (one exp per logit besides tanh's)
    m = tl.max(tl.full((BLOCK,), -1.0e30, tl.float32), 0)
    s = tl.sum(tl.zeros((BLOCK,), tl.float32), 0)
    for start in range(0, N_COLS, BLOCK):
        mask = start + cols < N_COLS
        raw = tl.load(base + start + cols, mask=mask, other=0.0).to(tl.float32)
        z = tl.where(mask, softcap * _tanh(raw / softcap), -float("inf"))
        m_new = tl.maximum(m, tl.max(z, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
        m = m_new
    lse = m + tl.log(s)
    safe_target = tl.where(valid, target, 0)
    z_target = softcap * _tanh(tl.load(base + safe_target).to(tl.float32) / softcap)
    tl.store(loss_ptr + row, tl.where(valid, lse - z_target, 0.0))
    # pass 2: the gradient, in place of the logits
    scale = tl.where(valid, tl.load(scale_ptr), 0.0)
    for start in range(0, N_COLS, BLOCK):
        mask = start + cols < N_COLS
        raw = tl.load(base + start + cols, mask=mask, other=0.0).to(tl.float32)
        t = _tanh(raw / softcap)
        p = tl.exp(softcap * t - lse)
        onehot = tl.where(start + cols == target, 1.0, 0.0)
        grad = (p - onehot) * (1.0 - t * t) * scale
        tl.store(base + start + cols, grad.to(logits_ptr.dtype.element_ty), mask=mask)


_MM_OUT_DTYPE = True  # cleared when this torch cannot run mm(..., out_dtype=float32) on the device


def _mm_float32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b accumulated and returned in float32 (bf16 inputs: no rounding to bf16 per slice)."""
    global _MM_OUT_DTYPE
    if a.dtype == torch.float32:
        return torch.mm(a, b)
    if _MM_OUT_DTYPE and a.is_cuda:
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (RuntimeError, TypeError):  # torch without the CUDA kernel of mm.dtype
            _MM_OUT_DTYPE = False
    return torch.mm(a, b).to(torch.float32)


def _slice_rows(n_rows: int, vocab: int, itemsize: int, chunk_rows: int) -> int:
    if chunk_rows > 0:
        return min(chunk_rows, n_rows)
    return max(1, min(n_rows, SLICE_BYTES // (vocab * itemsize)))


@torch.library.custom_op("autoresearch::softcap_cross_entropy", mutates_args=())
def softcap_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float,
    ignore_index: int,
    chunk_rows: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean loss as a 0-d float32 tensor, d loss / d x, d loss / d weight) for x (rows, dim)."""
    with torch.autocast(x.device.type, enabled=False):  # every operand is already in x's dtype
        return _forward(x, weight, targets, softcap, ignore_index, chunk_rows)


def _forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float,
    ignore_index: int,
    chunk_rows: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n_rows, _ = x.shape
    vocab = weight.size(0)
    w = weight.to(x.dtype)
    targets = targets.contiguous()
    counted = (targets != ignore_index).sum().clamp(min=1)
    scale = (1.0 / counted.to(torch.float32)).reshape(1)
    losses = torch.empty(n_rows, dtype=torch.float32, device=x.device)
    grad_x = torch.empty_like(x)
    grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=x.device)
    rows = _slice_rows(n_rows, vocab, x.element_size(), chunk_rows)
    buffer = torch.empty((rows, vocab), dtype=x.dtype, device=x.device)
    block = min(triton.next_power_of_2(vocab), 1024 if interpreting() else 4096)
    warps = 8 if block >= 2048 else 4
    for start in range(0, n_rows, rows):
        end = min(start + rows, n_rows)
        xs, logits = x[start:end], buffer[: end - start]
        torch.mm(xs, w.t(), out=logits)
        _softcap_ce_rows[(end - start,)](
            logits,
            logits.stride(0),
            targets[start:end],
            losses[start:end],
            scale,
            float(softcap),
            ignore_index,
            N_COLS=vocab,
            BLOCK=block,
            num_warps=warps,
        )
        torch.mm(logits, w, out=grad_x[start:end])
        grad_w += _mm_float32(logits.t(), xs)
    loss = losses.sum() * scale[0]
    return loss, grad_x, grad_w.to(weight.dtype)


@softcap_cross_entropy.register_fake
def _(x, weight, targets, softcap, ignore_index, chunk_rows):
    return x.new_empty((), dtype=torch.float32), torch.empty_like(x), torch.empty_like(weight)


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    ctx.save_for_backward(output[1], output[2])


def _backward(ctx: Any, grad_loss: Any, _grad_gx: Any, _grad_gw: Any) -> tuple[Any, ...]:
    grad_x, grad_w = ctx.saved_tensors
    return grad_x * grad_loss.to(grad_x.dtype), grad_w * grad_loss.to(grad_w.dtype), None, None, None, None


softcap_cross_entropy.register_autograd(_backward, setup_context=_setup)


def linear_softcap_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    softcap: float,
    ignore_index: int,
    chunk_rows: int,
) -> torch.Tensor:
    """The public entry (prepare.kernels.linear_softcap_cross_entropy): flattens the rows."""
    loss, _, _ = softcap_cross_entropy(
        x.reshape(-1, x.size(-1)),
        weight,
        targets.reshape(-1),
        float(softcap),
        int(ignore_index),
        int(chunk_rows),
    )
    return loss
