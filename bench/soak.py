"""Soak: a night of N experiments (default 1,000) of a fast toy with the LLM agent, pipelining on.

A fresh git repo holds the toy experiment (tests/toy/const: val_bpb is a constant of the train
file). The real `autoresearch run --agent openai` talks to the loopback fake provider
(tests/support/fakes/llm_servers.py), which answers each prompt with an edit of the constant
read from the prompt (now and then a bad edit, a crash or a reply with escape sequences in
its description) after a short delay, so the pipeline proposes while runs go on. The harness
is a subprocess sampled with psutil every half second: resident memory, open file
descriptors, threads, child processes. At the end it compares the first and the last 100
experiments and times reading the TSV (the loop's ledger, `status`, `report --json`).

    python bench/soak.py [--experiments 1000] [--keep DIR]

prints a markdown table for BENCHMARKS.md; exit 1 when the night failed, rows were lost or
duplicated, or memory, descriptors or threads grew (the last 100 experiments against the first:
RSS +20 % or more; more descriptors or threads than the first half's maximum plus 2).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))
from support.fakes.llm_servers import FakeLLM, Step, prompt_text  # noqa: E402

REL = "experiments/toy/train.py"
PY = sys.executable


def responder(seed: int) -> Any:
    rng = random.Random(seed)
    lock = threading.Lock()

    def answer(body: dict[str, Any]) -> Step:
        text = prompt_text(body)
        # the constant as the best version so far has it (the history shows earlier values too)
        found = re.search(r"VAL_BPB = ([0-9.]+)", text[max(0, text.find("# Current files")) :])
        current = found.group(1) if found else "1.000000"
        with lock:
            roll, value = rng.random(), rng.uniform(0.3, 1.2)
        description = f"set VAL_BPB to {value:.6f}"
        if roll < 0.05:
            return Step(
                text=f"Description: a bad edit\n{REL}\n<<<<<<< SEARCH\nNOT THERE\n=======\nX\n>>>>>>> REPLACE\n",
                delay=0.05,
            )
        if roll < 0.10:
            description = f"\x1b[31m{description}\x1b[0m \x1b]0;title\x07 with escapes"
        tail = "\nraise SystemExit(2)" if 0.10 <= roll < 0.15 else ""
        return Step(
            text=f"Description: {description}\n{REL}\n<<<<<<< SEARCH\nVAL_BPB = {current}\n=======\n"
            f"VAL_BPB = {value:.6f}{tail}\n>>>>>>> REPLACE\n",
            delay=0.05,
        )

    return answer


def setup(base: Path) -> Path:
    repo = base / "repo"
    (repo / "experiments").mkdir(parents=True)
    shutil.copytree(ROOT / "tests" / "toy" / "const", repo / "experiments" / "toy",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy2(ROOT / "program.md", repo / "program.md")
    (repo / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=s", "-c", "user.email=s@e", "commit", "-q", "-m", "init"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def sample(proc: psutil.Process, tsv: Path) -> dict[str, Any] | None:
    try:
        rows = tsv.read_bytes().count(b"\n") - 1 if tsv.exists() else 0
        with proc.oneshot():
            return {
                "t": time.monotonic(),
                "rows": rows,
                "rss_mb": proc.memory_info().rss / 2**20,
                "fds": proc.num_fds(),
                "threads": proc.num_threads(),
                "children": len(proc.children()),
                "fd_kinds": _fd_kinds(proc.pid),
            }
    except (psutil.Error, OSError):
        return None


def _fd_kinds(pid: int) -> str:
    """What the open descriptors are, counted by kind (pipe, socket, a file's folder)."""
    kinds: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                kind = target.split(":")[0] if ":[" in target else os.path.basename(os.path.dirname(target))
                kinds[kind] = kinds.get(kind, 0) + 1
    return " ".join(f"{k}={v}" for k, v in sorted(kinds.items()))


def window(samples: list[dict[str, Any]], lo: int, hi: int) -> list[dict[str, Any]]:
    return [s for s in samples if lo <= s["rows"] <= hi]


def timed(cmd: list[str], cwd: Path, env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    return time.monotonic() - start


def soak(experiments: int, base: Path, seed: int = 8) -> tuple[list[str], bool]:
    repo = setup(base)
    tsv = repo / "results" / "soak.tsv"
    with FakeLLM([], responder=responder(seed)) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "OPENAI_"))}
        env.update(
            OPENAI_BASE_URL=server.openai_url, OPENAI_API_KEY="sk-soak", AUTORESEARCH_CACHE=str(base / "cache"),
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        )  # fmt: skip
        cmd = [PY, "-m", "harness.commands.main", "run", "--device", "cpu", "--tag", "soak", "--agent", "openai",
               "--model", "fake-model", "--max-experiments", str(experiments), "--baseline-runs", "3"]  # fmt: skip
        started = time.monotonic()
        harness = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        proc = psutil.Process(harness.pid)
        samples = []
        while harness.poll() is None:
            s = sample(proc, tsv)
            if s is not None:
                samples.append(s)
            time.sleep(0.5)
        err = harness.stderr.read().decode(errors="replace") if harness.stderr else ""
        wall = time.monotonic() - started
    ok = harness.returncode == 0
    lines = tsv.read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, ln.split("\t"), strict=False)) for ln in lines[1:]]
    numbered = [r["n"] for r in rows] == [str(i) for i in range(len(rows))]
    attempts = sum(1 for r in rows if r["description"] != "baseline")
    clean = not any(ch in tsv.read_text() for ch in "\x1b\x07")
    first, last = window(samples, 1, 101), window(samples, attempts - 99, attempts + 1)

    def med(ws: list[dict[str, Any]], key: str) -> float:
        return statistics.median(s[key] for s in ws) if ws else float("nan")

    def top(ws: list[dict[str, Any]], key: str) -> float:
        return max((s[key] for s in ws), default=float("nan"))

    def rate(ws: list[dict[str, Any]]) -> float:
        if len(ws) < 2 or ws[-1]["rows"] == ws[0]["rows"]:
            return float("nan")
        return (ws[-1]["t"] - ws[0]["t"]) / (ws[-1]["rows"] - ws[0]["rows"])

    # Descriptors and threads peak only while a run's pipes, a git command and an LLM call overlap,
    # which half-second samples of the first 100 experiments (~20 s) may all miss: the last 100 are
    # held against the peak of the whole first half. A leak of one per 50 experiments still shows.
    early = window(samples, 1, attempts // 2)
    flat = (
        med(last, "rss_mb") < 1.2 * med(first, "rss_mb")
        and top(last, "fds") <= top(early, "fds") + 2
        and top(last, "threads") <= top(early, "threads") + 2
    )
    sys.path.insert(0, str(ROOT))
    from harness.store.ledger import Ledger

    t0 = time.monotonic()
    Ledger(tsv, verify=True)
    ledger_s = time.monotonic() - t0
    status_s = timed([PY, "-m", "harness.commands.main", "status", "--tag", "soak"], repo, env)
    report_s = timed([PY, "-m", "harness.commands.main", "report", "--tag", "soak", "--json"], repo, env)
    out = [
        f"{attempts} experiments + baseline in {wall / 60:.1f} min ({len(rows)} rows, exit {harness.returncode}); "
        f"rows numbered without gaps: {numbered}; TSV free of escapes: {clean}; TSV {tsv.stat().st_size / 1024:.0f} KiB",
        "",
        "| harness process | first 100 experiments | last 100 experiments |",
        "|---|---|---|",
        f"| resident memory, median | {med(first, 'rss_mb'):.1f} MB | {med(last, 'rss_mb'):.1f} MB |",
        f"| open file descriptors, max | {top(first, 'fds'):.0f} | {top(last, 'fds'):.0f} |",
        f"| threads, max | {top(first, 'threads'):.0f} | {top(last, 'threads'):.0f} |",
        f"| child processes, max | {top(first, 'children'):.0f} | {top(last, 'children'):.0f} |",
        f"| seconds per experiment | {rate(first):.2f} | {rate(last):.2f} |",
        "",
        f"reading the {len(rows)}-row TSV: the loop's ledger (verified against its seal) {ledger_s * 1000:.0f} ms; "
        f"`autoresearch status` {status_s:.2f} s; `autoresearch report --json` {report_s:.2f} s (whole commands, "
        "interpreter start included)",
    ]
    out += ["", "| experiments | RSS median | fds max | threads max | seconds per experiment | descriptors at the fds max |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for lo in range(1, attempts + 1, 100):
        ws = window(samples, lo, lo + 100)
        widest = max(ws, key=lambda s: s["fds"], default=None)
        out.append(f"| {lo}-{lo + 99} | {med(ws, 'rss_mb'):.1f} MB | {top(ws, 'fds'):.0f} | {top(ws, 'threads'):.0f} "
                   f"| {rate(ws):.2f} | {widest['fd_kinds'] if widest else ''} |")  # fmt: skip
    if not ok:
        out.append(f"harness stderr: {err[-1500:]}")
    return out, ok and numbered and clean and flat and attempts == experiments


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", type=int, default=1000)
    ap.add_argument("--keep", type=Path, default=None, help="keep the night's folder under DIR")
    args = ap.parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="soak-", dir=args.keep))
    try:
        lines, ok = soak(args.experiments, base)
    finally:
        if args.keep is None:
            shutil.rmtree(base, ignore_errors=True)
    print("\n".join(lines))
    print("flat and lossless" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
