"""The kill -9 campaign of bench/kill_campaign.py, 10 trials: random kill points across every
phase of a night, each followed by --resume; no row lost or duplicated, the branch at the best
kept row, no pending journal, git lock or orphan process left. (100 trials: BENCHMARKS.md.)"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import kill_campaign  # noqa: E402


@pytest.mark.slow  # about 10 s a trial on a 2-core machine
@pytest.mark.timeout(900)
def test_ten_random_kill_points_then_resume(clean_env: Path) -> None:
    lines: list[str] = []
    done = kill_campaign.campaign(10, seed=1018, out=lines.append)
    assert len(done) == 10
    failed = [line for line in lines if " FAIL " in line]
    assert not failed, "\n".join(failed)
    assert sum(t.killed for t in done) >= 5, "\n".join(lines)  # the kills really happened
    assert len({t.phase for t in done}) == 10  # every phase once
