"""
Train a small GPT for a fixed wall-clock budget, then hand it to prepare's evaluator.

This is the MUTABLE file of the `gpt` experiment: the research agent edits it to make the
model better within the budget. Everything is in one flat script on purpose (hyperparameters
at the top, then model, optimizer, training loop) so that a person and an LLM can read it top
to bottom and change it safely. The immutable parts live in `prepare` (data, tokenizer, the
hand-off and the evaluator) and `constants.py` (budget, sequence length, eval size).

Run:  python train.py            (from this folder; the harness sets AUTORESEARCH_* variables)
Without a CUDA GPU a tiny CPU configuration is selected automatically (smoke runs in CI).
The run ends with `hand_off(model, ...)`: prepare exports the model and val_bpb is computed in
a separate process (by the harness, or right away when run by hand). The summary block that
follows ("---" then "key: value" lines) reports the training; it never carries val_bpb.
"""

# ruff: noqa: E402  (the clock starts before the heavy imports, on purpose)
import time

T0 = time.time()  # total_seconds counts from here: start-up is part of what a run costs

import gc
import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import DEVICE, MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, hand_off, make_dataloader
from prepare.kernels import linear_softcap_cross_entropy, relu2_mlp

# ---------------------------------------------------------------------------------------------
# Hyperparameters (edit these directly)
# ---------------------------------------------------------------------------------------------

USE_CUDA = DEVICE == "cuda" and torch.cuda.is_available()  # the CPU profile (or no GPU) -> tiny config

DEPTH = 8  # number of transformer blocks
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM (512)
HEAD_DIM = 128  # channels per attention head (512 / 128 = 4 heads)
WINDOW_PATTERN = "SSSL"  # per-layer attention window, repeated over depth: S short, L full context
SHORT_WINDOW = MAX_SEQ_LEN // 2  # tokens an "S" layer can see (itself included)
ROPE_BASE = 10_000.0  # rotary embedding base frequency
LOGIT_SOFTCAP = 15.0  # logits = cap * tanh(logits / cap): keeps early training from blowing up
VE_GATE_CHANNELS = 32  # input channels the value-embedding gate looks at
TOTAL_BATCH_SIZE = 2**19  # tokens per optimizer step (524,288), reached by gradient accumulation
DEVICE_BATCH_SIZE = 64  # sequences per forward/backward pass (128 is ~1% faster but needs ~47 GB)
EVAL_BATCH_SIZE = 64  # sequences per forward pass of the evaluation (prepare caps it for small profiles)

EMBEDDING_LR = 0.6  # AdamW lr of the token and value embeddings (before width scaling)
UNEMBEDDING_LR = 0.004  # AdamW lr of lm_head (before width scaling)
MATRIX_LR = 0.04  # Muon lr of every 2-D matrix inside the blocks
SCALAR_LR = 0.5  # AdamW lr of the per-layer x0 scalars (residual scalars get 1% of it)
ADAM_BETAS = (0.8, 0.95)  # AdamW betas: short memory, fast reaction in a 5-minute run
ADAM_EPS = 1e-10  # AdamW epsilon
WEIGHT_DECAY = 0.2  # decoupled weight decay of the Muon matrices, decays linearly to 0 with progress
MUON_MOMENTUM = (0.85, 0.95)  # Muon momentum warms up from the first to the second value ...
MUON_MOMENTUM_WARMUP = 0.3  # ... over this share of the budget
NS_STEPS = 5  # Newton-Schulz iterations of Muon's orthogonalisation
WARMUP_RATIO = 0.0  # share of the budget spent warming the lr up from 0
WARMDOWN_RATIO = 0.5  # share of the budget at the end spent decaying the lr ...
FINAL_LR_FRAC = 0.0  # ... down to this fraction of its peak

ATTENTION = "auto"  # "flex" (FlexAttention block masks), "sdpa", or "auto" (flex on CUDA sm80+, else sdpa)
FUSED_KERNELS = True  # Triton kernels of prepare.kernels for the MLP (ReLU^2 in the matmuls) and the loss
#   (lm_head + soft-cap + cross-entropy without the full logits): the same math as the plain lines
#   next to them, on CUDA only, never in the exported model. To change the MLP's activation or the
#   loss, edit the plain line and set this False (the fused kernels compute only ReLU^2 and soft-capped CE).
COMPILE = "blocks" if USE_CUDA else ""  # torch.compile: "blocks" (each distinct block once, plus the
#   head: small graphs), "model" (one graph: ~1% faster on the H100, as slow to compile), "" (eager)
UNTIMED_STEPS = 3 if USE_CUDA else 1  # first steps run untimed: they absorb compilation and warm-up
SEED = 1337  # torch seed for the initialisation

if not USE_CUDA:  # tiny CPU configuration: a smoke run that finishes in seconds on two cores.
    # Scaled down from the values above, not replacing them, so that an edit to DEPTH, the
    # width, the batch or the lr still changes what a CPU run trains.
    DEPTH = max(1, DEPTH // 4)  # 8 -> 2
    ASPECT_RATIO = max(1, ASPECT_RATIO // 2)  # 64 -> 32
    HEAD_DIM = max(8, HEAD_DIM // 4)  # 128 -> 32
    WINDOW_PATTERN = "SL"
    SHORT_WINDOW = max(1, MAX_SEQ_LEN // 4)
    DEVICE_BATCH_SIZE = max(1, DEVICE_BATCH_SIZE // 8)  # 64 -> 8
    TOTAL_BATCH_SIZE = 2 * DEVICE_BATCH_SIZE * MAX_SEQ_LEN  # two micro-batches per step
    EVAL_BATCH_SIZE = max(1, EVAL_BATCH_SIZE // 4)  # 64 -> 16
    MATRIX_LR = MATRIX_LR / 2  # 0.04 -> 0.02

# peak dense bf16 tensor-core FLOP/s of known GPUs (datasheets, no sparsity). An unknown GPU
# gets 0 and MFU is reported as 0: a wrong guess would be worse than no number.
GPU_PEAK_FLOPS = {
    "H100 80GB HBM3": 989.4e12,  # H100 SXM
    "H100 SXM": 989.4e12,
    "H100 NVL": 835.5e12,
    "H100 PCIe": 756.0e12,
    "GH200": 989.4e12,
    "H200": 989.4e12,
    "B200": 2250e12,
    "A100": 312.0e12,
    "L40S": 362.1e12,
    "L4": 121.0e12,
    "RTX 4090": 165.2e12,
}


def gpu_peak_flops(name: str) -> float:
    # longest key first, so "H100 NVL" is not taken for a plain "H100" entry
    for key in sorted(GPU_PEAK_FLOPS, key=len, reverse=True):
        if key in name:
            return GPU_PEAK_FLOPS[key]
    return 0.0


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def norm(x):
    # RMSNorm without learnable weights: the per-layer scalars below do the scaling
    # (cast back: autocast may run the norm in float32, and attention needs q, k, v in one dtype)
    return F.rms_norm(x, (x.size(-1),)).to(x.dtype)


def window_sizes(depth, pattern, short, seq_len):
    """The attention window of each layer; the last layer always sees the full context."""
    sizes = [short if pattern[i % len(pattern)] == "S" else seq_len for i in range(depth)]
    sizes[-1] = seq_len
    return sizes


def has_value_embedding(layer, depth):
    # alternating layers, always including the last one
    return layer % 2 == (depth - 1) % 2


def rotary_cos_sin(seq_len, head_dim, base, device):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32, device=device), inv_freq)
    # shape (1, T, 1, D/2): broadcasts over batch and heads of (B, T, H, D/2)
    return angles.cos()[None, :, None, :], angles.sin()[None, :, None, :]


def apply_rotary(x, cos, sin):
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos + x2 * sin, x2 * cos - x1 * sin), dim=-1)


def resolve_attention_backend(name, device):
    if name != "auto":
        return name
    if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8:
        return "flex"
    return "sdpa"


_masks = {}  # (backend, T, window) -> BlockMask (flex) or boolean band mask (sdpa); built before compiling
_flex_compiled = None  # FlexAttention compiled once for eager callers (eval); compiled graphs inline it


def band_mask(window):
    """FlexAttention mask_mod: causal, and at most `window` keys back (the query itself included)."""

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx >= kv_idx) & (q_idx - kv_idx < window)

    return mask_mod


def build_attention_masks(backend, seq_len, windows, device):
    """Build the attention masks eagerly, so compiled graphs only look them up."""
    global _flex_compiled
    from torch.nn.attention.flex_attention import create_block_mask
    from torch.nn.attention.flex_attention import flex_attention as flex

    for window in sorted(set(windows)):
        key = (backend, seq_len, window)
        if key in _masks:
            continue
        if backend == "flex":
            _masks[key] = create_block_mask(band_mask(window), None, None, seq_len, seq_len, device=device)
        elif window < seq_len:
            i = torch.arange(seq_len, device=device)
            _masks[key] = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
    if backend == "flex" and _flex_compiled is None:
        # without compilation FlexAttention runs a slow reference implementation
        _flex_compiled = torch.compile(flex, dynamic=False) if device.type == "cuda" else flex


def flex_attention(q, k, v, window):
    """Causal attention over (B, H, T, D) where each query sees the last `window` keys (itself included).

    FlexAttention skips the key blocks outside the window entirely (block-sparse), so a short
    window costs proportionally less.
    """
    from torch.nn.attention.flex_attention import flex_attention as flex

    T = q.size(-2)
    if ("flex", T, window) not in _masks:  # a new length (only reachable outside compiled graphs)
        build_attention_masks("flex", T, [window], q.device)
    attend = flex if torch.compiler.is_compiling() else _flex_compiled
    return attend(q, k, v, block_mask=_masks[("flex", T, window)])


def sdpa_attention(q, k, v, window):
    """The portable fallback: PyTorch's SDPA, with an explicit band mask for short windows."""
    T = q.size(-2)
    if window >= T:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if ("sdpa", T, window) not in _masks:
        build_attention_masks("sdpa", T, [window], q.device)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_masks[("sdpa", T, window)])


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, n_head, head_dim, layer, depth):
        super().__init__()
        self.n_head, self.head_dim = n_head, head_dim
        self.c_q = nn.Linear(dim, n_head * head_dim, bias=False)
        self.c_k = nn.Linear(dim, n_head * head_dim, bias=False)
        self.c_v = nn.Linear(dim, n_head * head_dim, bias=False)
        self.c_proj = nn.Linear(n_head * head_dim, dim, bias=False)
        # gate (per head, in 0..2) deciding how much of the value embedding enters v
        self.ve_gate = (
            nn.Linear(VE_GATE_CHANNELS, n_head, bias=False) if has_value_embedding(layer, depth) else None
        )

    def forward(self, x, ve, cos, sin, window, backend):
        B, T, _ = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        if ve is not None:
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        q, k = norm(q), norm(k)  # QK-norm: bounded attention logits, stable with high lrs
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        attend = flex_attention if backend == "flex" else sdpa_attention
        y = attend(q, k, v, window)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, 4 * dim, bias=False)
        self.c_proj = nn.Linear(4 * dim, dim, bias=False)

    def forward(self, x):
        if FUSED_KERNELS:  # exactly the line below, the activation fused into the matmuls
            return relu2_mlp(x, self.c_fc.weight, self.c_proj.weight)
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2


class Block(nn.Module):
    def __init__(self, dim, n_head, head_dim, layer, depth):
        super().__init__()
        self.attn = CausalSelfAttention(dim, n_head, head_dim, layer, depth)
        self.mlp = MLP(dim)

    def forward(self, x, x0, resid_lambda, x0_lambda, ve, cos, sin, window, backend):
        x = resid_lambda * x + x0_lambda * x0
        x = x + self.attn(norm(x), ve, cos, sin, window, backend)
        return x + self.mlp(norm(x))


def head_logits(x, weight):
    """Final norm, lm_head and the soft-cap; float32 logits (what the evaluator consumes)."""
    logits = F.linear(norm(x), weight).float()
    return LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)


def head_loss(x, weight, targets):
    if FUSED_KERNELS:  # exactly the lines below, in slices of rows: the full logits are never written
        return linear_softcap_cross_entropy(norm(x), weight, targets, LOGIT_SOFTCAP, ignore_index=-1)
    logits = head_logits(x, weight)
    return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)


class GPT(nn.Module):
    def __init__(self, vocab_size, seq_len, depth, dim, head_dim, windows, backend="sdpa"):
        super().__init__()
        assert dim % head_dim == 0 and len(windows) == depth
        n_head = dim // head_dim
        self.depth, self.dim, self.vocab_size = depth, dim, vocab_size
        self.windows, self.backend = list(windows), backend
        self.wte = nn.Embedding(vocab_size, dim)
        self.blocks = nn.ModuleList([Block(dim, n_head, head_dim, i, depth) for i in range(depth)])
        self.value_embeds = nn.ModuleDict(
            {str(i): nn.Embedding(vocab_size, dim) for i in range(depth) if has_value_embedding(i, depth)}
        )
        self.lm_head = nn.Linear(dim, vocab_size, bias=False)
        # per layer: x = resid_lambdas[i] * x + x0_lambdas[i] * x0 (x0 = the normed input embedding)
        self.resid_lambdas = nn.Parameter(torch.ones(depth))
        self.x0_lambdas = nn.Parameter(torch.zeros(depth))
        self.head_loss = head_loss  # compile_regions() swaps in a compiled version
        cos, sin = rotary_cos_sin(seq_len, head_dim, ROPE_BASE, self.wte.weight.device)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    @torch.no_grad()
    def init_weights(self):
        s = 3**0.5 * self.dim**-0.5  # uniform bound with std 1/sqrt(dim)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -s, s)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -s, s)
            # zero-initialised output projections: every block starts as the identity
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)  # gate starts at 1.0 (2 * sigmoid(0))
        self.resid_lambdas.fill_(1.0)
        self.x0_lambdas.fill_(0.1)

    def hidden(self, idx):
        T = idx.size(1)
        cos, sin = self.rope_cos[:, :T], self.rope_sin[:, :T]
        dtype = torch.bfloat16 if idx.is_cuda else torch.float32  # bf16 residual stream on the GPU
        x = norm(self.wte(idx).to(dtype))
        x0 = x
        for i, block in enumerate(self.blocks):
            ve = self.value_embeds[str(i)](idx).to(dtype) if str(i) in self.value_embeds else None
            x = block(
                x, x0, self.resid_lambdas[i], self.x0_lambdas[i], ve, cos, sin, self.windows[i], self.backend
            )
        return x

    def forward(self, idx, targets=None):
        x = self.hidden(idx)
        if targets is None:
            return head_logits(x, self.lm_head.weight)  # what the evaluator consumes
        return self.head_loss(x, self.lm_head.weight, targets)

    def compile_regions(self):
        """Compile each block and the head separately: blocks that share a window and value-embedding
        layout reuse one compiled graph, so compilation is a fraction of a whole-model compile."""
        for block in self.blocks:
            block.compile(dynamic=False)
        self.head_loss = torch.compile(head_loss, dynamic=False)

    def num_flops_per_token(self):
        """Training FLOPs per token: 6 per matmul weight, plus attention scores over each window.

        Embedding lookups are not matmuls and are left out. Attention counts the full window
        (not halved for causality), the convention of the reference numbers we compare with.
        """
        n = sum(p.numel() for p in self.parameters())
        n -= self.wte.weight.numel() + sum(v.weight.numel() for v in self.value_embeds.values())
        n -= self.resid_lambdas.numel() + self.x0_lambdas.numel()
        T = self.rope_cos.size(1)
        attn = sum(12 * self.dim * min(w, T) for w in self.windows)
        return 6 * n + attn


# ---------------------------------------------------------------------------------------------
# Optimizer: Muon for the matrices inside the blocks, AdamW for everything else
# ---------------------------------------------------------------------------------------------

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz coefficients (Keller Jordan's Muon)


def orthogonalize(G, steps):
    """Approximately replace G (..., rows, cols) by the nearest semi-orthogonal matrix U V^T.

    Runs in bf16: the iteration only needs singular values pushed into roughly [0.7, 1.2].
    """
    a, b, c = NS_COEFFS
    X = G.bfloat16()
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT
    X = X / (X.norm(dim=(-2, -1), keepdim=True) + 1e-7)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = X @ X.mT
        B = b * A + c * A @ A
        X = a * X + B @ X
    return X.mT if tall else X


def muon_update(params, grads, momentum_buffer, momentum, lr, wd, steps: int):
    """One Muon step for a group of same-shaped matrices, stacked so it is a few batched kernels.

    momentum, lr and wd are 0-d tensors so that torch.compile does not recompile when they change.
    """
    g = torch.stack(grads)
    momentum_buffer.lerp_(g, 1 - momentum)
    g = g.lerp(momentum_buffer, momentum)  # Nesterov
    update = orthogonalize(g, steps)
    rows, cols = g.shape[-2:]
    scale = max(1.0, rows / cols) ** 0.5
    for i, p in enumerate(params):
        p.mul_(1 - lr * wd)  # decoupled weight decay
        p.sub_(update[i].to(p.dtype) * (lr * scale))


class Muon(torch.optim.Optimizer):
    """MomentUm Orthogonalized by Newton-Schulz, for 2-D weight matrices.

    Parameters are grouped by shape; each group is updated by one (compiled) muon_update call.
    """

    def __init__(self, params, lr, momentum, weight_decay, ns_steps, compile_step):
        params = list(params)
        shapes = sorted({tuple(p.shape) for p in params})
        groups = [{"params": [p for p in params if tuple(p.shape) == s]} for s in shapes]
        super().__init__(groups, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))
        self.ns_steps = ns_steps
        self.step_fn = (
            torch.compile(muon_update, dynamic=False, fullgraph=True) if compile_step else muon_update
        )
        device = params[0].device
        self._momentum = torch.zeros((), device=device)
        self._lr = torch.zeros((), device=device)
        self._wd = torch.zeros((), device=device)

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            state = self.state[params[0]]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros(
                    (len(params), *params[0].shape), device=params[0].device
                )
            self._momentum.fill_(group["momentum"])
            self._lr.fill_(group["lr"])
            self._wd.fill_(group["weight_decay"])
            self.step_fn(
                params,
                [p.grad for p in params],
                state["momentum_buffer"],
                self._momentum,
                self._lr,
                self._wd,
                self.ns_steps,
            )


def build_optimizers(model):
    """Muon for the block matrices, AdamW (per-group lrs scaled by width) for the rest."""
    lr_scale = (model.dim / 768) ** -0.5  # the lrs above were tuned at width 768
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    adam_groups = [
        dict(params=[model.wte.weight], lr=EMBEDDING_LR * lr_scale),
        dict(params=[v.weight for v in model.value_embeds.values()], lr=EMBEDDING_LR * lr_scale),
        dict(params=[model.lm_head.weight], lr=UNEMBEDDING_LR * lr_scale),
        dict(params=[model.resid_lambdas], lr=SCALAR_LR * 0.01),
        dict(params=[model.x0_lambdas], lr=SCALAR_LR),
    ]
    adam_groups = [g for g in adam_groups if g["params"]]
    covered = {id(p) for p in matrices} | {id(p) for g in adam_groups for p in g["params"]}
    assert covered == {id(p) for p in model.parameters()}, "every parameter needs an optimizer"
    on_cuda = model.wte.weight.is_cuda
    adamw = torch.optim.AdamW(adam_groups, betas=ADAM_BETAS, eps=ADAM_EPS, weight_decay=0.0, fused=on_cuda)
    muon = Muon(
        matrices, MATRIX_LR, MUON_MOMENTUM[1], WEIGHT_DECAY, NS_STEPS, compile_step=bool(COMPILE) and on_cuda
    )
    for opt in (adamw, muon):
        for g in opt.param_groups:
            g["initial_lr"] = g["lr"]
    return [adamw, muon]


# ---------------------------------------------------------------------------------------------
# Schedules: all driven by progress = training seconds / budget (in 0..1)
# ---------------------------------------------------------------------------------------------


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return (progress + 1e-8) / WARMUP_RATIO
    if progress <= 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = max(0.0, (1.0 - progress) / WARMDOWN_RATIO)
    return cooldown + (1.0 - cooldown) * FINAL_LR_FRAC


def muon_momentum(progress):
    frac = min(progress / MUON_MOMENTUM_WARMUP, 1.0) if MUON_MOMENTUM_WARMUP > 0 else 1.0
    return (1 - frac) * MUON_MOMENTUM[0] + frac * MUON_MOMENTUM[1]


def apply_schedules(optimizers, progress):
    lrm = lr_multiplier(progress)
    for opt in optimizers:
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] * lrm
    muon = optimizers[-1]
    for g in muon.param_groups:
        g["momentum"] = muon_momentum(progress)
        g["weight_decay"] = WEIGHT_DECAY * (1.0 - progress)
    return lrm


# ---------------------------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------------------------


def build_model(vocab_size, device):
    dim = math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
    windows = window_sizes(DEPTH, WINDOW_PATTERN, SHORT_WINDOW, MAX_SEQ_LEN)
    backend = resolve_attention_backend(ATTENTION, device)
    with torch.device("meta"):
        model = GPT(vocab_size, MAX_SEQ_LEN, DEPTH, dim, HEAD_DIM, windows, backend)
    model.to_empty(device=device)
    # buffers are not initialised by to_empty: recompute the rotary tables on the device
    model.rope_cos, model.rope_sin = rotary_cos_sin(MAX_SEQ_LEN, HEAD_DIM, ROPE_BASE, device)
    model.init_weights()
    build_attention_masks(backend, MAX_SEQ_LEN, windows, device)
    return model


def main():
    torch.manual_seed(SEED)
    device = torch.device("cuda" if USE_CUDA else "cpu")
    if USE_CUDA:
        torch.cuda.manual_seed(SEED)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=USE_CUDA)

    tokenizer = Tokenizer.load()
    model = build_model(tokenizer.vocab_size, device)
    optimizers = build_optimizers(model)
    num_params = sum(p.numel() for p in model.parameters())
    flops_per_token = model.num_flops_per_token()
    gpu_name = torch.cuda.get_device_name(device) if USE_CUDA else "cpu"
    peak_flops = gpu_peak_flops(gpu_name) if USE_CUDA else 0.0
    tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    assert TOTAL_BATCH_SIZE % tokens_per_fwdbwd == 0, "TOTAL_BATCH_SIZE must be a multiple of one micro-batch"
    grad_accum = TOTAL_BATCH_SIZE // tokens_per_fwdbwd
    print(
        f"device: {gpu_name} | attention: {model.backend} | compile: {COMPILE} | params: {num_params / 1e6:.1f}M"
        f" | fused kernels: {FUSED_KERNELS} | width: {model.dim} | depth: {DEPTH} | windows: {model.windows} | grad_accum: {grad_accum}"
        f" | budget: {TIME_BUDGET:.0f}s | peak_flops: {peak_flops / 1e12:.0f}T"
    )
    train_model = model
    if COMPILE == "model":
        train_model = torch.compile(model, dynamic=False)
    elif COMPILE == "blocks":
        model.compile_regions()

    loader = make_dataloader(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
    x, y, epoch = next(loader)

    # ---------------------------------------------------------------------------------------
    # Training loop: the budget counts only the steps after the untimed warm-up steps
    # ---------------------------------------------------------------------------------------
    training_time = 0.0
    step = 0
    while True:
        progress = min(training_time / TIME_BUDGET, 1.0)
        if USE_CUDA:
            torch.cuda.synchronize()
        t_step = time.time()
        for _ in range(grad_accum):
            with autocast:
                loss = train_model(x, y)
            train_loss = loss.detach()
            (loss / grad_accum).backward()
            x, y, epoch = next(loader)  # fetched while the GPU still works on the backward pass
        lrm = apply_schedules(optimizers, progress)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        loss_f = train_loss.item()  # waits for the whole step: the optimizer was queued before it
        dt = time.time() - t_step

        if not math.isfinite(loss_f) or loss_f > 100:  # fast-fail: a diverged run wastes the budget
            print(f"step {step:05d} | loss: {loss_f}")
            print("FAIL")
            sys.exit(1)
        if step >= UNTIMED_STEPS:
            training_time += dt
        if step == 0:
            # Python's cyclic GC walks the many objects torch.compile leaves behind and stalls
            # for hundreds of ms at random steps; nothing in the loop creates cycles, so freeze.
            gc.collect()
            gc.freeze()
            gc.disable()
        tok_per_sec = TOTAL_BATCH_SIZE / dt
        mfu = 100 * flops_per_token * tok_per_sec / peak_flops if peak_flops else 0.0
        pct = 100 * min(training_time / TIME_BUDGET, 1.0)
        remaining = max(0.0, TIME_BUDGET - training_time)
        print(
            f"step {step:05d} ({pct:.1f}%) | loss: {loss_f:.6f} | lrm: {lrm:.2f} | dt: {dt * 1000:.0f}ms"
            f" | tok/sec: {tok_per_sec:,.0f} | mfu: {mfu:.1f}% | epoch: {epoch} | remaining: {remaining:.0f}s"
        )
        step += 1
        if step > UNTIMED_STEPS and training_time >= TIME_BUDGET:
            break

    # ---------------------------------------------------------------------------------------
    # Hand-off: prepare exports the model; val_bpb is computed in a separate, clean process
    # ---------------------------------------------------------------------------------------
    model.backend = "sdpa"  # FlexAttention graphs do not export; SDPA with the same band masks computes the same
    build_attention_masks("sdpa", MAX_SEQ_LEN, model.windows, device)
    with autocast:  # the exported program computes in the dtypes the model trained in
        hand_off(model, EVAL_BATCH_SIZE)
    total_tokens = step * TOTAL_BATCH_SIZE
    timed_steps = step - UNTIMED_STEPS
    mean_tok_per_sec = timed_steps * TOTAL_BATCH_SIZE / training_time if training_time > 0 else 0.0
    mfu = 100 * flops_per_token * mean_tok_per_sec / peak_flops if peak_flops else 0.0
    peak_mb = torch.cuda.max_memory_allocated() / 1024**2 if USE_CUDA else 0.0
    print("---")
    print(f"training_seconds: {training_time:.1f}")
    print(f"total_seconds:    {time.time() - T0:.1f}")
    print(f"peak_vram_mb:     {peak_mb:.1f}")
    print(f"mfu_percent:      {mfu:.2f}")
    print(f"total_tokens_M:   {total_tokens / 1e6:.3f}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}")
    print(f"tokens_per_sec:   {mean_tok_per_sec:.0f}")


if __name__ == "__main__":
    main()
