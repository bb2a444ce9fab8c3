"""A seed-only change to the real gpt experiment, judged through the real loop on CPU.

Copies this checkout's constants.py, prepare/, program.md and experiments/gpt into a fresh
git repo under a temp dir (its experiment.toml as shipped: val_bpb from prepare's evaluator,
with causality probes), then runs

    autoresearch run --tag seed --experiment gpt --device cpu --dataset arithmetic
                     --budget SECONDS --agent replay:<one reply: SEED 1337 -> 42> [--judge J]

and prints the TSV. With the default noise-aware judge the baseline runs 3 times and the
seed change is kept only if it beats the measured spread.

Run:  python bench/seed_demo.py [--budget 5] [--judge noise|strict]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=5.0)
    parser.add_argument("--judge", default="noise", choices=["noise", "strict"])
    parser.add_argument("--seed", default="42")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seed-demo-") as tmp:
        repo = Path(tmp) / "repo"
        repo.mkdir()
        for name in ("constants.py", "program.md", "pyproject.toml"):
            if (ROOT / name).exists():
                shutil.copy2(ROOT / name, repo / name)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(ROOT / "prepare", repo / "prepare", ignore=ignore)
        shutil.copytree(ROOT / "experiments" / "gpt", repo / "experiments" / "gpt", ignore=ignore)
        (repo / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
        env = dict(os.environ, AUTORESEARCH_CACHE=str(Path(tmp) / "cache"))
        env.setdefault("GIT_AUTHOR_NAME", "demo")
        env.setdefault("GIT_AUTHOR_EMAIL", "demo@example.com")
        env.setdefault("GIT_COMMITTER_NAME", "demo")
        env.setdefault("GIT_COMMITTER_EMAIL", "demo@example.com")
        for cmd in (
            ["git", "init", "-q", "-b", "main"],
            ["git", "add", "-A"],
            ["git", "commit", "-q", "-m", "init"],
        ):
            subprocess.run(cmd, cwd=repo, check=True, env=env)
        train = (repo / "experiments" / "gpt" / "train.py").read_text()
        line = next(ln for ln in train.splitlines() if ln.startswith("SEED = "))
        reply = (
            f"Description: random seed to {args.seed}\nexperiments/gpt/train.py\n<<<<<<< SEARCH\n{line}\n"
            f"=======\nSEED = {args.seed}\n>>>>>>> REPLACE\n"
        )
        replay = Path(tmp) / "seed.jsonl"
        replay.write_text(json.dumps({"reply": reply}) + "\n")
        cmd = [sys.executable, "-m", "harness.commands.main", "run", "--tag", "seed", "--experiment", "gpt", "--device", "cpu",
               "--dataset", "arithmetic", "--budget", f"{args.budget:g}", "--agent", f"replay:{replay}",
               "--judge", args.judge]  # fmt: skip
        done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            for log in sorted((repo / "results" / "seed" / "runs").glob("*.log")):
                print(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]))
            return done.returncode
        tsv = (repo / "results" / "seed.tsv").read_text().splitlines()
        header = tsv[0].split("\t")
        keep = ("commit", "val_bpb", "status", "description", "runs", "spread", "reason")
        print("\t".join(keep))
        for line in tsv[1:]:
            row = dict(zip(header, line.split("\t"), strict=False))
            print("\t".join(row.get(k, "") for k in keep))
    return 0


if __name__ == "__main__":
    sys.exit(main())
