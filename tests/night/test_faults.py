"""Fault survival: the night goes on (or resumes losslessly) through kills, hangs, floods and outages.

Every test drives the real loop (the CLI's `main`, or the harness as a real subprocess) on the
fast toy experiment of tests/toy/const, whose train.py is adapted per test and committed in the
test's own git repo. Clocks are scaled where the real fault lasts long: the 10-minute LLM outage
runs 200x faster (the fake provider fails for 600 / 200 = 3 s and the retry backoff is scaled
down through AUTORESEARCH_RETRY_* by the same factor).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.fakes.llm_servers import FakeLLM, Step, error, prompt_text

from harness.commands.main import main
from harness.store.ledger import Ledger
from tests.conftest import Toy, git

TOY_TRAIN = Path(__file__).resolve().parents[1] / "toy" / "const" / "train.py"


def _commit_toy(toy: Toy, *, train: str | None = None, toml: dict[str, str] | None = None) -> None:
    """Replace the toy's train.py and/or experiment.toml keys, and commit (the person's setup)."""
    if train is not None:
        toy.train.write_text(train)
    if toml:
        path = toy.train.parent / "experiment.toml"
        lines = [ln for ln in path.read_text().splitlines() if ln.split("=")[0].strip() not in toml]
        lines += [f"{k} = {v}" for k, v in toml.items()]
        path.write_text("\n".join(lines) + "\n")
    git(toy.repo, "add", "-A")
    git(toy.repo, "commit", "-q", "-m", "test setup")


def _whole_file(toy: Toy, description: str, text: str) -> str:
    return f"Description: {description}\n```python\n{text}```\n"


def _prefixed(code: str, **consts: object) -> str:
    """`code` run first, then the toy file (a whole-file reply must be about the file's size)."""
    return code + _with(**consts)


def _with(**consts: object) -> str:
    """The toy train file with some of its constants replaced."""
    text = TOY_TRAIN.read_text()
    for name, value in consts.items():
        lines = text.splitlines(keepends=True)
        text = "".join(f"{name} = {value!r}\n" if ln.startswith(f"{name} = ") else ln for ln in lines)
    return text


def _run(*args: str) -> int:
    return main(["run", "--device", "cpu", *args])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def _check_ledger(toy: Toy, tag: str, replies: int) -> list[dict[str, str]]:
    """One row per attempt, numbered without gaps, every reply once, branch head = last keep."""
    Ledger(toy.repo / "results" / f"{tag}.tsv").rows()  # strict parse: no torn line
    rows = toy.tsv(tag)
    assert [r["n"] for r in rows] == [str(i) for i in range(len(rows))]
    attempts = [r["description"] for r in rows if r["description"] != "baseline"]
    assert attempts == [f"attempt {i}" for i in range(replies)], attempts
    baselines = [r for r in rows if r["description"] == "baseline"]
    assert baselines[-1]["status"] == "keep"
    assert all(r["status"] == "crash" and r["reason"] == "interrupted" for r in baselines[:-1])
    last_keep = [r for r in rows if r["status"] == "keep"][-1]
    assert git(toy.repo, "rev-parse", "--short=7", f"autoresearch/{tag}") == last_keep["commit"]
    assert not (toy.repo / "results" / tag / "pending.json").exists()
    return rows


@pytest.mark.slow  # over 20 s on a 2-core machine
def test_kill_9_at_random_points_then_resume(toy_experiment: Toy, no_sandbox: None) -> None:
    """20 kill -9s of the harness at random instants; each time --resume carries on."""
    toy = toy_experiment
    _commit_toy(toy, train=_with(MODE="slow", SLEEP=0.15))
    rng = random.Random(int(os.environ.get("FAULT_SEED", "8")))
    values = [round(rng.uniform(0.5, 1.0), 6) for _ in range(40)]
    replies = [
        _whole_file(toy, f"attempt {i}", _with(VAL_BPB=v, MODE="slow", SLEEP=0.15))
        for i, v in enumerate(values)
    ]
    path = toy.replay_file(replies)
    cmd = [
        sys.executable,
        "-m",
        "harness.commands.main",
        "run",
        "--device",
        "cpu",
        "--tag",
        "k",
        "--agent",
        f"replay:{path}",
    ]
    for trial in range(20):
        proc = subprocess.Popen(
            cmd + (["--resume"] if trial else []),
            cwd=toy.repo,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        if trial == 0:  # the first start must get as far as a tag to resume
            deadline = time.monotonic() + 60
            while not (toy.repo / "results" / "k.tsv").exists():
                assert proc.poll() is None and time.monotonic() < deadline, "the first start wrote no row"
                time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 2.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert _run("--tag", "k", "--agent", f"replay:{path}", "--resume") == 0
    rows = _check_ledger(toy, "k", len(replies))
    # no run outlives its harness: every pid a log recorded is gone
    for log in (toy.repo / "results" / "k" / "runs").glob("*.log"):
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith("started pid="):
                assert not _alive(int(line.split("=")[1])), log
    assert sum(r["reason"] == "interrupted" for r in rows) >= 1


def test_hung_run_is_killed_at_the_timeout(toy_experiment: Toy, no_sandbox: None) -> None:
    toy = toy_experiment
    _commit_toy(toy, toml={"budget_seconds": "1", "timeout_seconds": "3"})
    replies = [
        _whole_file(toy, "attempt 0", _with(MODE="hang")),
        _whole_file(toy, "attempt 1", _with(VAL_BPB=0.5)),
    ]
    start = time.monotonic()
    assert _run("--tag", "h", "--agent", f"replay:{toy.replay_file(replies)}", "--baseline-runs", "1") == 0
    assert time.monotonic() - start < 120
    rows = _check_ledger(toy, "h", 2)
    assert rows[1]["status"] == "crash" and "timeout" in rows[1]["reason"]
    assert rows[2]["status"] == "keep"
    pid = int((toy.repo / "results" / "h" / "runs" / "1.log").read_text().split("started pid=")[1].split()[0])
    assert not _alive(pid)


MEMORY_HOG = """
import os
print(f"started pid={os.getpid()}", flush=True)
hoard = []
while True:
    block = bytearray(32 * 1024 * 1024)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    hoard.append(block)
    print(f"holding {len(hoard) * 32} MB", flush=True)
"""


def test_run_allocating_memory_until_killed(toy_experiment: Toy) -> None:
    """The person's run command bounds memory (ulimit -v, like a cgroup would); the hog dies, the night goes on."""
    toy = toy_experiment
    _commit_toy(toy, toml={"run": '"ulimit -v 600000; exec python train.py"'})
    replies = [
        _whole_file(toy, "attempt 0", _prefixed(MEMORY_HOG)),
        _whole_file(toy, "attempt 1", _with(VAL_BPB=0.5)),
    ]
    assert _run("--tag", "m", "--agent", f"replay:{toy.replay_file(replies)}", "--baseline-runs", "1") == 0
    rows = _check_ledger(toy, "m", 2)
    assert rows[1]["status"] == "crash" and "MemoryError" in rows[1]["reason"], rows[1]
    assert rows[2]["status"] == "keep"


GRANDCHILD = """
import multiprocessing, os, sys, time
print(f"started pid={os.getpid()}", flush=True)
# like a dataloader worker: a child process that the run never joins
worker = multiprocessing.get_context("fork").Process(target=time.sleep, args=(600,))
worker.start()
print(f"grandchild pid={worker.pid}", flush=True)
print("---")
print("val_bpb:          0.700000", flush=True)
os._exit(0)  # leave without joining: the worker outlives its parent
"""


def test_grandchildren_are_killed_with_the_group(toy_experiment: Toy, no_sandbox: None) -> None:
    toy = toy_experiment
    replies = [
        _whole_file(toy, "attempt 0", _prefixed(GRANDCHILD, VAL_BPB=0.7)),
        _whole_file(toy, "attempt 1", _with(VAL_BPB=0.5)),
    ]
    assert _run("--tag", "g", "--agent", f"replay:{toy.replay_file(replies)}", "--baseline-runs", "1") == 0
    rows = _check_ledger(toy, "g", 2)
    assert rows[1]["status"] == "keep"
    log = (toy.repo / "results" / "g" / "runs" / "1.log").read_text()
    grandchild = int(log.split("grandchild pid=")[1].split()[0])
    deadline = time.monotonic() + 10
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(grandchild), "the grandchild outlived its run"


FLOOD = """
import sys
line = "x" * 1023 + "\\n"
for _ in range(100 * 1024):  # 100 MB
    sys.stdout.write(line)
"""


def test_100_mb_log_flood_is_cut_and_killed(toy_experiment: Toy) -> None:
    toy = toy_experiment
    replies = [
        _whole_file(toy, "attempt 0", _prefixed(FLOOD, VAL_BPB=0.1)),
        _whole_file(toy, "attempt 1", _with(VAL_BPB=0.5)),
    ]
    assert _run("--tag", "f", "--agent", f"replay:{toy.replay_file(replies)}", "--baseline-runs", "1") == 0
    rows = _check_ledger(toy, "f", 2)
    assert rows[1]["status"] == "crash" and "flood" in rows[1]["reason"]
    assert (toy.repo / "results" / "f" / "runs" / "1.log").stat().st_size <= 60_000_000
    assert rows[2]["status"] == "keep"


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    return done.returncode == 0


SPEW = """
import os
print(f"started pid={os.getpid()}", flush=True)
for i in range(40000):
    print(f"step {i:05d} | a long progress line that fills the disk quickly " + "y" * 40, flush=False)
"""


def test_full_disk_under_results(toy_experiment: Toy) -> None:
    """results/ on a 1 MB filesystem: a run fills it; no torn row, and after space is freed
    --resume finishes with one row per attempt."""
    toy = toy_experiment
    results = toy.repo / "results"
    if not _mount_tmpfs(results, "1m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        replies = [
            _whole_file(toy, "attempt 0", _with(VAL_BPB=0.9)),
            _whole_file(toy, "attempt 1", _prefixed(SPEW, VAL_BPB=0.4)),
            _whole_file(toy, "attempt 2", _with(VAL_BPB=0.5)),
        ]
        path = toy.replay_file(replies)
        proc = subprocess.run(
            [sys.executable, "-m", "harness.commands.main", "run", "--device", "cpu", "--tag", "d", "--agent", f"replay:{path}",
             "--baseline-runs", "1"],
            cwd=toy.repo, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        Ledger(results / "d.tsv").rows()  # whatever happened, no torn line
        if proc.returncode != 0:
            assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
            assert "space" in (proc.stdout + proc.stderr).lower()
        # free the space (the person deletes the big log) and resume
        for log in (results / "d" / "runs").glob("*.log"):
            if log.stat().st_size > 100_000:
                log.write_text("(deleted to free space)\n")
        assert _run("--tag", "d", "--agent", f"replay:{path}", "--resume") == 0
        rows = _check_ledger(toy, "d", 3)
        assert rows[-1]["status"] == "keep"
    finally:
        subprocess.run(["umount", "-l", str(results)], capture_output=True)


def test_llm_outage_of_ten_minutes(toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch) -> None:
    """The provider answers 503 for 600 scaled seconds (3 real s); the night waits it out."""
    toy = toy_experiment
    scale = 200.0
    outage = 600.0 / scale
    state: dict[str, float] = {}

    def responder(body: dict[str, object]) -> Step:
        now = time.monotonic()
        start = state.setdefault("start", now)
        if now - start < outage:
            state["failed"] = state.get("failed", 0) + 1
            return error(503, message="service unavailable (injected outage)")
        state.setdefault("recovered", now - start)
        current = prompt_text(body).split("VAL_BPB = ")[1].split()[0]
        lower = f"{float(current) - 0.1:.6f}"
        return Step(
            text=f"Description: lower to {lower}\n{toy.rel}\n<<<<<<< SEARCH\nVAL_BPB = {current}\n=======\n"
            f"VAL_BPB = {lower}\n>>>>>>> REPLACE\n"
        )

    with FakeLLM([], responder=responder) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-outage")
        # the production policy (base 2 s, cap 300 s, paused after 180 s) scaled by 1/200
        monkeypatch.setenv("AUTORESEARCH_RETRY_BASE", f"{2.0 / scale}")
        monkeypatch.setenv("AUTORESEARCH_RETRY_CAP", f"{300.0 / scale}")
        monkeypatch.setenv("AUTORESEARCH_RETRY_PAUSE_AFTER", f"{180.0 / scale}")
        assert _run("--tag", "o", "--agent", "openai", "--model", "gpt-test", "--max-experiments", "2",
                    "--baseline-runs", "1") == 0  # fmt: skip
    rows = toy.tsv("o")
    assert [r["status"] for r in rows] == ["keep", "keep", "keep"]
    assert state["failed"] >= 5 and state["recovered"] >= outage
    assert rows[1]["description"].startswith("lower to")
    assert json.dumps(rows).count("sk-test-outage") == 0
