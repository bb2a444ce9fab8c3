"""One night on several GPUs (BENCHMARKS.md, "One night on many GPUs"): attempts per hour with
`--gpus` on one GPU against two (or four), the local backend (no Ray).

    python bench/bench_swarm.py --gpus 0 --seconds 420 --budget 30 --out OUT/one
    python bench/bench_swarm.py --gpus 0,1 --seconds 420 --budget 30 --out OUT/two

Each call copies this project (constants.py, prepare/, experiments/, program.md, pyproject.toml)
into a fresh git repository, runs `autoresearch run --tag swarm --gpus LIST --dataset arithmetic
--budget B --agent search --judge strict --baseline-runs 1` there for `--seconds` of wall time,
(the dataset is prepared before the window), then stops it with Ctrl-C (every worker logs its attempt in flight as `interrupted`) and reads
the family's merged ledger (results/swarm.tsv) and the workers' attempt records:

- attempts/hour: rows past the baselines that were judged (not interrupted), per hour of the window;
- runs/hour: rows that ran (a commit, not interrupted), baselines included;
- duplicate runs across workers: novelty keys that ran on more than one worker (must be 0);
- refused repeats: `duplicate of` rows (never run);
- adoptions: `adopt <worker> #n` rows, and how many were kept (a keep on one worker reaching another).

It prints one JSON object (also written to OUT/summary.json) and copies the TSVs to OUT.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
TAG = "swarm"


def _rows(path: Path) -> list[dict[str, str]]:
    lines = path.read_text().splitlines() if path.exists() else []
    if not lines:
        return []
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


def _repo(root: Path) -> Path:
    repo = root / "project"
    repo.mkdir()
    for name in ("constants.py", "program.md", "pyproject.toml"):
        shutil.copy2(PROJECT / name, repo / name)
    for name in ("prepare", "experiments"):
        shutil.copytree(PROJECT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__", "results"))
    (repo / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
    env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="b@b")  # fmt: skip
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    return repo


def summarise(repo: Path, seconds: float, gpus: str) -> dict[str, object]:
    rows = _rows(repo / "results" / f"{TAG}.tsv")
    judged = [r for r in rows if r["description"] != "baseline" and r.get("reason") != "interrupted"]
    ran = [r for r in rows if r["commit"] != "0000000" and r.get("reason") != "interrupted"]
    keys: dict[str, set[str]] = {}
    for r in ran:
        record = repo / "results" / f"{TAG}-{r['worker']}" / "attempts" / f"{r['n']}.json"
        try:
            key = json.loads(record.read_text()).get("key") or ""
        except (OSError, ValueError):
            key = ""
        if key and r["description"] != "baseline":
            keys.setdefault(key, set()).add(r["worker"])
    adopted = [r for r in rows if r.get("agent") == "adopt"]
    hours = seconds / 3600
    return {
        "gpus": gpus,
        "seconds": seconds,
        "workers": sorted({r["worker"] for r in rows}),
        "rows": len(rows),
        "attempts_judged": len(judged),
        "attempts_per_hour": round(len(judged) / hours, 1),
        "runs": len(ran),
        "runs_per_hour": round(len(ran) / hours, 1),
        "interrupted": sum(1 for r in rows if r.get("reason") == "interrupted"),
        "duplicate_runs_across_workers": sum(1 for ws in keys.values() if len(ws) > 1),
        "refused_repeats": sum(1 for r in rows if r.get("reason", "").startswith("duplicate of")),
        "adoptions": len(adopted),
        "adoptions_kept": sum(1 for r in adopted if r["status"] == "keep"),
        "best": min((float(r["val_bpb"]) for r in rows if r["status"] == "keep"), default=None),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", required=True, help="e.g. 0 or 0,1")
    p.add_argument("--seconds", type=float, default=420, help="wall-clock window of the night")
    p.add_argument("--budget", type=float, default=30, help="training seconds per run")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more flags for autoresearch run")
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bench_swarm_"))
    repo = _repo(root)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
               AUTORESEARCH_CACHE=os.environ.get("AUTORESEARCH_CACHE", str(root / "cache")))  # fmt: skip
    argv = [sys.executable, "-m", "harness.commands.main", "run", "--tag", TAG, "--gpus", a.gpus,
            "--dataset", "arithmetic", "--budget", str(a.budget), "--agent", "search", "--judge", "strict",
            "--baseline-runs", "1", *a.extra]  # fmt: skip
    with open(a.out / "night.log", "w") as log:
        # The dataset first, outside the window (the workers would otherwise each wait for it).
        prep = [sys.executable, "-m", "harness.commands.main", "prepare", "--dataset", "arithmetic"]
        subprocess.run(prep, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
        started = time.monotonic()
        proc = subprocess.Popen(argv, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            proc.wait(timeout=a.seconds)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)
        window = time.monotonic() - started
    summary = summarise(repo, window, a.gpus)
    summary["exit"] = proc.returncode
    summary["command"] = " ".join(argv[1:])
    for tsv in (repo / "results").glob("*.tsv"):
        shutil.copy2(tsv, a.out / tsv.name)
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
