"""Soak: 300 experiments of a sub-second toy through the real harness; memory and fds stay flat.

The harness runs as a real subprocess (`python -m harness.commands.main run`) driven by a replay file
of 300 whole-file replies (random VAL_BPB values, so keeps and discards mix); the test samples
the harness's resident memory and open file descriptors with psutil while it runs. Marked
`slow` (about 2-3 minutes on 2 cores) but meant to run in CI.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from harness.store.ledger import Ledger
from tests.conftest import Toy, git

N = 300
TOY_TRAIN = Path(__file__).resolve().parents[1] / "toy" / "const" / "train.py"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_300_experiments_memory_and_fds_flat(toy_experiment: Toy) -> None:
    toy = toy_experiment
    rng = random.Random(300)
    base = TOY_TRAIN.read_text()
    replies = []
    for i in range(N):
        text = base.replace("VAL_BPB = 1.000000", f"VAL_BPB = {rng.uniform(0.5, 1.2):.6f}")
        replies.append(f"Description: attempt {i}\n```python\n{text}```\n")
    path = toy.replay_file(replies)
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.commands.main", "run", "--device", "cpu", "--tag", "soak", "--agent", f"replay:{path}",
         "--baseline-runs", "1"],
        cwd=toy.repo, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    harness = psutil.Process(proc.pid)
    tsv = toy.repo / "results" / "soak.tsv"
    samples: list[tuple[int, int, int]] = []  # (rows so far, rss bytes, open fds)
    while proc.poll() is None:
        try:
            rows = tsv.read_text().count("\n") - 1 if tsv.exists() else 0
            samples.append((rows, harness.memory_info().rss, harness.num_fds()))
        except (psutil.NoSuchProcess, FileNotFoundError):
            break
        time.sleep(0.25)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]

    rows = Ledger(tsv).rows()
    assert len(rows) == N + 1
    assert [r.extra["n"] for r in rows] == [str(i) for i in range(N + 1)]
    assert [r.description for r in rows[1:]] == [f"attempt {i}" for i in range(N)]
    keeps = [r for r in rows if r.status == "keep"]
    assert git(toy.repo, "rev-parse", "--short=7", "autoresearch/soak") == keeps[-1].commit

    early = [s for s in samples if N * 0.1 <= s[0] <= N * 0.3]
    late = [s for s in samples if s[0] >= N * 0.8]
    assert early and late, f"too few samples ({len(samples)})"
    rss_growth = statistics.median(s[1] for s in late) - statistics.median(s[1] for s in early)
    # The floor, not the peak: a sample taken mid-run also counts the run's pipe, log and
    # selector, which come and go. A leak raises the floor with every experiment.
    fd_growth = min(s[2] for s in late) - min(s[2] for s in early)
    print(f"soak: {len(samples)} samples, rss growth {rss_growth / 1e6:.1f} MB, fd growth {fd_growth}")
    assert rss_growth < 25e6, f"harness memory grew by {rss_growth / 1e6:.1f} MB over {N} experiments"
    assert fd_growth <= 2, f"open file descriptors grew by {fd_growth}"
