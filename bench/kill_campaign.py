"""Kill -9 campaign: random kill points across every phase of a night, each followed by --resume.

Each trial makes a fresh git repo holding the toy experiment (a train file whose val_bpb is a
constant plus a little noise, so the noise judge asks for repeats now and then) with a bare
remote, runs a first night to its baseline and publishes it (so the branch tracks the remote
and every later night publishes when it ends), then starts `autoresearch run --resume` with
one kill -9 armed (bench/killpoint.py): a phase (lock taken, proposal, commit, journal, run,
judge repeats, row append, keep, revert, publish), which call of it, and how (before, after,
during, a torn row write; sometimes the harness's whole process group at once, like a power
cut, which leaves git's lock files behind). Then `--resume` without a kill must finish the
night, and the trial checks:

  * 0 rows lost or duplicated: one row per reply, in order, numbered 0.. without gaps
    (an attempt in flight when the kill came is a crash row `interrupted`, never twice);
  * the branch head is the best kept row, and so is refs/autoresearch/<tag>/best;
  * no pending.json, no git lock file, and no orphan process (nothing runs from the trial's folder).

    python bench/kill_campaign.py --trials 100 [--seed 18] [--jobs N] [--keep DIR]

prints one line per trial and a table per phase; exit 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from killpoint import MODES, PHASES  # noqa: E402

TOY = ROOT / "tests" / "toy" / "const"
TAG = "k"
REPLIES = 5
PY = sys.executable

NOISY_TRAIN = '''"""Toy train file for the kill campaign: val_bpb is VAL_BPB plus a little noise."""
import os, random, time
VAL_BPB = 1.000000
SLEEP = 0.05
print(f"started pid={os.getpid()}", flush=True)
for step in range(4):
    print(f"step {step:05d} ({25.0 * (step + 1):.1f}%) | loss: {3.0 * VAL_BPB:.6f}", flush=True)
    time.sleep(SLEEP)
print("---")
print(f"val_bpb:          {VAL_BPB + random.gauss(0.0, 0.004):.6f}")
print("training_seconds: 0.2")
print("peak_vram_mb:     1024.0")
print("num_steps:        4")
'''


@dataclass
class Trial:
    index: int
    phase: str
    call: int
    mode: str
    delay: float
    powercut: bool
    killed: bool = False
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def label(self) -> str:
        cut = " powercut" if self.powercut else ""
        return f"{self.phase}#{self.call} {self.mode}{cut}"


def _git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def _env(base: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        AUTORESEARCH_CACHE=str(base / "cache"),
        GIT_AUTHOR_NAME="campaign", GIT_AUTHOR_EMAIL="c@example.com",
        GIT_COMMITTER_NAME="campaign", GIT_COMMITTER_EMAIL="c@example.com",
    )  # fmt: skip
    return env


def _replies(rng: random.Random) -> list[str]:
    """Whole-file replies (each applies whatever was kept before it): some clearly better (keeps),
    most close to the best (discards, and repeats of the noise judge), a crash, a bad edit."""
    out = []
    best = 1.0
    for i in range(REPLIES):
        kind = rng.random()
        if kind < 0.12:
            out.append(
                f"Description: attempt {i}\nexperiments/toy/train.py\n<<<<<<< SEARCH\nNOT THERE\n=======\nX\n>>>>>>> REPLACE\n"
            )
            continue
        if kind < 0.4:
            best -= rng.uniform(0.03, 0.08)
            value = best
        else:
            value = best + rng.uniform(-0.006, 0.01)
        text = NOISY_TRAIN.replace("VAL_BPB = 1.000000", f"VAL_BPB = {value:.6f}")
        if kind > 0.9:
            text += "raise SystemExit(3)\n"
        out.append(f"Description: attempt {i}\n```python\n{text}```\n")
    return out


def _setup(base: Path, rng: random.Random) -> tuple[Path, Path, dict[str, str]]:
    repo, remote = base / "repo", base / "remote.git"
    (repo / "experiments" / "toy").mkdir(parents=True)
    shutil.copy2(TOY / "experiment.toml", repo / "experiments" / "toy" / "experiment.toml")
    (repo / "experiments" / "toy" / "train.py").write_text(NOISY_TRAIN)
    (repo / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
    _git(base, "init", "-q", "--bare", str(remote))
    _git(repo.parent, "init", "-q", "-b", "main", str(repo))
    _git(repo, "add", "-A")
    _git(repo, "-c", "user.name=c", "-c", "user.email=c@e", "commit", "-q", "-m", "initial")
    _git(repo, "remote", "add", "origin", str(remote))
    replies = base / "replies.jsonl"
    replies.write_text("".join(json.dumps({"reply": r}) + "\n" for r in _replies(rng)))
    env = _env(base)
    empty = base / "empty.jsonl"
    empty.write_text("")
    first = _cli(repo, env, "run", "--agent", f"replay:{empty}")
    if first.returncode != 0:
        raise RuntimeError(f"setup night failed: {first.stderr[-500:]}")
    pub = _cli(repo, env, "publish", "--tag", TAG, "--remote", "origin", tag=False)
    if pub.returncode != 0:
        raise RuntimeError(f"setup publish failed: {pub.stderr[-500:]}")
    return repo, replies, env


def _cli(repo: Path, env: dict[str, str], *args: str, tag: bool = True, prefix: list[str] | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess[str]:  # fmt: skip
    argv = list(args) + (["--tag", TAG, "--device", "cpu", "--baseline-runs", "2"] if tag else [])
    cmd = [PY, *(prefix or ["-m", "harness.commands.main"]), *argv]
    return subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=timeout,
                          start_new_session=True)  # fmt: skip


def run_trial(trial: Trial, base: Path, rng: random.Random) -> Trial:
    start = time.monotonic()
    repo, replies, env = _setup(base, rng)
    killpoint = [
        str(ROOT / "bench" / "killpoint.py"),
        trial.phase,
        str(trial.call),
        trial.mode,
        f"{trial.delay:.3f}",
    ]
    killpoint += (["powercut"] if trial.powercut else []) + ["--"]
    armed = _cli(repo, env, "run", "--agent", f"replay:{replies}", "--resume", prefix=killpoint)
    trial.killed = armed.returncode == -9
    if armed.returncode not in (0, -9):
        trial.problems.append(f"armed run exited {armed.returncode}: {armed.stderr.strip()[-300:]}")
    time.sleep(0.2)
    resumed = _cli(repo, env, "run", "--agent", f"replay:{replies}", "--resume")
    if resumed.returncode != 0:
        trial.problems.append(f"--resume exited {resumed.returncode}: {resumed.stderr.strip()[-400:]}")
    else:
        trial.problems += check(repo, replies)
    trial.seconds = time.monotonic() - start
    return trial


def check(repo: Path, replies: Path) -> list[str]:
    problems = []
    lines = (repo / "results" / f"{TAG}.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, ln.split("\t"), strict=False)) for ln in lines[1:]]
    if [r["n"] for r in rows] != [str(i) for i in range(len(rows))]:
        problems.append(f"rows numbered {[r['n'] for r in rows]}")
    wanted = [
        json.loads(ln)["reply"].split("\n", 1)[0].removeprefix("Description: ")
        for ln in replies.read_text().splitlines()
    ]
    attempts = [r["description"] for r in rows if r["description"] != "baseline"]
    if attempts != wanted:
        problems.append(f"attempt rows {attempts} != replies {wanted} (lost or duplicated)")
    baselines = [r for r in rows if r["description"] == "baseline"]
    if (
        not baselines
        or baselines[-1]["status"] != "keep"
        or any(r["status"] != "crash" or r["reason"] != "interrupted" for r in baselines[:-1])
    ):
        problems.append(f"baselines {[(r['status'], r['reason']) for r in baselines]}")
    keeps = [r for r in rows if r["status"] == "keep"]
    head = _git(repo, "rev-parse", "--short=7", f"autoresearch/{TAG}")
    best = _git(repo, "rev-parse", "--short=7", f"refs/autoresearch/{TAG}/best")
    if not keeps or head != keeps[-1]["commit"] or best != head:
        problems.append(f"branch {head}, best ref {best}, last keep {keeps[-1]['commit'] if keeps else None}")
    if (repo / "results" / TAG / "pending.json").exists():
        problems.append("pending.json left")
    locks = [str(p.relative_to(repo)) for p in (repo / ".git").rglob("*.lock")]
    if locks:
        problems.append(f"git locks left: {locks}")
    orphans = _orphans(repo)
    if orphans:
        problems.append(f"orphan processes: {orphans}")
        for p in orphans:
            with contextlib.suppress(psutil.Error, OSError):
                psutil.Process(p).kill()
    return problems


def _orphans(repo: Path) -> list[int]:
    found = []
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if (
                p.pid != os.getpid()
                and Path(p.cwd()).is_relative_to(repo)
                and p.status() != psutil.STATUS_ZOMBIE
            ):
                found.append(p.pid)
    return found


# How often each phase is reached in the armed night (5 replies after the baseline), roughly.
CALLS = {"lock": 1, "proposal": 5, "commit": 4, "journal": 8, "run": 5, "repeat": 2, "append": 5,
         "keep": 2, "revert": 3, "publish": 1}  # fmt: skip


def plan(trials: int, rng: random.Random) -> list[Trial]:
    """Trials spread evenly over the phases (shuffled), each with a random call, mode and delay."""
    phases = [list(PHASES)[i % len(PHASES)] for i in range(trials)]
    rng.shuffle(phases)
    out = []
    for i, phase in enumerate(phases):
        modes = [m for m in MODES if m != "torn" or phase == "append"]
        calls = CALLS.get(phase, 3)
        out.append(
            Trial(
                i, phase, rng.randint(1, calls), rng.choice(modes), rng.uniform(0.0, 0.15), rng.random() < 0.3
            )
        )
    return out


def campaign(trials: int, seed: int, keep: Path | None = None, out=print, jobs: int = 1) -> list[Trial]:  # type: ignore[no-untyped-def]
    """Run the planned trials, `jobs` at a time (each in its own folder, with its own random
    stream derived from `seed` and its index, so a trial is the same whatever `jobs` is)."""
    lock = threading.Lock()

    def one(trial: Trial) -> Trial:
        base = Path(tempfile.mkdtemp(prefix=f"kill{trial.index:03d}-", dir=keep))
        try:
            run_trial(trial, base, random.Random(f"{seed}/{trial.index}"))
        except Exception as exc:  # a broken trial is a failure to report, not a crash of the campaign
            trial.problems.append(f"{type(exc).__name__}: {exc}")
        finally:
            if keep is None:
                shutil.rmtree(base, ignore_errors=True)
        status = "ok" if not trial.problems else "FAIL " + " | ".join(trial.problems)
        with lock:
            out(f"trial {trial.index:3d} {trial.label():<28} killed={'yes' if trial.killed else 'no '} "
                f"{trial.seconds:5.1f}s {status}")  # fmt: skip
        return trial

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, plan(trials, random.Random(seed))))


def summary(done: list[Trial]) -> list[str]:
    by_phase = Counter(t.phase for t in done)
    killed = Counter(t.phase for t in done if t.killed)
    failed = Counter(t.phase for t in done if t.problems)
    lines = ["| phase | trials | killed there | failed |", "|---|---|---|---|"]
    for phase in PHASES:
        lines.append(f"| {phase} | {by_phase[phase]} | {killed[phase]} | {failed[phase]} |")
    lines.append(f"| all | {len(done)} | {sum(killed.values())} | {sum(failed.values())} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100)
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--keep", type=Path, default=None, help="keep each trial's folder under DIR")
    ap.add_argument("--jobs", type=int, default=1, help="trials at a time (each is its own night)")
    args = ap.parse_args(argv)
    started = time.monotonic()
    done = campaign(args.trials, args.seed, args.keep, jobs=args.jobs)
    print("\n".join(summary(done)))
    print(
        f"{len(done)} trials in {time.monotonic() - started:.0f} s; {sum(bool(t.problems) for t in done)} failed"
    )
    return 1 if any(t.problems for t in done) else 0


if __name__ == "__main__":
    sys.exit(main())
