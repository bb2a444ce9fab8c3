"""The `finetune` experiment's pretrained checkpoint: a small GPT that adds numbers of up to 4 digits.

    autoresearch prepare --base-model        (or: python -m prepare --base-model)
    from prepare.basemodel import load_base  # in a train file: (model, config) on the CPU

The checkpoint is built once, offline and deterministically (fixed seeds, a fixed number of
steps), into `<cache>/models/arith-gpt-<profile>/` (`config.json`, `model.pt`: a state dict
read back with `torch.load(weights_only=True)`). It is pretrained on worked additions
(`prepare.arithmetic.problem`) with operands of 1..PRETRAIN_DIGITS digits only, never a
validation pair: fine-tuning then has something to teach (5 and 6 digits, and the evaluator's
7 and 8), as fine-tuning a real pretrained model on a new task does. Per device profile: the cpu
one is tiny (seconds to build, for CI), the cuda one a few million parameters (about a minute).

The model lives here, immutable, because the checkpoint is only meaningful with the code that
wrote it: a pre-norm causal transformer with rotary positions and a ReLU^2 MLP whose linear
layers are named `qkv`, `proj`, `fc`, `out` (what LoRA adapters target). Its forward is
`model(idx) -> logits` (float32), the shape prepare's evaluators export.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from prepare import arithmetic, env
from prepare.errors import DataError

PRETRAIN_DIGITS = 4
SEQ_LEN = 128  # prepare.evaluate_arith.DECODE_LEN: the rows the evaluator decodes
SEED = 20261128
# profile -> architecture and pretraining schedule
CONFIGS: dict[str, dict[str, Any]] = {
    "cpu": {"depth": 2, "dim": 64, "n_heads": 4, "steps": 120, "batch": 8, "lr": 3e-3},
    "mlx": {"depth": 2, "dim": 64, "n_heads": 4, "steps": 120, "batch": 8, "lr": 3e-3},
    "cuda": {"depth": 4, "dim": 256, "n_heads": 4, "steps": 3000, "batch": 128, "lr": 2e-3},
}


def folder(cache_root: Path | None = None, profile: str | None = None) -> Path:
    root = Path(cache_root) if cache_root is not None else env.cache_root()
    return root / "models" / f"arith-gpt-{profile or env.device()}"


def load_base(cache_root: Path | None = None, profile: str | None = None) -> tuple[Any, dict[str, Any]]:
    """The pretrained model (on the CPU, in train mode) and its config; DataError when not built."""
    import torch

    where = folder(cache_root, profile)
    try:
        config = json.loads((where / "config.json").read_text())
        state = torch.load(where / "model.pt", map_location="cpu", weights_only=True)
    except (OSError, ValueError) as exc:
        raise DataError(
            f"the pretrained checkpoint {where} is missing or unreadable ({type(exc).__name__}); "
            "build it once with `autoresearch prepare --base-model`"
        ) from None
    model = make_model(config)
    model.load_state_dict(state)
    return model, config


def build(cache_root: Path | None = None, profile: str | None = None, *, log: Any = print) -> Path:
    """Pretrain the checkpoint of `profile` (default: the active one) unless it exists; its folder."""
    import torch
    import torch.nn.functional as F

    from prepare import datasets
    from prepare.tokenizer import Tokenizer

    profile = profile or env.device()
    where = folder(cache_root, profile)
    if (where / "model.pt").is_file():
        return where
    spec = CONFIGS[profile]
    device = torch.device("cuda" if profile == "cuda" and torch.cuda.is_available() else "cpu")
    torch.manual_seed(SEED)
    info = datasets.ensure_ready(
        "arithmetic", Path(cache_root) if cache_root is not None else env.cache_root()
    )
    tokenizer = Tokenizer.from_directory(info.tokenizer_dir)
    config = {
        **spec,
        "vocab_size": tokenizer.vocab_size,
        "seq_len": SEQ_LEN,
        "pretrain_digits": PRETRAIN_DIGITS,
    }
    model = make_model(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec["lr"], betas=(0.9, 0.95), weight_decay=0.1)
    rows = _rows(tokenizer, random.Random(SEED))
    t0 = time.time()
    for step in range(spec["steps"]):
        batch = torch.tensor([next(rows) for _ in range(spec["batch"])], device=device)
        for group in optimizer.param_groups:  # linear decay to 10 %: a finished, not a converged, model
            group["lr"] = spec["lr"] * (1 - 0.9 * step / spec["steps"])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 100 == 0 or step == spec["steps"] - 1:
            log(f"base model: step {step}/{spec['steps']} loss {loss.item():.4f} ({time.time() - t0:.0f}s)")
    where.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=where.parent, prefix=f".{where.name}.", suffix=".tmp"))
    try:
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, work / "model.pt")
        (work / "config.json").write_text(json.dumps(config, indent=1))
        os.chmod(work, 0o755)
        try:
            os.rename(work, where)
        except OSError:
            if not (where / "model.pt").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return where


def _rows(tokenizer: Any, rng: random.Random) -> Any:
    """Rows of SEQ_LEN + 1 tokens packed with BOS-prefixed problems of up to PRETRAIN_DIGITS digits."""
    buffer: list[int] = []
    while True:
        while len(buffer) < SEQ_LEN + 1:
            a, b = (rng.randint(0, 10 ** rng.randint(1, PRETRAIN_DIGITS) - 1) for _ in range(2))
            if not arithmetic.is_validation(a, b):
                buffer += [tokenizer.bos_id, *tokenizer.encode(arithmetic.problem(a, b))]
        yield buffer[: SEQ_LEN + 1]
        buffer = buffer[SEQ_LEN + 1 :]


def make_model(config: dict[str, Any]) -> Any:
    """A freshly initialised model of `config` (depth, dim, n_heads, vocab_size, seq_len)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Block(nn.Module):
        def __init__(self, dim: int, n_heads: int) -> None:
            super().__init__()
            self.n_heads = n_heads
            self.norm1, self.norm2 = nn.RMSNorm(dim), nn.RMSNorm(dim)
            self.qkv = nn.Linear(dim, 3 * dim, bias=False)
            self.proj = nn.Linear(dim, dim, bias=False)
            self.fc = nn.Linear(dim, 4 * dim, bias=False)
            self.out = nn.Linear(4 * dim, dim, bias=False)

        def forward(self, x: Any, cos: Any, sin: Any) -> Any:
            b, t, c = x.shape
            qkv = self.qkv(self.norm1(x)).view(b, t, 3, self.n_heads, c // self.n_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
            return x + self.out(F.relu(self.fc(self.norm2(x))).square())

    class ArithGPT(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            dim, depth, heads = config["dim"], config["depth"], config["n_heads"]
            self.wte = nn.Embedding(config["vocab_size"], dim)
            self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
            self.norm = nn.RMSNorm(dim)
            self.head = nn.Linear(dim, config["vocab_size"], bias=False)
            half = dim // heads // 2
            inv = 1.0 / (10_000.0 ** (torch.arange(half, dtype=torch.float32) / half))
            freqs = torch.outer(torch.arange(config["seq_len"], dtype=torch.float32), inv)
            self.register_buffer("cos", freqs.cos()[None, None], persistent=False)
            self.register_buffer("sin", freqs.sin()[None, None], persistent=False)
            for name, p in self.named_parameters():
                if p.dim() == 2:
                    scale = math.sqrt(2 * depth) if name.endswith(("proj.weight", "out.weight")) else 1.0
                    nn.init.normal_(p, std=0.02 / scale)

        def forward(self, idx: Any) -> Any:
            t = idx.shape[1]
            cos, sin = self.get_buffer("cos")[:, :, :t], self.get_buffer("sin")[:, :, :t]
            x = self.wte(idx)
            for block in self.blocks:
                x = block(x, cos, sin)
            return self.head(self.norm(x)).float()

    return ArithGPT()


def _rotate(x: Any, cos: Any, sin: Any) -> Any:
    import torch

    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)
