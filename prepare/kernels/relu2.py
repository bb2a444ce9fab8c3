"""The ReLU^2 MLP with the activation in the matmuls' epilogues: y = relu(x W_fc^T)^2 W_proj^T.

Plain PyTorch writes h = x W_fc^T, reads it back to write u = relu(h)^2 and, in the backward,
reads grad_u and h to write grad_h. Here one Triton matmul writes h and u from the same
accumulator (forward), and another computes grad_u = grad_y W_proj and writes
grad_h = grad_u * 2 relu(h) straight from its accumulator (backward): the hidden activation,
four times the model's width, is read once less forward and written and read once less backward.
The other three matmuls (u W_proj^T, and the two weight gradients) stay cuBLAS.

The kernel is a tiled matmul (grouped tile order for L2 reuse, float32 accumulation) with the
epilogue chosen at compile time:
    EPILOGUE 1:  aux := acc (h, kept for the backward); out := relu(acc)^2
    EPILOGUE 2:  out := acc * 2 * relu(aux)   (aux = h)
"""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from prepare.kernels.runtime import interpreting

FORWARD, BACKWARD = 1, 2


@triton.jit
def _mm_relu2(
    a_ptr,
    b_ptr,
    out_ptr,
    aux_ptr,
    M,
    N,
    stride_am,
    stride_ak,
    stride_bk,
    stride_bn,
    stride_om,
    stride_on,
    K: tl.constexpr,
    EPILOGUE: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """out (M, N) from a (M, K) @ b (K, N); K is a compile-time constant (fixed trip count)."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    per_group = GROUP_M * tiles_n
    first_m = (pid // per_group) * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % group_rows
    pid_n = (pid % per_group) // group_rows
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    ks = tl.arange(0, BLOCK_K)
    a_tile = a_ptr + rows[:, None].to(tl.int64) * stride_am + ks[None, :] * stride_ak
    b_tile = b_ptr + ks[:, None] * stride_bk + cols[None, :].to(tl.int64) * stride_bn
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, K, BLOCK_K):
        a = tl.load(a_tile, mask=(rows[:, None] < M) & (k + ks[None, :] < K), other=0.0)
        b = tl.load(b_tile, mask=(k + ks[:, None] < K) & (cols[None, :] < N), other=0.0)
        acc = tl.dot(a, b, acc)
        a_tile += BLOCK_K * stride_ak
        b_tile += BLOCK_K * stride_bk
    offsets = rows[:, None].to(tl.int64) * stride_om + cols[None, :] * stride_on
    mask = (rows[:, None] < M) & (cols[None, :] < N)
    if EPILOGUE == 1:
        tl.store(aux_ptr + offsets, acc.to(aux_ptr.dtype.element_ty), mask=mask)
        r = tl.maximum(acc, 0.0)
        out = r * r
    else:
        h = tl.load(aux_ptr + offsets, mask=mask, other=0.0).to(tl.float32)
        out = acc * 2.0 * tl.maximum(h, 0.0)
    tl.store(out_ptr + offsets, out.to(out_ptr.dtype.element_ty), mask=mask)


# Hopper-sized tiles (K is 512 at the default width); the autotuner times them once per shape
# and process, and each compiles once into TRITON_CACHE_DIR: few configurations, short cold starts.
_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=3, num_warps=8),
    triton.Config({"BLOCK_M": 256, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=3, num_warps=8),
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=8),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=4),
]
_mm_relu2_tuned = triton.autotune(configs=_CONFIGS, key=["M", "N", "K", "EPILOGUE"])(_mm_relu2)


def mm_relu2(a: torch.Tensor, b: torch.Tensor, aux: torch.Tensor, epilogue: int) -> torch.Tensor:
    """a (M, K) @ b (K, N) with the ReLU^2 epilogue; `aux` (M, N) is written (FORWARD) or read."""
    M, K = a.shape
    N = b.size(1)
    out = torch.empty((M, N), dtype=a.dtype, device=a.device)
    args = (
        a,
        b,
        out,
        aux,
        M,
        N,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        out.stride(0),
        out.stride(1),
    )
    if interpreting():  # one small tile: the autotuner times configs with CUDA events
        tiles = (triton.cdiv(M, 32) * triton.cdiv(N, 32),)
        _mm_relu2[tiles](*args, K=K, EPILOGUE=epilogue, BLOCK_M=32, BLOCK_N=32, BLOCK_K=16, GROUP_M=4)
    else:

        def grid(meta: dict[str, Any]) -> tuple[int]:
            return (triton.cdiv(M, meta["BLOCK_M"]) * triton.cdiv(N, meta["BLOCK_N"]),)

        _mm_relu2_tuned[grid](*args, K=K, EPILOGUE=epilogue)
    return out


@torch.library.custom_op("autoresearch::relu2_mlp", mutates_args=())
def relu2_mlp_op(
    x: torch.Tensor, w_fc: torch.Tensor, w_proj: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, h, u) for x (rows, dim): h = x w_fc^T, u = relu(h)^2, y = u w_proj^T; all in x's dtype."""
    with torch.autocast(x.device.type, enabled=False):
        wf, wp = w_fc.to(x.dtype), w_proj.to(x.dtype)
        h = torch.empty((x.size(0), wf.size(0)), dtype=x.dtype, device=x.device)
        u = mm_relu2(x, wf.t(), h, FORWARD)
        return torch.mm(u, wp.t()), h, u


@relu2_mlp_op.register_fake
def _(x, w_fc, w_proj):
    hidden = x.new_empty((x.size(0), w_fc.size(0)))
    return x.new_empty((x.size(0), w_proj.size(0))), hidden, torch.empty_like(hidden)


@torch.library.custom_op("autoresearch::relu2_mlp_backward", mutates_args=())
def relu2_mlp_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    w_fc: torch.Tensor,
    w_proj: torch.Tensor,
    h: torch.Tensor,
    u: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(grad_x, grad_w_fc, grad_w_proj); the weight gradients in the weights' dtypes."""
    with torch.autocast(x.device.type, enabled=False):
        wf, wp = w_fc.to(x.dtype), w_proj.to(x.dtype)
        grad_y = grad_y.to(x.dtype)
        grad_h = mm_relu2(grad_y, wp, h, BACKWARD)  # (grad_y @ w_proj) * 2 relu(h)
        grad_wp = torch.mm(grad_y.t(), u).to(w_proj.dtype)
        grad_x = torch.mm(grad_h, wf)
        grad_wf = torch.mm(grad_h.t(), x).to(w_fc.dtype)
        return grad_x, grad_wf, grad_wp


@relu2_mlp_backward.register_fake
def _(grad_y, x, w_fc, w_proj, h, u):
    return torch.empty_like(x), torch.empty_like(w_fc), torch.empty_like(w_proj)


def _setup(ctx: Any, inputs: tuple[Any, ...], output: tuple[Any, ...]) -> None:
    x, w_fc, w_proj = inputs
    ctx.save_for_backward(x, w_fc, w_proj, output[1], output[2])


def _backward(ctx: Any, grad_y: Any, _grad_h: Any, _grad_u: Any) -> tuple[Any, ...]:
    x, w_fc, w_proj, h, u = ctx.saved_tensors
    return relu2_mlp_backward(grad_y.contiguous(), x, w_fc, w_proj, h, u)


relu2_mlp_op.register_autograd(_backward, setup_context=_setup)


def relu2_mlp(x: torch.Tensor, w_fc: torch.Tensor, w_proj: torch.Tensor) -> torch.Tensor:
    """The public entry (prepare.kernels.relu2_mlp): flattens the leading dimensions."""
    y, _, _ = relu2_mlp_op(x.reshape(-1, x.size(-1)).contiguous(), w_fc, w_proj)
    return y.view(*x.shape[:-1], w_proj.size(0))
