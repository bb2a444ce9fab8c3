"""
Train a small GPT on MLX for a fixed wall-clock budget, then hand it to prepare's evaluator.

This is the MUTABLE file of the `gpt-mlx` experiment, the MLX twin of experiments/gpt/train.py
for Apple silicon (Metal) and, through mlx[cpu], Linux CPUs. The same architecture (RoPE,
QK-norm, a per-layer sliding-window pattern, gated value embeddings on alternating layers,
ReLU^2 MLP, RMSNorm without weights, per-layer residual and x0 scalars, logit soft-cap,
zero-initialised projections, no biases) and the same optimizer (Muon for the block matrices,
AdamW for the rest, every schedule driven by progress = training seconds / budget). One flat
script on purpose: hyperparameters at the top, then model, optimizer, training loop.
The immutable parts live in `prepare` (data, tokenizer, the hand-off and the evaluator) and
`constants.py`.

Run:  python train.py            (from this folder; the harness sets AUTORESEARCH_* variables)
Without a GPU (mlx[cpu] on Linux) a tiny configuration is selected automatically (CI smoke runs).
The run ends with `hand_off(model, ...)`: prepare exports the model and val_bpb is computed in
a separate process (by the harness, or right away when run by hand). The summary block that
follows ("---" then "key: value" lines) reports the training; it never carries val_bpb.
"""

import time

T0 = time.time()  # total_seconds counts from here: start-up is part of what a run costs

import gc
import math
import sys
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, hand_off, make_dataloader_numpy

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

ON_GPU = mx.default_device().type == mx.gpu  # MLX runs on the GPU (Metal) whenever there is one

DEPTH = 4  # number of transformer blocks (Apple default: trains well in 5 minutes on an M-series GPU)
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM (256)
HEAD_DIM = 128  # channels per attention head (256 / 128 = 2 heads)
WINDOW_PATTERN = "SSSL"  # per-layer attention window, repeated over depth: S short, L full context
SHORT_WINDOW = MAX_SEQ_LEN // 2  # tokens an "S" layer can see (itself included)
ROPE_BASE = 10_000.0  # rotary embedding base frequency
LOGIT_SOFTCAP = 15.0  # logits = cap * tanh(logits / cap): keeps early training from blowing up
VE_GATE_CHANNELS = 32  # input channels the value-embedding gate looks at
TOTAL_BATCH_SIZE = 2**16  # tokens per optimizer step (65,536), reached by gradient accumulation
DEVICE_BATCH_SIZE = 16  # sequences per forward/backward pass
EVAL_BATCH_SIZE = 16  # sequences per forward pass of the evaluation (prepare caps it to bound memory)

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

COMPUTE_DTYPE = mx.bfloat16 if ON_GPU else mx.float32  # activations; weights stay float32 (master copy)
UNTIMED_STEPS = 2 if ON_GPU else 1  # first steps run untimed: they absorb mx.compile's tracing and warm-up
SEED = 1337  # seed of the initialisation

if not ON_GPU:  # tiny CPU configuration: a smoke run that finishes in seconds on two cores.
    # Scaled down from the values above, not replacing them, so that an edit to DEPTH, the
    # width, the batch or the lr still changes what a CPU run trains.
    DEPTH = max(1, DEPTH // 2)  # 4 -> 2
    ASPECT_RATIO = max(1, ASPECT_RATIO // 2)  # 64 -> 32
    HEAD_DIM = max(8, HEAD_DIM // 4)  # 128 -> 32
    WINDOW_PATTERN = "SL"
    SHORT_WINDOW = max(1, MAX_SEQ_LEN // 4)
    DEVICE_BATCH_SIZE = max(1, DEVICE_BATCH_SIZE // 2)  # 16 -> 8
    TOTAL_BATCH_SIZE = 2 * DEVICE_BATCH_SIZE * MAX_SEQ_LEN  # two micro-batches per step
    MATRIX_LR = MATRIX_LR / 2  # 0.04 -> 0.02


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    sequence_len: int
    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    windows: tuple


def norm(x):
    # RMSNorm without learnable weights: the per-layer scalars below do the scaling
    return mx.fast.rms_norm(x, None, 1e-5)


def window_sizes(depth, pattern, short, seq_len):
    """The attention window of each layer; the last layer always sees the full context."""
    assert pattern and set(pattern) <= set("SL"), f"WINDOW_PATTERN must use S and L only: {pattern!r}"
    sizes = [short if pattern[i % len(pattern)] == "S" else seq_len for i in range(depth)]
    sizes[-1] = seq_len
    return tuple(sizes)


def has_value_embedding(layer, depth):
    # alternating layers, always including the last one
    return layer % 2 == (depth - 1) % 2


def attention_mask(seq_len, window):
    """'causal' (MLX's fused causal path) when the window covers the sequence, else a boolean band."""
    if window >= seq_len:
        return "causal"
    i = mx.arange(seq_len)[:, None]
    j = mx.arange(seq_len)[None, :]
    return (j <= i) & (i - j < window)  # True = may attend


class Linear(nn.Module):
    """Bias-free linear layer: float32 master weight, cast to the activations' dtype for the matmul."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = mx.zeros((out_features, in_features))

    def __call__(self, x):
        return x @ self.weight.astype(x.dtype).T


class CausalSelfAttention(nn.Module):
    def __init__(self, dim, n_head, layer, depth):
        super().__init__()
        self.n_head, self.head_dim = n_head, dim // n_head
        self.c_q = Linear(dim, dim)
        self.c_k = Linear(dim, dim)
        self.c_v = Linear(dim, dim)
        self.c_proj = Linear(dim, dim)
        self.gate_channels = min(VE_GATE_CHANNELS, dim)
        if has_value_embedding(layer, depth):
            # gate (per head, in 0..2) deciding how much of the value embedding enters v
            self.ve_gate = Linear(self.gate_channels, n_head)

    def __call__(self, x, ve, mask):
        B, T, _ = x.shape
        q = self.c_q(x).reshape(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).reshape(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).reshape(B, T, self.n_head, self.head_dim)
        if ve is not None:
            gate = 2 * mx.sigmoid(self.ve_gate(x[..., : self.gate_channels]))
            v = v + gate[..., None] * ve.reshape(B, T, self.n_head, self.head_dim)
        q, k, v = q.transpose(0, 2, 1, 3), k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
        # rotary embedding over the sequence axis (-2 in the B, H, T, D layout), then QK-norm.
        # Half-split pairs rotated by -pos*freq (scale=-1): exactly experiments/gpt's apply_rotary.
        q = norm(mx.fast.rope(q, self.head_dim, traditional=False, base=ROPE_BASE, scale=-1.0, offset=0))
        k = norm(mx.fast.rope(k, self.head_dim, traditional=False, base=ROPE_BASE, scale=-1.0, offset=0))
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5, mask=mask)
        return self.c_proj(y.transpose(0, 2, 1, 3).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = Linear(dim, 4 * dim)
        self.c_proj = Linear(4 * dim, dim)

    def __call__(self, x):
        return self.c_proj(mx.square(mx.maximum(self.c_fc(x), 0)))  # ReLU^2


class Block(nn.Module):
    def __init__(self, dim, n_head, layer, depth):
        super().__init__()
        self.attn = CausalSelfAttention(dim, n_head, layer, depth)
        self.mlp = MLP(dim)

    def __call__(self, x, x0, resid_lambda, x0_lambda, ve, mask):
        x = resid_lambda * x + x0_lambda * x0
        x = x + self.attn(norm(x), ve, mask)
        return x + self.mlp(norm(x))


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        dim, depth = config.n_embd, config.n_layer
        self.wte = nn.Embedding(config.vocab_size, dim)
        self.blocks = [Block(dim, config.n_head, i, depth) for i in range(depth)]
        self.value_embeds = {
            str(i): nn.Embedding(config.vocab_size, dim) for i in range(depth) if has_value_embedding(i, depth)
        }
        self.lm_head = Linear(dim, config.vocab_size)
        # per layer: x = resid_lambdas[i] * x + x0_lambdas[i] * x0 (x0 = the normed input embedding)
        self.resid_lambdas = mx.ones((depth,))
        self.x0_lambdas = mx.zeros((depth,))
        # Masks are built and evaluated here, once (underscore: not parameters). A mask first
        # created while mx.compile traces the step would be cached as a placeholder array.
        self._masks = {w: attention_mask(config.sequence_len, w) for w in set(config.windows)}
        mx.eval([m for m in self._masks.values() if not isinstance(m, str)])

    def init_weights(self):
        s = 3**0.5 * self.config.n_embd**-0.5  # uniform bound with std 1/sqrt(dim)
        self.wte.weight = mx.random.normal(self.wte.weight.shape)
        self.lm_head.weight = 0.001 * mx.random.normal(self.lm_head.weight.shape)
        for ve in self.value_embeds.values():
            ve.weight = mx.random.uniform(-s, s, ve.weight.shape)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                lin.weight = mx.random.uniform(-s, s, lin.weight.shape)
            # zero-initialised output projections: every block starts as the identity
            block.attn.c_proj.weight = mx.zeros_like(block.attn.c_proj.weight)
            block.mlp.c_proj.weight = mx.zeros_like(block.mlp.c_proj.weight)
            if "ve_gate" in block.attn:
                block.attn.ve_gate.weight = mx.zeros_like(block.attn.ve_gate.weight)  # gate starts at 1.0
        self.resid_lambdas = mx.ones((self.config.n_layer,))
        self.x0_lambdas = mx.full((self.config.n_layer,), 0.1)

    def masks(self, seq_len):
        if seq_len == self.config.sequence_len:
            return [self._masks[w] for w in self.config.windows]
        return [attention_mask(seq_len, w) for w in self.config.windows]  # other lengths: built per call

    def __call__(self, idx):
        """Float32, soft-capped logits (B, T, vocab): what the evaluator consumes."""
        masks = self.masks(idx.shape[1])
        x = norm(self.wte(idx).astype(COMPUTE_DTYPE))
        x0 = x
        for i, block in enumerate(self.blocks):
            ve = self.value_embeds[str(i)](idx).astype(x.dtype) if str(i) in self.value_embeds else None
            r, z = self.resid_lambdas[i].astype(x.dtype), self.x0_lambdas[i].astype(x.dtype)
            x = block(x, x0, r, z, ve, masks[i])
        logits = self.lm_head(norm(x)).astype(mx.float32)
        return LOGIT_SOFTCAP * mx.tanh(logits / LOGIT_SOFTCAP)


def loss_fn(model, inputs, targets):
    """Mean next-token cross-entropy, for training only (the judged number comes from prepare)."""
    return nn.losses.cross_entropy(model(inputs), targets, reduction="mean")


# ---------------------------------------------------------------------------
# Optimizer: Muon for the matrices inside the blocks, AdamW for everything else
# ---------------------------------------------------------------------------

NS_COEFFS = (3.4445, -4.7750, 2.0315)  # quintic Newton-Schulz coefficients (Keller Jordan's Muon)


def orthogonalize(g, steps):
    """Approximately replace each matrix of g (..., rows, cols) by the nearest semi-orthogonal U V^T."""
    a, b, c = NS_COEFFS
    x = g.astype(COMPUTE_DTYPE)  # bf16 on Metal: the iteration only needs singular values near 1
    tall = x.shape[-2] > x.shape[-1]
    if tall:  # iterate on the wide orientation: x @ x^T is then the smaller Gram matrix
        x = x.swapaxes(-1, -2)
    frob = mx.sqrt(mx.sum(mx.square(x.astype(mx.float32)), axis=(-2, -1), keepdims=True))
    x = x / (frob + 1e-7).astype(x.dtype)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.swapaxes(-1, -2)
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x.swapaxes(-1, -2) if tall else x).astype(mx.float32)


class MuonAdamW:
    """Muon for the block matrices, AdamW for the rest, per-group lrs, as one pure compiled update.

    Muon matrices of one shape are stacked, so each Newton-Schulz iteration is a few batched
    matmuls for the whole group rather than a few per matrix (fewer, larger kernels on Metal).
    `step()` takes and returns flat {path: array} dicts. The lr multiplier, Muon momentum and
    weight decay arrive as 0-d arrays, so their schedules change every step without recompiling.
    """

    def __init__(self, model):
        lr_scale = (model.config.n_embd / 768) ** -0.5  # the AdamW lrs were tuned at width 768
        self.adam = {}  # path -> (lr, betas)
        self.muon = {}  # shape -> paths of the block matrices of that shape
        params = tree_flatten(model.trainable_parameters())
        for path, p in params:
            if path.startswith("blocks.") and p.ndim == 2:
                self.muon.setdefault(tuple(p.shape), []).append(path)
            elif path.startswith(("wte.", "value_embeds.")):
                self.adam[path] = (EMBEDDING_LR * lr_scale, ADAM_BETAS)
            elif path.startswith("lm_head."):
                self.adam[path] = (UNEMBEDDING_LR * lr_scale, ADAM_BETAS)
            elif path == "resid_lambdas":
                self.adam[path] = (SCALAR_LR * 0.01, ADAM_BETAS)
            elif path == "x0_lambdas":
                self.adam[path] = (SCALAR_LR, ADAM_BETAS)
            else:
                raise ValueError(f"parameter {path} has no optimizer group")
        shapes = dict(params)
        self.state = {"t": mx.array(0.0)}
        for path in self.adam:
            self.state[path] = {"m": mx.zeros_like(shapes[path]), "v": mx.zeros_like(shapes[path])}
        for shape, paths in self.muon.items():
            self.state[f"muon{shape}"] = {"buf": mx.zeros((len(paths), *shape))}
        self._compiled = mx.compile(self._update)

    def _update(self, params, grads, state, lrm, momentum, wd):
        t = state["t"] + 1
        new_params, new_state = {}, {"t": t}
        for path, (base_lr, (b1, b2)) in self.adam.items():
            p, g, s, lr = params[path], grads[path], state[path], base_lr * lrm
            m = b1 * s["m"] + (1 - b1) * g
            v = b2 * s["v"] + (1 - b2) * mx.square(g)
            step_size = lr / (1 - mx.power(b1, t))
            denom = mx.sqrt(v / (1 - mx.power(b2, t))) + ADAM_EPS
            new_params[path] = p - step_size * m / denom
            new_state[path] = {"m": m, "v": v}
        for shape, paths in self.muon.items():
            key, lr = f"muon{shape}", MATRIX_LR * lrm
            p = mx.stack([params[path] for path in paths])
            g = mx.stack([grads[path] for path in paths])
            buf = momentum * state[key]["buf"] + (1 - momentum) * g
            update = orthogonalize((1 - momentum) * g + momentum * buf, NS_STEPS)  # Nesterov
            scale = max(1.0, shape[0] / shape[1]) ** 0.5  # tall matrices take proportionally larger steps
            p = p * (1 - lr * wd) - (lr * scale) * update  # decoupled weight decay
            new_state[key] = {"buf": buf}
            for i, path in enumerate(paths):
                new_params[path] = p[i]
        return new_params, new_state

    def step(self, params, grads, lrm, momentum, wd):
        """Lazy: returns the new parameters and keeps the new state; nothing is evaluated here."""
        new_params, self.state = self._compiled(
            params, grads, self.state, mx.array(lrm), mx.array(momentum), mx.array(wd)
        )
        return new_params


# ---------------------------------------------------------------------------
# Schedules: all driven by progress = training seconds / budget (in 0..1)
# ---------------------------------------------------------------------------


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


def weight_decay(progress):
    return WEIGHT_DECAY * (1.0 - progress)


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------


def build_model(vocab_size):
    dim = math.ceil(DEPTH * ASPECT_RATIO / HEAD_DIM) * HEAD_DIM
    windows = window_sizes(DEPTH, WINDOW_PATTERN, SHORT_WINDOW, MAX_SEQ_LEN)
    model = GPT(GPTConfig(MAX_SEQ_LEN, vocab_size, DEPTH, dim // HEAD_DIM, dim, windows))
    model.init_weights()
    mx.eval(model.parameters())
    return model


def make_grad_fn(model):
    """A compiled forward+backward: (inputs, targets) -> (loss, grads), both lazy.

    The compiled function is pure: the parameters go in as an argument (new values after each
    optimizer step need no recompilation), and the model is pointed back at the real arrays
    after the call because tracing leaves placeholder arrays in it.
    """

    def loss_of(params, inputs, targets):
        model.update(params)
        return loss_fn(model, inputs, targets)

    compiled = mx.compile(mx.value_and_grad(loss_of))

    def grad_fn(inputs, targets):
        params = model.trainable_parameters()
        loss, grads = compiled(params, inputs, targets)
        model.update(params)
        return loss, grads

    return grad_fn


def train_step(model, optimizer, grad_fn, loader, batch, grad_accum, progress):
    """One optimizer step over grad_accum micro-batches, starting with the already-packed `batch`.

    Returns (loss, lrm, next batch); the loss and the new parameters are not evaluated yet.
    """
    accum, loss_sum = None, None
    for _ in range(grad_accum):
        x_np, y_np, _epoch = batch
        loss, grads = grad_fn(mx.array(x_np), mx.array(y_np))
        accum = grads if accum is None else tree_map(mx.add, accum, grads)
        loss_sum = loss if loss_sum is None else loss_sum + loss
        # Boundary: start this micro-batch on the device now (asynchronously) and pack the next
        # one on the CPU meanwhile. Evaluating the running sums before the next forward is built
        # keeps memory at about one micro-batch's activations instead of grad_accum of them.
        mx.async_eval(accum, loss_sum)
        batch = next(loader)
    if grad_accum > 1:
        accum = tree_map(lambda g: g * (1.0 / grad_accum), accum)
    lrm = lr_multiplier(progress)
    params = dict(tree_flatten(model.trainable_parameters()))
    new = optimizer.step(params, dict(tree_flatten(accum)), lrm, muon_momentum(progress), weight_decay(progress))
    model.update(tree_map_with_path(lambda path, _: new[path], model.trainable_parameters()))
    return loss_sum / grad_accum, lrm, batch


# ---------------------------------------------------------------------------
# Training loop: the budget counts only the steps after the untimed warm-up steps
# ---------------------------------------------------------------------------


def main():
    mx.random.seed(SEED)
    tokenizer = Tokenizer.load()
    model = build_model(tokenizer.vocab_size)
    optimizer = MuonAdamW(model)
    grad_fn = make_grad_fn(model)
    num_params = sum(p.size for _, p in tree_flatten(model.parameters()))
    tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    assert TOTAL_BATCH_SIZE % tokens_per_fwdbwd == 0, "TOTAL_BATCH_SIZE must be a multiple of one micro-batch"
    grad_accum = TOTAL_BATCH_SIZE // tokens_per_fwdbwd
    print(
        f"device: mlx {'gpu' if ON_GPU else 'cpu'} | dtype: {COMPUTE_DTYPE} | params: {num_params / 1e6:.1f}M"
        f" | width: {model.config.n_embd} | depth: {DEPTH} | windows: {list(model.config.windows)}"
        f" | grad_accum: {grad_accum} | budget: {TIME_BUDGET:.0f}s"
    )
    loader = make_dataloader_numpy(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
    batch = next(loader)

    training_time = 0.0
    step = 0
    while True:
        progress = min(training_time / TIME_BUDGET, 1.0)
        t_step = time.time()
        epoch = batch[2]
        loss, lrm, batch = train_step(model, optimizer, grad_fn, loader, batch, grad_accum, progress)
        # Boundary: one synchronous evaluation per optimizer step (the update and the loss); the
        # parameters never carry an unevaluated graph into the next step, and the loss is read
        # every step for the fast-fail check anyway.
        mx.eval(model.parameters(), optimizer.state, loss)
        loss_f = loss.item()
        dt = time.time() - t_step

        if not math.isfinite(loss_f) or loss_f > 100:  # fast-fail: a diverged run wastes the budget
            print(f"step {step:05d} | loss: {loss_f}")
            print("FAIL")
            sys.exit(1)
        if step >= UNTIMED_STEPS:
            training_time += dt
        if step == 0:
            # Python's cyclic GC walks every live object and stalls at random steps; nothing in the
            # loop creates cycles, so freeze what exists and stop collecting.
            gc.collect()
            gc.freeze()
            gc.disable()
        tok_per_sec = TOTAL_BATCH_SIZE / dt
        pct = 100 * min(training_time / TIME_BUDGET, 1.0)
        remaining = max(0.0, TIME_BUDGET - training_time)
        print(
            f"step {step:05d} ({pct:.1f}%) | loss: {loss_f:.6f} | lrm: {lrm:.2f} | dt: {dt * 1000:.0f}ms"
            f" | tok/sec: {tok_per_sec:,.0f} | mfu: 0.0% | epoch: {epoch} | remaining: {remaining:.0f}s"
        )
        step += 1
        if step > UNTIMED_STEPS and training_time >= TIME_BUDGET:
            break

    # ---------------------------------------------------------------------------
    # Hand-off: prepare exports the model; val_bpb is computed in a separate, clean process
    # ---------------------------------------------------------------------------
    gc.enable()
    mx.clear_cache()  # hand the training step's cached buffers back before the export allocates
    hand_off(model, EVAL_BATCH_SIZE)
    total_tokens = step * TOTAL_BATCH_SIZE
    timed_steps = step - UNTIMED_STEPS
    mean_tok_per_sec = timed_steps * TOTAL_BATCH_SIZE / training_time if training_time > 0 else 0.0
    peak_mb = mx.get_peak_memory() / 1024**2  # MLX's own allocator counter (unified memory on a Mac)
    print("---")
    print(f"training_seconds: {training_time:.1f}")
    print(f"total_seconds:    {time.time() - T0:.1f}")
    print(f"peak_vram_mb:     {peak_mb:.1f}")
    print(f"mfu_percent:      {0.0:.2f}")  # MLX reports no peak FLOP/s for the chip: unknown -> 0
    print(f"total_tokens_M:   {total_tokens / 1e6:.3f}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}")
    print(f"tokens_per_sec:   {mean_tok_per_sec:.0f}")


if __name__ == "__main__":
    main()
