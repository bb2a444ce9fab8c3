"""
Train a causal language model without self-attention for a fixed wall-clock budget, then hand
it to prepare's evaluator (the same val_bpb, data and causality probes as the `gpt` experiment,
so a morning can compare the two architectures at equal budget).

This is the MUTABLE file of the `conv-lm` experiment, in the style of ConvGPT-v2, simplified.
Each block mixes tokens with three causal branches and no attention:

  1. local:  a causal depthwise 1D convolution over the sequence (CONV_KERNEL taps back). On
             CUDA it is a Triton kernel (forward and input gradient); elsewhere, and in the
             handed-off model, the same sum of shifted copies in plain PyTorch.
  2. grid:   the sequence folded into a grid of GRID_WIDTH columns (position t = row * width +
             column), convolved with a causal 2D depthwise kernel: GRID_ROWS rows up to and
             including the current one, GRID_COLS columns centred on the current column, of which
             the current row keeps only the columns up to the current one. A tap one row up is
             GRID_WIDTH tokens back, so a few taps reach far.
  3. memory: a sparse retrieval memory over chunk tokens. The sequence is cut into chunks of
             CHUNK_SIZE; each chunk is summarised by one token (the mean of its keys and values).
             Each position scores the chunks that ended before its own chunk started, keeps the
             MEMORY_TOPK best, and reads a softmax-weighted sum of their values (a null slot of
             score 0 and value 0 lets it read nothing, which is all the first chunk can do).

Then a ReLU^2 MLP, as in the gpt file. Everything is causal by construction; the evaluator's
probes check it on every evaluation.

Run:  python train.py            (from this folder; the harness sets AUTORESEARCH_* variables)
Without a CUDA GPU a tiny CPU configuration is selected automatically (smoke runs in CI).
"""

# ruff: noqa: E402  (the clock starts before the heavy imports, on purpose)
import time

T0 = time.time()  # total_seconds counts from here: start-up is part of what a run costs

import gc
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import DEVICE, MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, hand_off, make_dataloader

# ---------------------------------------------------------------------------------------------
# Hyperparameters (edit these directly)
# ---------------------------------------------------------------------------------------------

USE_CUDA = DEVICE == "cuda" and torch.cuda.is_available()  # the CPU profile (or no GPU) -> tiny config

DEPTH = 8  # number of blocks
WIDTH = 512  # model width (channels of the residual stream)
MLP_RATIO = 4  # hidden channels of the MLP = MLP_RATIO * WIDTH
CONV_KERNEL = 4  # taps of the causal depthwise 1D convolution (the current token included)
GRID_WIDTH = 64  # columns of the grid the sequence is folded into (2048 tokens = 32 rows of 64)
GRID_ROWS = 3  # rows of the causal 2D kernel (the current row included)
GRID_COLS = 3  # columns of the causal 2D kernel, centred on the current column
CHUNK_SIZE = 64  # tokens per memory chunk (one chunk token each)
MEMORY_TOPK = 4  # chunks each position reads from
MEMORY_DIM = 64  # channels of the memory's queries and keys
LOGIT_SOFTCAP = 15.0  # logits = cap * tanh(logits / cap)
TOTAL_BATCH_SIZE = 2**18  # tokens per optimizer step, reached by gradient accumulation
DEVICE_BATCH_SIZE = 32  # sequences per forward/backward pass
EVAL_BATCH_SIZE = 32  # sequences per forward pass of the evaluation (prepare caps it for small profiles)

LEARNING_RATE = 0.003  # AdamW peak lr of the matrices and convolution taps
EMBEDDING_LR = 0.03  # AdamW lr of the token embedding and lm_head
ADAM_BETAS = (0.9, 0.95)
WEIGHT_DECAY = 0.1  # decoupled weight decay of the 2-D matrices only
WARMUP_RATIO = 0.0  # share of the budget spent warming the lr up from 0
WARMDOWN_RATIO = 0.4  # share of the budget at the end spent decaying the lr to 0

USE_TRITON = True  # the Triton kernel for the 1D convolution on CUDA (the PyTorch path elsewhere)
COMPILE = USE_CUDA  # torch.compile the MLPs and the head (the Triton kernel runs outside the graphs)
UNTIMED_STEPS = 3 if USE_CUDA else 1  # first steps run untimed: they absorb compilation and warm-up
SEED = 1337

if not USE_CUDA:  # tiny CPU configuration: a smoke run that finishes in seconds on two cores.
    # Scaled down from the values above, not replacing them, so an edit still changes what a
    # CPU run trains.
    DEPTH = max(1, DEPTH // 4)  # 8 -> 2
    WIDTH = max(8, WIDTH // 8)  # 512 -> 64
    GRID_WIDTH = max(1, GRID_WIDTH // 4)  # 64 -> 16 (256 tokens = 16 rows of 16)
    CHUNK_SIZE = max(1, CHUNK_SIZE // 2)  # 64 -> 32
    MEMORY_DIM = max(4, MEMORY_DIM // 4)  # 64 -> 16
    DEVICE_BATCH_SIZE = max(1, DEVICE_BATCH_SIZE // 4)  # 32 -> 8
    TOTAL_BATCH_SIZE = DEVICE_BATCH_SIZE * MAX_SEQ_LEN  # one micro-batch per step
    EVAL_BATCH_SIZE = max(1, EVAL_BATCH_SIZE // 2)  # 32 -> 16

# ---------------------------------------------------------------------------------------------
# The causal depthwise convolution: y[b, t, c] = bias[c] + sum_k w[c, k] * x[b, t - (K-1) + k, c]
# ---------------------------------------------------------------------------------------------

triton = None
if torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":  # GPU, or the CPU interpreter (tests)
    try:
        import triton
        import triton.language as tl
    except ImportError:  # no Triton: the PyTorch path runs
        triton = None

if triton is not None:

    @triton.jit
    def _causal_conv_kernel(
        x_ptr, w_ptr, b_ptr, y_ptr, T, C,
        K: tl.constexpr, REVERSE: tl.constexpr, HAS_BIAS: tl.constexpr,
        BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr,
    ):  # fmt: skip
        """One (BLOCK_T, BLOCK_C) tile of one sequence; x, y are (B, T, C) contiguous, w is (C, K).

        REVERSE runs the transposed (anti-causal) convolution: the gradient of the input.
        """
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
            if REVERSE:
                src = t + (K - 1 - k)
            else:
                src = t - (K - 1 - k)
            ok = ((src >= 0) & (src < T))[:, None] & c_ok[None, :]
            xv = tl.load(x_ptr + base + src[:, None] * C + c[None, :], mask=ok, other=0.0)
            wv = tl.load(w_ptr + c * K + k, mask=c_ok, other=0.0)
            acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
        out = (t < T)[:, None] & c_ok[None, :]
        tl.store(y_ptr + base + t[:, None] * C + c[None, :], acc.to(y_ptr.dtype.element_ty), mask=out)


CONV_BLOCK_T = 64  # tile of the Triton kernel: tokens ...
CONV_BLOCK_C = 64  # ... by channels


def _launch_causal_conv(x, w, b, reverse):
    B, T, C = x.shape
    y = torch.empty_like(x)
    grid = (B * triton.cdiv(T, CONV_BLOCK_T), triton.cdiv(C, CONV_BLOCK_C))
    _causal_conv_kernel[grid](
        x, w, b if b is not None else w, y, T, C,
        K=w.shape[1], REVERSE=reverse, HAS_BIAS=b is not None, BLOCK_T=CONV_BLOCK_T, BLOCK_C=CONV_BLOCK_C,
    )  # fmt: skip
    return y


class CausalConvTriton(torch.autograd.Function):
    """Triton forward and input gradient; the tap and bias gradients are K reductions in PyTorch."""

    @staticmethod
    def forward(ctx, x, w, b):
        x, w = x.contiguous(), w.contiguous()
        ctx.save_for_backward(x, w)
        return _launch_causal_conv(x, w, b.contiguous(), reverse=False)

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        dy = dy.contiguous()
        dx = _launch_causal_conv(dy, w, None, reverse=True)
        K, T = w.shape[1], x.shape[1]
        xp = F.pad(x, (0, 0, K - 1, 0)).float()
        dyf = dy.float()
        dw = torch.stack([(dyf * xp[:, k : k + T]).sum((0, 1)) for k in range(K)], dim=1)
        return dx, dw.to(w.dtype), dyf.sum((0, 1)).to(w.dtype)


def causal_conv1d_torch(x, w, b):
    """The same convolution as K shifted copies: exact elementwise work, exportable, any device."""
    K, T = w.shape[1], x.shape[1]
    xp = F.pad(x, (0, 0, K - 1, 0))
    y = b + xp[:, 0:T] * w[:, 0]
    for k in range(1, K):
        y = y + xp[:, k : k + T] * w[:, k]
    return y.to(x.dtype)


def causal_conv1d(x, w, b, use_triton):
    if use_triton:
        return CausalConvTriton.apply(x, w, b)
    return causal_conv1d_torch(x, w, b)


# ---------------------------------------------------------------------------------------------
# The causal 2D convolution over the folded sequence
# ---------------------------------------------------------------------------------------------


def grid_taps(rows, cols):
    """(row offset back, column offset) of every tap of the causal 2D kernel."""
    left = cols // 2
    taps = [(r, dc) for r in range(rows - 1, 0, -1) for dc in range(-left, cols - left)]
    return taps + [(0, dc) for dc in range(-left, 1)]  # the current row: only columns up to this one


def causal_grid_conv(x, w, width, taps):
    """x (B, T, C) folded into rows of `width` tokens; w (C, len(taps)). Zero outside the grid:
    a tap left of column 0 reads nothing (not the end of the row above), so no tap reaches ahead."""
    B, T, C = x.shape
    rows = -(-T // width)
    grid = F.pad(x, (0, 0, 0, rows * width - T)).view(B, rows, width, C)
    up = max(r for r, _ in taps)
    left = max(0, -min(dc for _, dc in taps))
    right = max(0, max(dc for _, dc in taps))
    padded = F.pad(grid, (0, 0, left, right, up, 0))
    y = None
    for i, (r, dc) in enumerate(taps):
        term = padded[:, up - r : up - r + rows, left + dc : left + dc + width] * w[:, i]
        y = term if y is None else y + term
    return y.reshape(B, rows * width, C)[:, :T].to(x.dtype)


# ---------------------------------------------------------------------------------------------
# The sparse chunk-token retrieval memory
# ---------------------------------------------------------------------------------------------


class ChunkMemory(nn.Module):
    def __init__(self, dim, mem_dim, chunk, topk):
        super().__init__()
        self.chunk, self.topk, self.mem_dim = chunk, topk, mem_dim
        self.c_q = nn.Linear(dim, mem_dim, bias=False)
        self.c_k = nn.Linear(dim, mem_dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        B, T, D = x.shape
        n = -(-T // self.chunk)
        pad = n * self.chunk - T  # the last chunk's padding is never read: no position sees its own chunk
        keys = F.pad(self.c_k(x), (0, 0, 0, pad)).view(B, n, self.chunk, -1).mean(2)
        values = F.pad(self.c_v(x), (0, 0, 0, pad)).view(B, n, self.chunk, D).mean(2)
        scores = (self.c_q(x) @ keys.transpose(1, 2)).float() / math.sqrt(self.mem_dim)  # (B, T, n)
        position = torch.arange(T, device=x.device)
        chunk = torch.arange(n, device=x.device)
        ahead = chunk[None, :] >= (position // self.chunk)[:, None]  # chunks not yet complete at t
        scores = scores.masked_fill(ahead, float("-inf"))
        top, index = scores.topk(min(self.topk, n), dim=-1)
        null = torch.zeros_like(top[..., :1])
        weights = torch.softmax(torch.cat([null, top], dim=-1), dim=-1)[..., 1:]  # -inf -> weight 0
        dense = torch.zeros_like(scores).scatter(-1, index, weights)  # (B, T, n), at most topk nonzero
        return (dense.to(values.dtype) @ values).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def norm(x):
    return F.rms_norm(x, (x.size(-1),)).to(x.dtype)


class Mixer(nn.Module):
    """The attention replacement: local conv + grid conv + memory, gated, projected back."""

    def __init__(self, dim):
        super().__init__()
        self.taps = grid_taps(GRID_ROWS, GRID_COLS)
        self.c_in = nn.Linear(dim, 3 * dim, bias=False)  # local input, grid input, gate
        self.conv_w = nn.Parameter(torch.empty(dim, CONV_KERNEL))
        self.conv_b = nn.Parameter(torch.empty(dim))
        self.grid_w = nn.Parameter(torch.empty(dim, len(self.taps)))
        self.memory = ChunkMemory(dim, MEMORY_DIM, CHUNK_SIZE, MEMORY_TOPK)
        self.c_proj = nn.Linear(dim, dim, bias=False)
        self.use_triton = False

    def forward(self, x):
        local, grid, gate = self.c_in(x).chunk(3, dim=-1)
        local = causal_conv1d(local, self.conv_w, self.conv_b, self.use_triton)
        grid = causal_grid_conv(grid, self.grid_w, GRID_WIDTH, self.taps)
        mixed = F.silu(local) + grid + self.memory(x)
        return self.c_proj(mixed * torch.sigmoid(gate))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, MLP_RATIO * dim, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.mixer = Mixer(dim)
        self.mlp = MLP(dim)

    def forward(self, x):
        x = x + self.mixer(norm(x))
        return x + self.mlp(norm(x))


def head_logits(x, weight):
    logits = F.linear(norm(x), weight).float()
    return LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)


def head_loss(x, weight, targets):
    logits = head_logits(x, weight)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class ConvLM(nn.Module):
    def __init__(self, vocab_size, depth, dim):
        super().__init__()
        self.dim = dim
        self.wte = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList([Block(dim) for _ in range(depth)])
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        self.head_loss = head_loss  # compile_regions() swaps in a compiled version

    @torch.no_grad()
    def init_weights(self):
        s = 3**0.5 * self.dim**-0.5  # uniform bound with std 1/sqrt(dim)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            m = block.mixer
            for lin in (m.c_in, m.memory.c_q, m.memory.c_k, m.memory.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -s, s)
            nn.init.zeros_(m.c_proj.weight)  # every block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)
            nn.init.normal_(m.conv_w, std=CONV_KERNEL**-0.5)
            nn.init.zeros_(m.conv_b)
            nn.init.normal_(m.grid_w, std=len(m.taps) ** -0.5)

    def set_triton(self, on):
        for block in self.blocks:
            block.mixer.use_triton = on

    def forward(self, idx, targets=None):
        dtype = torch.bfloat16 if idx.is_cuda else torch.float32  # bf16 residual stream on the GPU
        x = norm(self.wte(idx).to(dtype))
        for block in self.blocks:
            x = block(x)
        if targets is None:
            return head_logits(x, self.lm_head.weight)  # what the evaluator consumes
        return self.head_loss(x, self.lm_head.weight, targets)

    def compile_regions(self):
        for block in self.blocks:
            block.mlp.compile(dynamic=False)
        self.head_loss = torch.compile(head_loss, dynamic=False)


# ---------------------------------------------------------------------------------------------
# Optimizer and schedule (progress = training seconds / budget, in 0..1)
# ---------------------------------------------------------------------------------------------


def build_optimizer(model):
    taps = ("conv_w", "conv_b", "grid_w")  # convolution taps and biases: no weight decay
    named = list(model.blocks.named_parameters())
    matrices = [p for n, p in named if not n.endswith(taps)]
    rest = [p for n, p in named if n.endswith(taps)]
    groups = [
        dict(params=matrices, lr=LEARNING_RATE, weight_decay=WEIGHT_DECAY),
        dict(params=rest, lr=LEARNING_RATE, weight_decay=0.0),
        dict(params=[model.wte.weight, model.lm_head.weight], lr=EMBEDDING_LR, weight_decay=0.0),
    ]
    groups = [g for g in groups if g["params"]]
    covered = {id(p) for g in groups for p in g["params"]}
    assert covered == {id(p) for p in model.parameters()}, "every parameter needs an optimizer"
    opt = torch.optim.AdamW(groups, betas=ADAM_BETAS, eps=1e-8, fused=model.wte.weight.is_cuda)
    for g in opt.param_groups:
        g["initial_lr"] = g["lr"]
    return opt


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return (progress + 1e-8) / WARMUP_RATIO
    if progress <= 1.0 - WARMDOWN_RATIO:
        return 1.0
    return max(0.0, (1.0 - progress) / WARMDOWN_RATIO)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def main():
    torch.manual_seed(SEED)
    device = torch.device("cuda" if USE_CUDA else "cpu")
    if USE_CUDA:
        torch.cuda.manual_seed(SEED)
        torch.backends.cuda.matmul.allow_tf32 = True
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=USE_CUDA)

    tokenizer = Tokenizer.load()
    with torch.device("meta"):
        model = ConvLM(tokenizer.vocab_size, DEPTH, WIDTH)
    model.to_empty(device=device)
    model.init_weights()
    triton_on = USE_TRITON and USE_CUDA and triton is not None
    model.set_triton(triton_on)
    optimizer = build_optimizer(model)
    num_params = sum(p.numel() for p in model.parameters())
    tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    assert TOTAL_BATCH_SIZE % tokens_per_fwdbwd == 0, "TOTAL_BATCH_SIZE must be a multiple of one micro-batch"
    grad_accum = TOTAL_BATCH_SIZE // tokens_per_fwdbwd
    name = torch.cuda.get_device_name(device) if USE_CUDA else "cpu"
    print(
        f"device: {name} | triton conv: {triton_on} | compile: {COMPILE} | params: {num_params / 1e6:.1f}M"
        f" | width: {WIDTH} | depth: {DEPTH} | grid: {GRID_WIDTH} wide, {len(grid_taps(GRID_ROWS, GRID_COLS))} taps"
        f" | memory: {CHUNK_SIZE}-token chunks, top {MEMORY_TOPK} | grad_accum: {grad_accum}"
        f" | budget: {TIME_BUDGET:.0f}s"
    )
    if COMPILE:
        model.compile_regions()

    loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
    x, y, epoch = next(loader)
    training_time = 0.0
    step = 0
    while True:
        progress = min(training_time / TIME_BUDGET, 1.0)
        if USE_CUDA:
            torch.cuda.synchronize()
        t_step = time.time()
        for _ in range(grad_accum):
            with autocast:
                loss = model(x, y)
            train_loss = loss.detach()
            (loss / grad_accum).backward()
            x, y, epoch = next(loader)
        lrm = lr_multiplier(progress)
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * lrm
        optimizer.step()
        model.zero_grad(set_to_none=True)
        loss_f = train_loss.item()
        dt = time.time() - t_step

        if not math.isfinite(loss_f) or loss_f > 100:  # fast-fail: a diverged run wastes the budget
            print(f"step {step:05d} | loss: {loss_f}")
            print("FAIL")
            sys.exit(1)
        if step >= UNTIMED_STEPS:
            training_time += dt
        if step == 0:
            gc.collect()
            gc.freeze()
            gc.disable()
        pct = 100 * min(training_time / TIME_BUDGET, 1.0)
        remaining = max(0.0, TIME_BUDGET - training_time)
        print(
            f"step {step:05d} ({pct:.1f}%) | loss: {loss_f:.6f} | lrm: {lrm:.2f} | dt: {dt * 1000:.0f}ms"
            f" | tok/sec: {TOTAL_BATCH_SIZE / dt:,.0f} | epoch: {epoch} | remaining: {remaining:.0f}s"
        )
        step += 1
        if step > UNTIMED_STEPS and training_time >= TIME_BUDGET:
            break

    # Hand-off: the Triton kernel cannot be exported (the evaluator runs pure ATen operators only),
    # so the model switches to the PyTorch path, which computes the same convolution.
    model.set_triton(False)
    with autocast:
        hand_off(model, EVAL_BATCH_SIZE)
    timed_steps = step - UNTIMED_STEPS
    tok_per_sec = timed_steps * TOTAL_BATCH_SIZE / training_time if training_time > 0 else 0.0
    peak_mb = torch.cuda.max_memory_allocated() / 1024**2 if USE_CUDA else 0.0
    print("---")
    print(f"training_seconds: {training_time:.1f}")
    print(f"total_seconds:    {time.time() - T0:.1f}")
    print(f"peak_vram_mb:     {peak_mb:.1f}")
    print(f"total_tokens_M:   {step * TOTAL_BATCH_SIZE / 1e6:.3f}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}")
    print(f"tokens_per_sec:   {tok_per_sec:.0f}")


if __name__ == "__main__":
    main()
