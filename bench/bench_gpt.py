"""Benchmark experiments/gpt/train.py on a CUDA GPU.

Two modes, both writing JSON that BENCHMARKS.md quotes:

  python bench/bench_gpt.py synthetic --out DIR [--variants default,sdpa,b64] [--steps 30] [--profile]
      Throughput of the model + optimizer on random tokens (no dataset needed): for each variant
      (a set of train.py constants overridden, as an edit by the agent would) a fresh child process
      builds the model exactly as train.py does, runs the untimed warm-up steps (compilation),
      then times `--steps` steps. Reports tokens/s, MFU, peak memory, compile seconds and the
      optimizer's share of a step; `--profile` adds a torch.profiler table of the default variant.

  python bench/bench_gpt.py runs --out DIR --n 3 [--dataset text:PATH] [--budget 300]
      Runs the real train.py n times in a row (cwd = the experiment folder, AUTORESEARCH_* set)
      and records each run's summary block, wall time, and the val_bpb of prepare's evaluator
      (which train.py's hand_off starts when run by hand): the full-budget figures (steps in the
      budget, seconds outside it) and the spread of val_bpb.

Throughput does not depend on the text, so the synthetic mode needs no prepared dataset.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ROOT / "experiments" / "gpt" / "train.py"

VARIANTS: dict[str, dict[str, object]] = {
    "default": {},
    "plain": {"FUSED_KERNELS": False},
    "sdpa": {"ATTENTION": "sdpa"},
    "b64": {"DEVICE_BATCH_SIZE": 64},
    "b128": {"DEVICE_BATCH_SIZE": 128},
    "whole": {"COMPILE": "model"},
    "blocks": {"COMPILE": "blocks"},
    "full_causal": {"WINDOW_PATTERN": "L"},
}


# ---------------------------------------------------------------------------------------------
# synthetic mode
# ---------------------------------------------------------------------------------------------


def synthetic_prepare(seq_len: int, vocab: int, device: str = "cuda") -> types.ModuleType:
    """A stand-in for `prepare` that feeds random tokens, so the model can be timed without data."""
    import torch

    mod = types.ModuleType("prepare")
    mod.__path__ = [str(ROOT / "prepare")]  # type: ignore[attr-defined]  # submodules (prepare.kernels) stay real
    mod.DEVICE = device  # type: ignore[attr-defined]
    mod.MAX_SEQ_LEN = seq_len  # type: ignore[attr-defined]
    mod.TIME_BUDGET = 300.0  # type: ignore[attr-defined]
    mod.VOCAB_SIZE = vocab  # type: ignore[attr-defined]

    class Tokenizer:
        vocab_size = vocab
        bos_id = 0

        @classmethod
        def load(cls) -> Tokenizer:
            return cls()

    def make_dataloader(tokenizer, batch_size, seq_len_, split):  # noqa: ANN001
        # a few distinct batches, rotated: random data, never zeros (zeros can run faster)
        pool = [torch.randint(0, vocab, (batch_size, seq_len_ + 1), device=device) for _ in range(4)]
        i = 0
        while True:
            b = pool[i % len(pool)]
            i += 1
            yield b[:, :-1], b[:, 1:], 1

    def hand_off(model, batch_size):  # noqa: ANN001
        raise RuntimeError("synthetic mode does not evaluate")

    mod.Tokenizer = Tokenizer  # type: ignore[attr-defined]
    mod.make_dataloader = make_dataloader  # type: ignore[attr-defined]
    mod.hand_off = hand_off  # type: ignore[attr-defined]
    return mod


def load_train(overrides: dict[str, object]) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("gpt_train", TRAIN)
    assert spec and spec.loader
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    for k, v in overrides.items():
        assert hasattr(train, k), f"train.py has no constant {k}"
        setattr(train, k, v)
    return train


def synthetic_one(variant: str, steps: int, profile: bool, out: Path) -> dict[str, object]:
    t_start = time.time()
    import torch

    sys.modules["prepare"] = synthetic_prepare(2048, 8192)
    train = load_train(VARIANTS[variant])
    device = torch.device("cuda")
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = True
    tok = train.Tokenizer.load()
    model = train.build_model(tok.vocab_size, device)
    optimizers = train.build_optimizers(model)
    train_model = model
    if train.COMPILE == "model":
        train_model = torch.compile(model, dynamic=False)
    elif train.COMPILE == "blocks":
        model.compile_regions()
    loader = train.make_dataloader(tok, train.DEVICE_BATCH_SIZE, train.MAX_SEQ_LEN, "train")
    grad_accum = train.TOTAL_BATCH_SIZE // (train.DEVICE_BATCH_SIZE * train.MAX_SEQ_LEN)
    autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    t_setup = time.time() - t_start

    opt_events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []

    def step(progress: float, time_opt: bool = False) -> float:
        for _ in range(grad_accum):
            x, y, _ = next(loader)
            with autocast:
                loss = train_model(x, y)
            (loss / grad_accum).backward()
        train.apply_schedules(optimizers, progress)
        if time_opt:
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
        for opt in optimizers:
            opt.step()
        if time_opt:
            b.record()
            opt_events.append((a, b))
        model.zero_grad(set_to_none=True)
        return loss.item()

    t0 = time.time()
    for _ in range(train.UNTIMED_STEPS):
        step(0.0)
    torch.cuda.synchronize()
    t_warm = time.time() - t0

    dts = []
    losses = []
    for i in range(steps):
        torch.cuda.synchronize()
        t = time.time()
        losses.append(step(i / steps * 0.5, time_opt=True))
        dts.append(time.time() - t)
    opt_ms = statistics.median(a.elapsed_time(b) for a, b in opt_events)
    dt = statistics.median(dts)
    tok_s = train.TOTAL_BATCH_SIZE / dt
    peak = train.gpu_peak_flops(torch.cuda.get_device_name())
    flops = model.num_flops_per_token()
    result: dict[str, object] = {
        "variant": variant,
        "overrides": VARIANTS[variant],
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "attention": model.backend,
        "device_batch_size": train.DEVICE_BATCH_SIZE,
        "grad_accum": grad_accum,
        "num_params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "flops_per_token": flops,
        "step_s_median": dt,
        "step_s_min": min(dts),
        "step_s_max": max(dts),
        "tokens_per_s": tok_s,
        "mfu_percent": 100 * flops * tok_s / peak if peak else 0.0,
        "steps_in_300s": int(300 / dt),
        "optimizer_ms_median": opt_ms,
        "peak_mem_gb": torch.cuda.max_memory_allocated() / 1e9,
        "peak_reserved_gb": torch.cuda.max_memory_reserved() / 1e9,
        "setup_s": t_setup,
        "untimed_steps": train.UNTIMED_STEPS,
        "untimed_steps_s": t_warm,
        "loss_first_last": [losses[0], losses[-1]],
    }
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(2):
                step(0.3)
            torch.cuda.synchronize()
        try:
            table = prof.key_averages().table(
                sort_by="self_device_time_total", row_limit=40, max_name_column_width=90
            )
        except Exception:  # older torch names the column after CUDA
            table = prof.key_averages().table(
                sort_by="self_cuda_time_total", row_limit=40, max_name_column_width=90
            )
        (out / f"profile_{variant}.txt").write_text(table)
        result["profile_top"] = summarize_profile(prof)
    return result


def summarize_profile(prof) -> dict[str, float]:  # noqa: ANN001
    """CUDA milliseconds per step by kernel family (2 profiled steps)."""
    fam: dict[str, float] = {}
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0.0)
        if us <= 0 or e.key.startswith("ProfilerStep"):
            continue
        name = e.key.lower()
        if "flex" in name or "attention" in name or "fmha" in name or "flash" in name:
            k = "attention"
        elif any(s in name for s in ("gemm", "nvjet", "cutlass", "sm90_xmma", "matmul", "mm_", "bmm")):
            k = "matmul"
        elif "adam" in name or "foreach" in name:
            k = "adamw"
        elif name.startswith("triton"):
            k = "triton_fused"
        else:
            k = "other"
        fam[k] = fam.get(k, 0.0) + us / 1000 / 2
    return dict(sorted(fam.items(), key=lambda kv: -kv[1]))


def run_synthetic(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.variants.split(","):
        # "NAME" starts from an empty compile cache (a cold start); "NAME-warm" reuses NAME's cache,
        # as a rerun of an unchanged file on the same machine would
        variant = name.removesuffix("-warm")
        cache = Path("/tmp/gpt_bench_cache") / variant
        if not name.endswith("-warm"):
            shutil.rmtree(cache, ignore_errors=True)
        env = dict(
            os.environ,
            TORCHINDUCTOR_CACHE_DIR=str(cache / "inductor"),
            TRITON_CACHE_DIR=str(cache / "triton"),
        )
        path = out / f"synthetic_{name}.json"
        cmd = [
            sys.executable,
            __file__,
            "synthetic-one",
            "--variant",
            variant,
            "--steps",
            str(args.steps),
            "--out",
            str(out),
            "--name",
            name,
        ]
        if args.profile and name == "default":
            cmd.append("--profile")
        t = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
        (out / f"synthetic_{name}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0 or not path.exists():
            print(f"{name}: FAILED (exit {proc.returncode}); tail:\n{proc.stderr[-3000:]}")
            results.append({"variant": name, "error": proc.stderr[-3000:]})
            continue
        r = json.loads(path.read_text())
        r["child_wall_s"] = time.time() - t
        r["variant"] = name
        results.append(r)
        print(
            f"{name:12s} {r['tokens_per_s'] / 1e6:6.3f} M tok/s  mfu {r['mfu_percent']:5.1f}%  "
            f"step {r['step_s_median'] * 1000:6.1f} ms  opt {r['optimizer_ms_median']:5.1f} ms  "
            f"peak {r['peak_mem_gb']:5.1f} GB  warm-up {r['untimed_steps_s']:5.1f} s  "
            f"setup {r['setup_s']:4.1f} s  loss {r['loss_first_last']}",
            flush=True,
        )
        if "profile_top" in r:
            print("  profile ms/step:", {k: round(v, 1) for k, v in r["profile_top"].items()})
    (out / "synthetic.json").write_text(json.dumps(results, indent=2))
    return 0


# ---------------------------------------------------------------------------------------------
# runs mode: the real train.py, end to end
# ---------------------------------------------------------------------------------------------

SUMMARY_LINE = re.compile(r"^([a-z_A-Z0-9]+):\s+(\S+)\s*$")


EVALUATION = "@@autoresearch evaluation"  # prepare.evaluate_program's result line


def parse_summary(text: str) -> dict[str, float | str]:
    """The last `---` block of a log (the same contract harness.night.metrics parses)."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not starts:
        return {}
    out: dict[str, float | str] = {}
    for line in lines[starts[-1] + 1 :]:
        m = SUMMARY_LINE.match(line.strip())
        if not m:
            continue
        try:
            out[m.group(1)] = float(m.group(2))
        except ValueError:
            out[m.group(1)] = m.group(2)
    return out


def run_runs(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        PYTHONUNBUFFERED="1",
        AUTORESEARCH_DEVICE="cuda",
        AUTORESEARCH_DATASET=args.dataset,
        AUTORESEARCH_TIME_BUDGET=str(args.budget),
    )
    results = []
    for i in range(args.n):
        log = out / f"run{i}.log"
        t = time.time()
        with open(log, "w") as f:
            proc = subprocess.run(
                [sys.executable, "train.py"],
                cwd=TRAIN.parent,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=args.timeout,
            )
        wall = time.time() - t
        text = log.read_text()
        summary = parse_summary(text)
        # run by hand, train.py's hand_off runs prepare's evaluator right away; its result line
        # holds val_bpb (the train file's own summary does not)
        for line in text.splitlines():
            if line.startswith(EVALUATION):
                result = json.loads(line[len(EVALUATION) :])
                summary.update(val_bpb=result.get("val_bpb", float("nan")), eval_s=result.get("seconds", 0.0))
        r = {"run": i, "exit_code": proc.returncode, "wall_s": wall, "summary": summary}
        results.append(r)
        (out / "runs.json").write_text(json.dumps(results, indent=2))
        print(f"run {i}: exit {proc.returncode} wall {wall:.1f}s {summary}", flush=True)
    bpbs = [float(r["summary"]["val_bpb"]) for r in results if "val_bpb" in r["summary"]]  # type: ignore[index,arg-type]
    if bpbs:
        print(
            f"val_bpb: {bpbs} mean {statistics.mean(bpbs):.6f} spread {max(bpbs) - min(bpbs):.6f}"
            + (f" stdev {statistics.stdev(bpbs):.6f}" if len(bpbs) > 1 else "")
        )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("synthetic")
    s.add_argument("--out", required=True)
    s.add_argument("--variants", default="default,sdpa,b64")
    s.add_argument("--steps", type=int, default=30)
    s.add_argument("--profile", action="store_true")
    s.add_argument("--timeout", type=float, default=400)
    one = sub.add_parser("synthetic-one")
    one.add_argument("--variant", required=True)
    one.add_argument("--steps", type=int, default=30)
    one.add_argument("--profile", action="store_true")
    one.add_argument("--out", required=True)
    one.add_argument("--name", default=None)
    r = sub.add_parser("runs")
    r.add_argument("--out", required=True)
    r.add_argument("--n", type=int, default=3)
    r.add_argument("--dataset", default="climbmix")
    r.add_argument("--budget", type=float, default=300)
    r.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()
    if args.mode == "synthetic":
        return run_synthetic(args)
    if args.mode == "synthetic-one":
        out = Path(args.out)
        result = synthetic_one(args.variant, args.steps, args.profile, out)
        (out / f"synthetic_{args.name or args.variant}.json").write_text(json.dumps(result, indent=2))
        return 0
    return run_runs(args)


if __name__ == "__main__":
    sys.exit(main())
