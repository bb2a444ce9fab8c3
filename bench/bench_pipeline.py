"""GPU-idle share of a night with a slow LLM, pipelined vs not (BENCHMARKS.md, "Pipelining").

Sets up a throwaway git repo holding a toy experiment whose train.py stands for the GPU:
it sleeps --train-seconds (30 s by default), printing wall-clock T_START / T_END, then a
summary block. A loopback fake Anthropic server (tests/fakes/llm_servers.py) answers every
request after --llm-seconds (60 s). The real CLI (`autoresearch run --agent claude`, the
real anthropic SDK) runs the night; the GPU-idle share is

    1 - (time covered by runs) / (first run start .. last run end)

reported in total and in steady state (from the start of the first proposed experiment on:
the very first proposal cannot arrive before the model's latency has passed once). Replies
alternate between an edit that improves the metric (kept, so queued proposals become stale
and are re-applied to the new best) and one that does not (discarded).

    python bench/bench_pipeline.py                      # both modes, in parallel (~7 min)
    python bench/bench_pipeline.py --mode pipelined --experiments 10
    python bench/bench_pipeline.py --llm-seconds 6 --train-seconds 3   # quick check
    python bench/bench_pipeline.py --mode pipelined --judge noise       # 3 baseline runs hide the warm-up
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes.llm_servers import FakeLLM, Step, reply  # noqa: E402

N_VARS = 64
REL = "experiments/toy/train.py"


def train_source(train_seconds: float) -> str:
    lines = ["import time", ""]
    lines += [f"K{i:02d} = 0" for i in range(N_VARS)]  # kept edits set these: each lowers val_bpb
    lines += [f"D{i:02d} = 0" for i in range(N_VARS)]  # discarded edits set these: no effect
    lines += [
        f"SLEEP = {train_seconds}",
        "",
        'print(f"T_START {time.time()}", flush=True)',
        "time.sleep(SLEEP)  # the GPU at work",
        "val = 1.0 - 0.001 * (" + " + ".join(f"K{i:02d}" for i in range(N_VARS)) + ")",
        'print(f"T_END {time.time()}", flush=True)',
        'print("---")',
        'print(f"val_bpb:          {val:.6f}")',
        'print("peak_vram_mb:     1024.0")',
        "",
    ]
    return "\n".join(lines)


def make_repo(root: Path, train_seconds: float) -> Path:
    repo = root / "repo"
    exp = repo / "experiments" / "toy"
    exp.mkdir(parents=True)
    (exp / "train.py").write_text(train_source(train_seconds))
    (exp / "experiment.toml").write_text(
        'name = "toy"\nmutable = ["train.py"]\nrun = "python train.py"\nmetric = "val_bpb"\n'
        f'direction = "minimize"\nbudget_seconds = {train_seconds}\ntimeout_seconds = {train_seconds * 4 + 60}\n'
        'dataset = "none"\n'
    )
    (repo / "program.md").write_text("Make val_bpb lower. (benchmark)\n")
    (repo / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.com"}
    env.update(GIT_COMMITTER_NAME="bench", GIT_COMMITTER_EMAIL="b@example.com")
    for cmd in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "bench toy"]):
        subprocess.run(["git", *cmd], cwd=repo, env=env, check=True)
    return repo


class Replies:
    """Thread-safe: the k-th request gets edit k (every other one improves the metric)."""

    def __init__(self, llm_seconds: float) -> None:
        self.k = 0
        self.llm_seconds = llm_seconds
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Step:
        with self.lock:
            k = self.k
            self.k += 1
        var = f"K{k % N_VARS:02d}" if k % 2 == 0 else f"D{k % N_VARS:02d}"
        text = (
            f"Description: set {var}\n{REL}\n<<<<<<< SEARCH\n{var} = 0\n=======\n{var} = 1\n>>>>>>> REPLACE\n"
        )
        return reply(text, delay=self.llm_seconds)


def run_night(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    experiments = args.experiments if mode == "pipelined" else args.sequential_experiments
    with tempfile.TemporaryDirectory(prefix=f"bench-pipeline-{mode}-") as tmp:
        repo = make_repo(Path(tmp), args.train_seconds)
        with FakeLLM(responder=Replies(args.llm_seconds)) as fake:
            env = {
                **os.environ,
                "ANTHROPIC_API_KEY": "sk-ant-bench-not-a-real-key",
                "ANTHROPIC_BASE_URL": fake.anthropic_url,
                "AUTORESEARCH_PIPELINE_DEPTH": "auto" if mode == "pipelined" else "0",
                "AUTORESEARCH_CACHE": str(Path(tmp) / "cache"),
                "GIT_AUTHOR_NAME": "bench",
                "GIT_AUTHOR_EMAIL": "b@example.com",
                "GIT_COMMITTER_NAME": "bench",
                "GIT_COMMITTER_EMAIL": "b@example.com",
            }
            cmd = [sys.executable, "-m", "harness.commands.main", "run", "--device", "cpu", "--tag", "bench"]
            cmd += ["--agent", "claude", "--judge", args.judge, "--max-experiments", str(experiments)]
            started = time.time()
            out = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
            wall = time.time() - started
            requests = len(fake.completion_requests())
        if out.returncode != 0:
            raise SystemExit(
                f"{mode}: autoresearch run failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
            )
        runs = intervals(repo / "results" / "bench" / "runs")
        statuses = [
            line.split("\t")[3] for line in (repo / "results" / "bench.tsv").read_text().splitlines()[1:]
        ]
        reapplied = out.stdout.count("re-applied cleanly")
        dropped = out.stdout.count("did not apply to the new best")
    return summarize(mode, runs, wall, requests, statuses, reapplied, dropped, args)


def intervals(runs_dir: Path) -> list[tuple[float, float]]:
    out = []
    for log in runs_dir.glob("*.log"):
        lines = log.read_text().splitlines()
        start = [float(x.split()[1]) for x in lines if x.startswith("T_START")]
        end = [float(x.split()[1]) for x in lines if x.startswith("T_END")]
        if start and end:
            out.append((start[0], end[0]))
    return sorted(out)


def idle_share(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """(idle share, idle seconds) from the first run's start to the last run's end."""
    if len(runs) < 2:
        return 0.0, 0.0
    window = runs[-1][1] - runs[0][0]
    busy, cursor = 0.0, runs[0][0]
    for start, end in runs:
        start = max(start, cursor)
        if end > start:
            busy += end - start
            cursor = end
    return (window - busy) / window, window - busy


def summarize(
    mode: str,
    runs: list[tuple[float, float]],
    wall: float,
    requests: int,
    statuses: list[str],
    reapplied: int,
    dropped: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    total, total_idle = idle_share(runs)
    steady, steady_idle = idle_share(runs[1:])  # from the first proposed experiment on
    gaps = [b[0] - a[1] for a, b in zip(runs, runs[1:], strict=False)]
    return {
        "mode": mode,
        "llm_seconds": args.llm_seconds,
        "train_seconds": args.train_seconds,
        "runs": len(runs),
        "rows": len(statuses),
        "kept": statuses.count("keep") - 1,
        "llm_requests": requests,
        "reapplied": reapplied,
        "dropped": dropped,
        "wall_s": round(wall, 1),
        "idle_share_total": round(total, 4),
        "idle_s_total": round(total_idle, 1),
        "idle_share_steady": round(steady, 4),
        "idle_s_steady": round(steady_idle, 1),
        "max_gap_s": round(max(gaps), 2) if gaps else 0.0,
        "median_gap_s": round(sorted(gaps)[len(gaps) // 2], 2) if gaps else 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["both", "pipelined", "sequential"], default="both")
    p.add_argument("--llm-seconds", type=float, default=60.0)
    p.add_argument("--train-seconds", type=float, default=30.0)
    p.add_argument("--experiments", type=int, default=10, help="attempts past the baseline, pipelined")
    p.add_argument(
        "--sequential-experiments", type=int, default=4, help="attempts past the baseline, not pipelined"
    )
    p.add_argument("--judge", choices=["strict", "noise"], default="strict", help="strict: one baseline run")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    modes = ["pipelined", "sequential"] if args.mode == "both" else [args.mode]
    results: dict[str, dict[str, Any]] = {}

    def one(mode: str) -> None:
        results[mode] = run_night(mode, args)

    threads = [threading.Thread(target=one, args=(m,)) for m in modes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(
        "| mode | runs | LLM requests | kept | re-applied | dropped | wall s | idle total | idle steady | max gap s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for mode in modes:
        r = results[mode]
        print(
            f"| {mode} | {r['runs']} | {r['llm_requests']} | {r['kept']} | {r['reapplied']} | {r['dropped']} "
            f"| {r['wall_s']} | {100 * r['idle_share_total']:.1f} % ({r['idle_s_total']} s) "
            f"| {100 * r['idle_share_steady']:.1f} % ({r['idle_s_steady']} s) | {r['max_gap_s']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
