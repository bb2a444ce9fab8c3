"""
Train a tiny transformer to add multi-digit numbers with a chain of thought, then hand it off.

This is the MUTABLE file of the `arith-cot` experiment (the math-llm task). The data is the
`arithmetic` dataset: one problem per document, the columns worked right to left,

    658+189=<think>8+9=17 5+8+1=14 6+1+1=8</think>847

with operands of 1..6 digits. The metric is prepare's, not this file's: `hand_off_decoder`
exports the model and prepare's `arith` evaluator decodes greedily, in a process of its own,
held-out problems drawn afresh every time (two thirds with 1..6-digit operands never in the
training split, one third with 7..8 digits, longer than anything here) and counts the exact
answers after `</think>`. Higher is better.

Run:  python train.py   (from this folder; without a CUDA GPU a tiny CPU configuration is used)
"""

# ruff: noqa: E402  (the clock starts before the heavy imports, on purpose)
import time

T0 = time.time()

import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import DEVICE, TIME_BUDGET, Tokenizer, hand_off_decoder, make_dataloader
from prepare.evaluate_arith import DECODE_LEN

# ---------------------------------------------------------------------------------------------
# Hyperparameters (edit these directly)
# ---------------------------------------------------------------------------------------------

USE_CUDA = DEVICE == "cuda" and torch.cuda.is_available()

SEQ_LEN = DECODE_LEN  # training rows as long as the evaluator's: problems packed BOS to BOS
DEPTH = 4  # transformer blocks
DIM = 256  # model width
N_HEADS = 4  # attention heads (DIM / N_HEADS channels each)
MLP_RATIO = 4  # hidden width of the MLP = MLP_RATIO * DIM
ROPE_BASE = 10_000.0  # rotary embedding base: relative positions, so a problem may start anywhere
BATCH_SIZE = 256  # rows per optimizer step
LR = 3e-3  # AdamW peak learning rate
WEIGHT_DECAY = 0.1  # AdamW decoupled weight decay (matrices only)
ADAM_BETAS = (0.9, 0.95)
WARMUP_RATIO = 0.02  # share of the budget warming the lr up from 0
WARMDOWN_RATIO = 0.4  # share of the budget at the end decaying the lr to 0
GRAD_CLIP = 1.0  # max global grad norm
EVAL_BATCH_SIZE = 256  # rows per call of the exported program when the evaluator decodes
SEED = 1337

if not USE_CUDA:  # a smoke run that finishes in seconds on two cores (scaled down, not replaced)
    DEPTH = max(1, DEPTH // 2)  # 4 -> 2
    DIM = max(16, DIM // 4)  # 256 -> 64
    BATCH_SIZE = max(1, BATCH_SIZE // 16)  # 256 -> 16
    EVAL_BATCH_SIZE = max(1, EVAL_BATCH_SIZE // 8)  # 256 -> 32

# ---------------------------------------------------------------------------------------------
# Model: a pre-norm causal transformer with rotary positions and a ReLU^2 MLP
# ---------------------------------------------------------------------------------------------


def rotary(seq_len, head_dim, base, device=None):
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv)
    return freqs.cos()[None, None], freqs.sin()[None, None]  # (1, 1, T, head_dim / 2)


def apply_rotary(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class Block(nn.Module):
    def __init__(self, dim, n_heads, mlp_ratio):
        super().__init__()
        self.n_heads = n_heads
        self.norm1 = nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm2 = nn.RMSNorm(dim)
        self.fc = nn.Linear(dim, mlp_ratio * dim, bias=False)
        self.out = nn.Linear(mlp_ratio * dim, dim, bias=False)

    def forward(self, x, cos, sin):
        b, t, c = x.shape
        q, k, v = (
            self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, c // self.n_heads).permute(2, 0, 3, 1, 4)
        )
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.relu(self.fc(self.norm2(x))).square())


class TinyTransformer(nn.Module):
    def __init__(self, vocab_size, seq_len, depth, dim, n_heads, mlp_ratio):
        super().__init__()
        self.wte = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList(Block(dim, n_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.RMSNorm(dim)
        self.head = nn.Linear(dim, vocab_size, bias=False)
        cos, sin = rotary(seq_len, dim // n_heads, ROPE_BASE)
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * depth) if name.endswith(("proj.weight", "out.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx):
        t = idx.shape[1]
        cos, sin = self.cos[:, :, :t], self.sin[:, :, :t]
        x = self.wte(idx)
        for block in self.blocks:
            x = block(x, cos, sin)
        return self.head(self.norm(x)).float()


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress > 1 - WARMDOWN_RATIO:
        return max(0.0, (1 - progress) / WARMDOWN_RATIO)
    return 1.0


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


def main():
    torch.manual_seed(SEED)
    device = torch.device("cuda" if USE_CUDA else "cpu")
    if USE_CUDA:
        torch.backends.cuda.matmul.allow_tf32 = True
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=USE_CUDA)
    tokenizer = Tokenizer.load()
    model = TinyTransformer(tokenizer.vocab_size, SEQ_LEN, DEPTH, DIM, N_HEADS, MLP_RATIO).to(device)
    decay = [p for p in model.parameters() if p.dim() == 2]
    other = [p for p in model.parameters() if p.dim() != 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": other, "weight_decay": 0.0}],
        lr=LR, betas=ADAM_BETAS, fused=USE_CUDA,
    )  # fmt: skip
    num_params = sum(p.numel() for p in model.parameters())
    print(
        f"device: {device} | params: {num_params / 1e6:.2f}M | depth: {DEPTH} | width: {DIM} | budget: {TIME_BUDGET:.0f}s"
    )

    loader = make_dataloader(tokenizer, BATCH_SIZE, SEQ_LEN, "train")
    training_time, step = 0.0, 0
    while training_time < TIME_BUDGET:
        t_step = time.time()
        progress = min(training_time / TIME_BUDGET, 1.0)
        for group in optimizer.param_groups:
            group["lr"] = LR * lr_multiplier(progress)
        x, y, epoch = next(loader)
        with autocast:
            logits = model(x)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        loss_f = loss.item()
        if not math.isfinite(loss_f) or loss_f > 100:
            print(f"step {step:05d} | loss: {loss_f}")
            print("FAIL")
            sys.exit(1)
        dt = time.time() - t_step
        training_time += dt
        step += 1
        if step % 10 == 0 or training_time >= TIME_BUDGET:
            pct = 100 * min(training_time / TIME_BUDGET, 1.0)
            print(
                f"step {step:05d} ({pct:.1f}%) | loss: {loss_f:.6f} | lr: {LR * lr_multiplier(progress):.2e}"
                f" | dt: {dt * 1000:.0f}ms | epoch: {epoch} | remaining: {max(0.0, TIME_BUDGET - training_time):.0f}s"
            )

    # hand-off: prepare exports the model; the evaluator decodes held-out problems greedily
    with autocast:
        hand_off_decoder(model, EVAL_BATCH_SIZE)
    print("---")
    print(f"training_seconds: {training_time:.1f}")
    print(f"total_seconds:    {time.time() - T0:.1f}")
    print(f"peak_vram_mb:     {torch.cuda.max_memory_allocated() / 1024**2 if USE_CUDA else 0.0:.1f}")
    print(f"total_tokens_M:   {step * BATCH_SIZE * SEQ_LEN / 1e6:.3f}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {num_params / 1e6:.2f}")
    print(f"depth:            {DEPTH}")


if __name__ == "__main__":
    main()
