"""
GPT pretraining on MLX: Apple silicon (Metal), and Linux through mlx[cpu]. Single device, single file.

The MLX twin of experiments/gpt/train.py: the same architecture (RoPE, QK-norm, sliding-window
pattern, gated value embeddings, ReLU^2 MLP, weightless RMSNorm, residual/x0 scalars, logit
soft-cap, zero-initialised projections, no biases) and the same optimizer (Muon for the block
matrices, AdamW for the rest, every schedule driven by progress = training seconds / budget).
The number that judges a run comes from prepare.evaluate_bpb, never from code in this file.

Usage: python train.py   (the harness sets AUTORESEARCH_DEVICE=mlx and the other AUTORESEARCH_* variables)
"""

import gc
import math
import os
import time
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten, tree_map, tree_map_with_path

from prepare import MAX_SEQ_LEN, TIME_BUDGET, Tokenizer, evaluate_bpb, make_dataloader_numpy

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

# Model architecture
ASPECT_RATIO = 64  # model_dim = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128  # width of one attention head
WINDOW_PATTERN = "SSSL"  # per layer: S = half-context sliding window, L = full context; last layer always L
ROPE_BASE = 10000.0  # rotary embedding base frequency
LOGIT_SOFTCAP = 15.0  # logits = cap * tanh(logits / cap)

# Optimization
TOTAL_BATCH_SIZE = 2**16  # tokens per optimizer step (gradient accumulation fills it)
EMBEDDING_LR = 0.6  # AdamW lr of the token and value embeddings (scaled by width)
UNEMBEDDING_LR = 0.004  # AdamW lr of lm_head (scaled by width)
MATRIX_LR = 0.04  # Muon lr of the 2-D block matrices
SCALAR_LR = 0.5  # AdamW lr of the per-layer x0 scalars (residual scalars get 1% of it)
WEIGHT_DECAY = 0.2  # Muon (cautious) weight decay, decays linearly to 0 with progress
ADAM_BETAS = (0.8, 0.95)  # AdamW betas
WARMUP_RATIO = 0.0  # share of the budget spent ramping the lr up
WARMDOWN_RATIO = 0.5  # share of the budget spent ramping the lr down
FINAL_LR_FRAC = 0.0  # lr multiplier at the end of the warmdown
MUON_MOMENTUM = (0.85, 0.95, 300)  # Muon momentum: start, end, warm-up steps
NS_STEPS = 5  # Newton-Schulz iterations per Muon step

# Model size (defaults for Apple machines: a 16-24 GB Mac trains this comfortably in 5 minutes)
DEPTH = 4  # number of transformer blocks
DEVICE_BATCH_SIZE = 16  # rows of MAX_SEQ_LEN tokens per forward/backward

# Without a GPU (mlx[cpu] on Linux CI, or a Mac forced onto the CPU) the model above is far too
# slow, so these smaller sizes replace DEPTH/ASPECT_RATIO/HEAD_DIM/the batch sizes there.
CPU_DEPTH = 2  # blocks on the CPU backend
CPU_ASPECT_RATIO = 32  # width per block on the CPU backend
CPU_HEAD_DIM = 32  # head width on the CPU backend
CPU_DEVICE_BATCH_SIZE = 2  # rows per forward/backward on the CPU backend
CPU_ACCUM_STEPS = 1  # forward/backward passes per optimizer step on the CPU backend

FINAL_EVAL_BATCH_SIZE = 8  # rows per evaluate_bpb forward (prepare chunks the loss itself)
STARTUP_EXCLUDE_STEPS = 2  # the first steps compile the graph: not counted against the budget
SEED = 42

ON_GPU = mx.default_device() == mx.gpu  # MLX picks the GPU (Metal) whenever there is one
if not ON_GPU:
    DEPTH, ASPECT_RATIO, HEAD_DIM = CPU_DEPTH, CPU_ASPECT_RATIO, CPU_HEAD_DIM
    DEVICE_BATCH_SIZE = CPU_DEVICE_BATCH_SIZE
    TOTAL_BATCH_SIZE = CPU_DEVICE_BATCH_SIZE * MAX_SEQ_LEN * CPU_ACCUM_STEPS
    FINAL_EVAL_BATCH_SIZE = 2
# bf16 activations on Metal (fast, half the memory); float32 on the CPU backend, where bf16 has no speed-up.
COMPUTE_DTYPE = mx.bfloat16 if ON_GPU else mx.float32


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    sequence_len: int = 2048
    vocab_size: int = 8192
    n_layer: int = 4
    n_head: int = 2
    n_kv_head: int = 2
    n_embd: int = 256
    window_pattern: str = "SSSL"


def norm(x):
    # RMSNorm without a learnable weight
    return mx.fast.rms_norm(x, None, 1e-5)


def has_ve(layer_idx, n_layer):
    """Value embeddings on alternating layers, the last layer always among them."""
    return layer_idx % 2 == (n_layer - 1) % 2


class Linear(nn.Module):
    """A bias-free linear layer keeping float32 master weights, cast to the activations' dtype."""

    def __init__(self, in_features, out_features):
        super().__init__()
        self.weight = mx.zeros((out_features, in_features))

    def __call__(self, x):
        return x @ self.weight.astype(x.dtype).T


class CausalSelfAttention(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head
        self.head_dim = config.n_embd // config.n_head
        assert config.n_embd % config.n_head == 0 and config.n_head % config.n_kv_head == 0
        self.c_q = Linear(config.n_embd, self.n_head * self.head_dim)
        self.c_k = Linear(config.n_embd, self.n_kv_head * self.head_dim)
        self.c_v = Linear(config.n_embd, self.n_kv_head * self.head_dim)
        self.c_proj = Linear(config.n_embd, config.n_embd)
        self.ve_gate_channels = min(32, config.n_embd)
        if has_ve(layer_idx, config.n_layer):
            self.ve_gate = Linear(self.ve_gate_channels, self.n_kv_head)

    def __call__(self, x, ve, mask):
        B, T, _ = x.shape
        q = self.c_q(x).reshape(B, T, self.n_head, self.head_dim).transpose(0, 2, 1, 3)
        k = self.c_k(x).reshape(B, T, self.n_kv_head, self.head_dim).transpose(0, 2, 1, 3)
        v = self.c_v(x).reshape(B, T, self.n_kv_head, self.head_dim)
        if ve is not None:
            # gated value embedding: gate in (0, 2), exactly 1 at init (ve_gate is zero-initialised)
            gate = 2 * mx.sigmoid(self.ve_gate(x[..., : self.ve_gate_channels]))
            v = v + gate[..., None] * ve.reshape(B, T, self.n_kv_head, self.head_dim)
        v = v.transpose(0, 2, 1, 3)
        # rotary embeddings over the sequence axis (axis -2 after the transpose), then QK-norm
        q = norm(mx.fast.rope(q, self.head_dim, traditional=False, base=ROPE_BASE, scale=1.0, offset=0))
        k = norm(mx.fast.rope(k, self.head_dim, traditional=False, base=ROPE_BASE, scale=1.0, offset=0))
        y = mx.fast.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5, mask=mask)
        return self.c_proj(y.transpose(0, 2, 1, 3).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd)

    def __call__(self, x):
        return self.c_proj(mx.square(mx.maximum(self.c_fc(x), 0)))  # ReLU^2


class Block(nn.Module):
    def __init__(self, config, layer_idx):
        super().__init__()
        self.attn = CausalSelfAttention(config, layer_idx)
        self.mlp = MLP(config)

    def __call__(self, x, ve, mask):
        x = x + self.attn(norm(x), ve, mask)
        return x + self.mlp(norm(x))


def window_sizes(config):
    """The attention window of each layer from the pattern; the last layer always sees everything."""
    pattern = config.window_pattern.upper()
    assert pattern and set(pattern) <= set("SL"), f"WINDOW_PATTERN must use S and L only: {pattern!r}"
    sizes = {"L": config.sequence_len, "S": config.sequence_len // 2}
    out = [sizes[pattern[i % len(pattern)]] for i in range(config.n_layer)]
    out[-1] = config.sequence_len
    return out


def attention_mask(seq_len, window):
    """'causal' (the fused path) when the window covers the sequence, else a boolean band mask."""
    if window >= seq_len:
        return "causal"
    i = mx.arange(seq_len)[:, None]
    j = mx.arange(seq_len)[None, :]
    return (j <= i) & (i - j < window)  # True = may attend


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = [Block(config, i) for i in range(config.n_layer)]
        self.lm_head = Linear(config.n_embd, config.vocab_size)
        self.resid_lambdas = mx.ones((config.n_layer,))
        self.x0_lambdas = mx.zeros((config.n_layer,))
        kv_dim = config.n_kv_head * (config.n_embd // config.n_head)
        self.value_embeds = {
            str(i): nn.Embedding(config.vocab_size, kv_dim) for i in range(config.n_layer) if has_ve(i, config.n_layer)
        }
        self._windows = window_sizes(config)
        # Built and evaluated here, once: a mask first created while mx.compile traces the step
        # would be cached as a placeholder and break every later call.
        self._masks = {w: attention_mask(config.sequence_len, w) for w in set(self._windows)}
        mx.eval([m for m in self._masks.values() if not isinstance(m, str)])

    def init_weights(self):
        s = 3**0.5 * self.config.n_embd**-0.5  # uniform bound with the std of a 1/sqrt(fan_in) normal
        self.wte.weight = mx.random.normal(self.wte.weight.shape)
        self.lm_head.weight = 0.001 * mx.random.normal(self.lm_head.weight.shape)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                lin.weight = mx.random.uniform(-s, s, lin.weight.shape)
            block.attn.c_proj.weight = mx.zeros_like(block.attn.c_proj.weight)  # zero-init projections
            block.mlp.c_proj.weight = mx.zeros_like(block.mlp.c_proj.weight)
            if "ve_gate" in block.attn:
                block.attn.ve_gate.weight = mx.zeros_like(block.attn.ve_gate.weight)
        for ve in self.value_embeds.values():
            ve.weight = mx.random.uniform(-s, s, ve.weight.shape)
        self.resid_lambdas = mx.ones((self.config.n_layer,))
        self.x0_lambdas = mx.full((self.config.n_layer,), 0.1)

    def masks(self, seq_len):
        if seq_len == self.config.sequence_len:
            return [self._masks[w] for w in self._windows]
        return [attention_mask(seq_len, w) for w in self._windows]  # other lengths: built per call

    def __call__(self, idx):
        """Logits (float32, soft-capped) for every position of idx (B, T)."""
        masks = self.masks(idx.shape[1])
        x = norm(self.wte(idx).astype(COMPUTE_DTYPE))
        x0 = x
        for i, block in enumerate(self.blocks):
            x = self.resid_lambdas[i].astype(x.dtype) * x + self.x0_lambdas[i].astype(x.dtype) * x0
            ve = self.value_embeds[str(i)](idx).astype(x.dtype) if str(i) in self.value_embeds else None
            x = block(x, ve, masks[i])
        logits = self.lm_head(norm(x)).astype(mx.float32)
        return LOGIT_SOFTCAP * mx.tanh(logits / LOGIT_SOFTCAP)


def loss_fn(model, inputs, targets):
    """Mean next-token cross-entropy (training only; the judged number comes from prepare)."""
    logits = model(inputs)
    return nn.losses.cross_entropy(logits, targets, reduction="mean")


# ---------------------------------------------------------------------------
# Optimizer: Muon for the 2-D block matrices, AdamW for everything else
# ---------------------------------------------------------------------------


def newton_schulz(g, steps):
    """Approximately orthogonalise g (U S V^T -> U V^T) with the quintic Newton-Schulz iteration."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.astype(COMPUTE_DTYPE)
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the wide orientation: X X^T is then the smaller Gram matrix
        x = x.T
    x = x / (mx.sqrt(mx.sum(mx.square(x.astype(mx.float32)))).astype(x.dtype) + 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * (gram @ gram)) @ x
    return (x.T if tall else x).astype(mx.float32)


class MuonAdamW:
    """Per-parameter Muon or AdamW with per-group learning rates, as one pure compiled update.

    `step(params, grads, lrm, momentum, wd)` takes and returns flat {path: array} dicts; the
    learning-rate multiplier, Muon momentum and weight decay arrive as 0-d arrays so that their
    schedules change every step without recompiling the graph.
    """

    def __init__(self, model):
        dim = model.config.n_embd
        width_scale = (dim / 768) ** -0.5  # AdamW lrs were tuned at width 768
        self.groups = {}  # path -> (kind, base lr, betas)
        for path, p in tree_flatten(model.trainable_parameters()):
            if path.startswith("blocks.") and p.ndim == 2:
                # shape-aware Muon lr: tall matrices take proportionally larger steps
                self.groups[path] = ("muon", MATRIX_LR * max(1.0, p.shape[0] / p.shape[1]) ** 0.5, None)
            elif path.startswith(("wte.", "value_embeds.")):
                self.groups[path] = ("adam", EMBEDDING_LR * width_scale, ADAM_BETAS)
            elif path.startswith("lm_head."):
                self.groups[path] = ("adam", UNEMBEDDING_LR * width_scale, ADAM_BETAS)
            elif path == "resid_lambdas":
                self.groups[path] = ("adam", SCALAR_LR * 0.01, ADAM_BETAS)
            elif path == "x0_lambdas":
                self.groups[path] = ("adam", SCALAR_LR, (0.96, 0.95))
            else:
                raise ValueError(f"parameter {path} has no optimizer group")
        self.state = {"t": mx.array(0.0)}
        for path, p in tree_flatten(model.trainable_parameters()):
            if self.groups[path][0] == "muon":
                self.state[path] = {"buf": mx.zeros_like(p)}
            else:
                self.state[path] = {"m": mx.zeros_like(p), "v": mx.zeros_like(p)}
        self._compiled = mx.compile(self._update)

    def _update(self, params, grads, state, lrm, momentum, wd):
        t = state["t"] + 1
        new_params, new_state = {}, {"t": t}
        for path, p in params.items():
            kind, base_lr, betas = self.groups[path]
            g, s, lr = grads[path], state[path], base_lr * lrm
            if kind == "muon":
                buf = momentum * s["buf"] + (1 - momentum) * g
                update = newton_schulz((1 - momentum) * g + momentum * buf, NS_STEPS)  # Nesterov
                # cautious weight decay: only shrink coordinates the update also pushes toward 0
                decay = mx.where(update * p >= 0, p, 0.0)
                new_params[path] = p - lr * wd * decay - lr * update
                new_state[path] = {"buf": buf}
            else:
                b1, b2 = betas
                m = b1 * s["m"] + (1 - b1) * g
                v = b2 * s["v"] + (1 - b2) * mx.square(g)
                m_hat = m / (1 - mx.power(b1, t))
                v_hat = v / (1 - mx.power(b2, t))
                new_params[path] = p - lr * m_hat / (mx.sqrt(v_hat) + 1e-10)
                new_state[path] = {"m": m, "v": v}
        return new_params, new_state

    def step(self, params, grads, lrm, momentum, wd):
        """Lazy: returns new params and stores the new state; nothing is evaluated here."""
        new_params, self.state = self._compiled(
            params, grads, self.state, mx.array(lrm), mx.array(momentum), mx.array(wd)
        )
        return new_params


# ---------------------------------------------------------------------------
# Schedules (all driven by progress = training seconds / budget, except Muon's step warm-up)
# ---------------------------------------------------------------------------


def get_lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1.0 - cooldown) * FINAL_LR_FRAC


def get_muon_momentum(step):
    start, end, warmup_steps = MUON_MOMENTUM
    frac = min(step / warmup_steps, 1.0)
    return (1 - frac) * start + frac * end


def get_weight_decay(progress):
    return WEIGHT_DECAY * (1.0 - progress)


def make_grad_fn(model):
    """A compiled forward+backward: (inputs, targets) -> (loss, grads), lazy.

    The compiled function is pure: the parameters go in as an argument (so new values after each
    optimizer step need no recompilation) and the model is pointed back at the real arrays after
    the call, because tracing leaves placeholder arrays in it.
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


def build_model(vocab_size):
    model_dim = ((DEPTH * ASPECT_RATIO + HEAD_DIM - 1) // HEAD_DIM) * HEAD_DIM
    n_head = model_dim // HEAD_DIM
    config = GPTConfig(MAX_SEQ_LEN, vocab_size, DEPTH, n_head, n_head, model_dim, WINDOW_PATTERN)
    model = GPT(config)
    model.init_weights()
    mx.eval(model.parameters())
    return model


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def main():
    t_start = time.time()
    mx.random.seed(SEED)
    tokenizer = Tokenizer.load()
    model = build_model(tokenizer.vocab_size)
    config = model.config
    num_params = sum(p.size for _, p in tree_flatten(model.parameters()))
    tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
    assert TOTAL_BATCH_SIZE % tokens_per_fwdbwd == 0, "TOTAL_BATCH_SIZE must be a multiple of one forward's tokens"
    grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_fwdbwd
    optimizer = MuonAdamW(model)
    print(f"backend: {'metal' if ON_GPU else 'cpu'} | dtype: {COMPUTE_DTYPE} | time budget: {TIME_BUDGET}s")
    print(f"model: depth {config.n_layer}, width {config.n_embd}, heads {config.n_head}, vocab {config.vocab_size}")
    print(f"params: {num_params / 1e6:.2f}M | batch: {TOTAL_BATCH_SIZE:,} tokens, {grad_accum_steps} x {DEVICE_BATCH_SIZE} rows")

    grad_fn = make_grad_fn(model)
    train_loader = make_dataloader_numpy(tokenizer, DEVICE_BATCH_SIZE, MAX_SEQ_LEN, "train")
    x_np, y_np, epoch = next(train_loader)

    step = 0
    total_training_time = 0.0
    smooth_loss = 0.0
    progress = 0.0
    while True:
        t0 = time.time()
        accum, loss_sum = None, None
        for micro in range(grad_accum_steps):
            loss, grads = grad_fn(mx.array(x_np), mx.array(y_np))
            accum = grads if accum is None else tree_map(mx.add, accum, grads)
            loss_sum = loss if loss_sum is None else loss_sum + loss
            if micro < grad_accum_steps - 1:
                # Boundary: materialise the running gradient sum so this micro-batch's activations
                # are freed before the next forward; memory stays at one micro-batch, not all of them.
                mx.eval(accum, loss_sum)
            x_np, y_np, epoch = next(train_loader)
        if grad_accum_steps > 1:
            accum = tree_map(lambda g: g * (1.0 / grad_accum_steps), accum)
        lrm = get_lr_multiplier(progress)
        params = dict(tree_flatten(model.trainable_parameters()))
        new_params = optimizer.step(params, dict(tree_flatten(accum)), lrm, get_muon_momentum(step), get_weight_decay(progress))
        model.update(tree_map_with_path(lambda path, _: new_params[path], model.trainable_parameters()))
        train_loss = loss_sum / grad_accum_steps
        # Boundary: one evaluation per optimizer step over the last backward, the update and the
        # loss together, so MLX fuses them; the parameters never hold an unevaluated graph across steps.
        mx.eval(model.parameters(), optimizer.state, train_loss)
        train_loss_f = train_loss.item()
        if math.isnan(train_loss_f) or train_loss_f > 100:
            print(f"step {step:05d} | loss: {train_loss_f:.6f}")
            print("FAIL")
            raise SystemExit(1)

        dt = time.time() - t0
        if step >= STARTUP_EXCLUDE_STEPS:
            total_training_time += dt
        progress = min(total_training_time / TIME_BUDGET, 1.0)
        ema = 0.9
        smooth_loss = ema * smooth_loss + (1 - ema) * train_loss_f
        debiased = smooth_loss / (1 - ema ** (step + 1))
        remaining = max(0.0, TIME_BUDGET - total_training_time)
        print(
            f"step {step:05d} ({100 * progress:.1f}%) | loss: {debiased:.6f} | lrm: {lrm:.2f} | "
            f"dt: {dt * 1000:.0f}ms | tok/sec: {int(TOTAL_BATCH_SIZE / dt):,} | mfu: 0.0% | "
            f"epoch: {epoch} | remaining: {remaining:.0f}s"
        )
        if step == 0:
            # Python's GC walks every live object; after the first step nothing long-lived is
            # created, so freeze what exists and stop paying for collections mid-training.
            gc.collect()
            gc.freeze()
            gc.disable()
        step += 1
        if step > STARTUP_EXCLUDE_STEPS and total_training_time >= TIME_BUDGET:
            break

    t_train = time.time()
    total_tokens = step * TOTAL_BATCH_SIZE
    gc.enable()
    mx.clear_cache()  # hand the training buffers back before the evaluation allocates its own
    val_bpb = evaluate_bpb(model, tokenizer, FINAL_EVAL_BATCH_SIZE)
    t_end = time.time()
    print(f"eval: {t_end - t_train:.1f}s")
    peak_mb = mx.get_peak_memory() / 1024 / 1024
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"training_seconds: {total_training_time:.1f}")
    print(f"total_seconds:    {t_end - t_start:.1f}")
    print(f"peak_vram_mb:     {peak_mb:.1f}")
    print(f"mfu_percent:      {0.0:.2f}")  # MLX exposes no peak FLOP/s for the chip: unknown -> 0
    print(f"total_tokens_M:   {total_tokens / 1e6:.1f}")
    print(f"num_steps:        {step}")
    print(f"num_params_M:     {num_params / 1e6:.1f}")
    print(f"depth:            {DEPTH}")


if __name__ == "__main__":
    main()
