"""Benchmark: the gpt-mlx experiment on this machine's MLX backend (CPU through mlx[cpu] on Linux).

    python bench/bench_mlx.py [--steps 5]

Prints one JSON line with:
- matmul GFLOP/s of a 1024^3 float32 product in MLX, PyTorch and NumPy (why MLX on a CPU is slow);
- the train file's tiny CPU configuration under the `cpu` profile: tokens/s of the compiled
  training step (after a warm-up step) and the peak memory MLX's allocator reports;
- evaluate_bpb_mlx of that model under the `cpu` profile: seconds and peak memory;
- the `mlx` profile on this backend: seconds of one 2,048-token forward of the tiny model at the
  profile's sequence length, extrapolated to the profile's EVAL_TOKENS (why CI uses the `cpu` profile);
- peak memory of evaluate_bpb_mlx on 16,384-wide logits for the cpu profile's 128 rows in one
  batch (2 GiB of float32 logits if computed at once), from a table model.
The arithmetic dataset is built in a temporary cache.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def gflops(fn, n: int = 1024, reps: int = 5) -> float:  # type: ignore[no-untyped-def]
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return reps * 2 * n**3 / (time.perf_counter() - t) / 1e9


def matmul_rates() -> dict[str, float]:
    import mlx.core as mx
    import numpy as np
    import torch

    a_mx = mx.random.normal((1024, 1024))
    a_t = torch.randn(1024, 1024)
    a_np = np.random.rand(1024, 1024).astype(np.float32)
    mx.eval(a_mx)
    return {
        "mlx": round(gflops(lambda: mx.eval(a_mx @ a_mx)), 1),
        "torch": round(gflops(lambda: a_t @ a_t), 1),
        "numpy": round(gflops(lambda: a_np @ a_np), 1),
    }


def load_train(profile: str):  # type: ignore[no-untyped-def]
    os.environ["AUTORESEARCH_DEVICE"] = profile
    spec = importlib.util.spec_from_file_location(f"gpt_mlx_{profile}", ROOT / "experiments/gpt-mlx/train.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="timed training steps")
    args = parser.parse_args()

    import mlx.core as mx
    import numpy as np

    from prepare import datasets
    from prepare.evaluate_mlx import evaluate_bpb_mlx
    from prepare.tokenizer import Tokenizer

    out: dict[str, object] = {
        "machine": f"{platform.machine()} {platform.system()}, {os.cpu_count()} cores",
        "mlx": mx.__version__,
        "mlx_device": str(mx.default_device()),
        "matmul_gflops": matmul_rates(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["AUTORESEARCH_CACHE"] = tmp
        os.environ["AUTORESEARCH_DATASET"] = "arithmetic"
        datasets.prepare_dataset("arithmetic", Path(tmp), progress=False)
        tok = Tokenizer.load()

        train = load_train("cpu")
        model = train.build_model(tok.vocab_size)
        opt, grad_fn = train.MuonAdamW(model), train.make_grad_fn(model)
        loader = train.make_dataloader_numpy(tok, train.DEVICE_BATCH_SIZE, train.MAX_SEQ_LEN, "train")
        accum = train.TOTAL_BATCH_SIZE // (train.DEVICE_BATCH_SIZE * train.MAX_SEQ_LEN)
        batch = next(loader)
        for step in range(args.steps + 1):
            if step == 1:  # step 0 compiles
                mx.reset_peak_memory()
                t0 = time.perf_counter()
            loss, _, batch = train.train_step(model, opt, grad_fn, loader, batch, accum, 0.0)
            mx.eval(model.parameters(), opt.state, loss)
        dt = time.perf_counter() - t0
        out["cpu_profile_train"] = {
            "config": f"depth {train.DEPTH}, width {model.config.n_embd}, {train.TOTAL_BATCH_SIZE} tokens/step",
            "tokens_per_s": round(args.steps * train.TOTAL_BATCH_SIZE / dt),
            "peak_mb": round(mx.get_peak_memory() / 2**20, 1),
        }
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        bpb = evaluate_bpb_mlx(model, tok, train.EVAL_BATCH_SIZE)
        out["cpu_profile_eval"] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "peak_mb": round(mx.get_peak_memory() / 2**20, 1),
            "val_bpb": round(bpb, 4),
        }

        big = load_train("mlx")  # the same tiny configuration (no GPU), at the mlx profile's lengths
        model = big.build_model(tok.vocab_size)
        row = mx.array(np.zeros((1, big.MAX_SEQ_LEN), dtype=np.int32))
        mx.eval(model(row))
        t0 = time.perf_counter()
        mx.eval(model(row))
        per_row = time.perf_counter() - t0
        from prepare import EVAL_TOKENS

        out["mlx_profile_eval_estimate"] = {
            "seconds_per_row": round(per_row, 3),
            "rows": EVAL_TOKENS // big.MAX_SEQ_LEN,
            "estimated_seconds": round(per_row * EVAL_TOKENS / big.MAX_SEQ_LEN),
        }

        class Table:
            def __init__(self, width: int) -> None:
                self.table = mx.zeros((tok.vocab_size, width))

            def __call__(self, idx):  # type: ignore[no-untyped-def]
                return self.table[idx]

        # bounded memory: logits 16,384 wide for the cpu profile's 128 rows of 256 tokens in one
        # batch would be 2 GiB of float32 if computed at once; evaluate_bpb_mlx slices the rows
        os.environ["AUTORESEARCH_DEVICE"] = "cpu"
        table = Table(16384)
        mx.eval(table.table)
        mx.reset_peak_memory()
        t0 = time.perf_counter()
        evaluate_bpb_mlx(table, tok, 128)
        out["wide_logits_eval"] = {
            "batch": "128 rows x 256 tokens x 16384 classes",
            "whole_batch_logits_mb": 128 * 256 * 16384 * 4 // 2**20,
            "peak_mb": round(mx.get_peak_memory() / 2**20, 1),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
