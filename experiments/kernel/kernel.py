"""
The causal depthwise convolution of the `conv-lm` experiment as a Triton kernel: make it faster.

This is the MUTABLE file of the `kernel` experiment. prepare/kernel_bench.py (immutable) imports
it, checks `causal_conv1d` against a float64 reference on adversarial and random shapes (a
wrong answer is the crash `incorrect`, however fast), then times it on fixed shapes and reports
`gbps`: the bytes a call must move (x read, y written) per second, higher is better.

    y[b, t, c] = bias[c] + sum_k weight[c, k] * x[b, t - (K - 1) + k, c]     (zero before t = 0)

x: (B, T, C) contiguous, float32 or bfloat16; weight: (C, K) float32; bias: (C,) float32;
y: x's shape, dtype and device. Accumulate in float32 (the gate allows float32 rounding only).

Ideas: larger or autotuned tiles, more warps, loading the K-1 halo rows once per tile instead
of K overlapping loads, vectorised channel loads, a persistent grid.
"""

import torch
import triton
import triton.language as tl

BLOCK_T = 64  # tokens per tile
BLOCK_C = 64  # channels per tile
NUM_WARPS = 4  # warps per program


@triton.jit
def _causal_conv_kernel(
    x_ptr, w_ptr, b_ptr, y_ptr, T, C,
    K: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
):  # fmt: skip
    pid_bt = tl.program_id(0)
    pid_c = tl.program_id(1)
    n_tiles = tl.cdiv(T, BLOCK_T)
    b = (pid_bt // n_tiles).to(tl.int64)
    t = (pid_bt % n_tiles) * BLOCK_T + tl.arange(0, BLOCK_T)
    c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c < C
    base = b * T * C
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for k in tl.static_range(K):
        src = t - (K - 1 - k)
        ok = ((src >= 0) & (src < T))[:, None] & c_ok[None, :]
        xv = tl.load(x_ptr + base + src[:, None] * C + c[None, :], mask=ok, other=0.0)
        wv = tl.load(w_ptr + c * K + k, mask=c_ok, other=0.0)
        acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
    acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    out = (t < T)[:, None] & c_ok[None, :]
    tl.store(y_ptr + base + t[:, None] * C + c[None, :], acc.to(y_ptr.dtype.element_ty), mask=out)


def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    B, T, C = x.shape
    y = torch.empty_like(x)
    grid = (B * triton.cdiv(T, BLOCK_T), triton.cdiv(C, BLOCK_C))
    _causal_conv_kernel[grid](
        x, weight, bias, y, T, C, K=weight.shape[1], BLOCK_T=BLOCK_T, BLOCK_C=BLOCK_C, num_warps=NUM_WARPS
    )
    return y
