"""StrictJudge: keep iff strictly better in the experiment's direction."""

from __future__ import annotations

import math

import pytest

from harness.errors import ConfigError
from harness.night.judge import Judge, StrictJudge, Verdict
from harness.store.ledger import better


def test_better_in_both_directions() -> None:
    assert better(0.99, 1.0, "minimize") and not better(1.0, 0.99, "minimize")
    assert better(1.0, 0.99, "maximize") and not better(0.99, 1.0, "maximize")
    assert not better(1.0, 1.0, "minimize") and not better(1.0, 1.0, "maximize")
    assert not better(math.nan, 1.0, "minimize") and not better(math.nan, 1.0, "maximize")
    with pytest.raises(ConfigError, match="minimize"):
        better(1.0, 2.0, "lower")


def test_strict_judge_minimize() -> None:
    judge: Judge = StrictJudge("minimize")
    assert judge.baseline_runs == 1
    assert judge.decide([0.9979], []) == Verdict("keep", "first result 0.997900")
    assert judge.decide([0.986041], [0.997900]).status == "keep"
    tie = judge.decide([0.9979], [0.9979])
    assert tie.status == "discard" and "ties" in tie.reason
    worse = judge.decide([0.998], [0.9979])
    assert worse.status == "discard" and "worse" in worse.reason


def test_strict_judge_maximize_uses_means() -> None:
    judge = StrictJudge("maximize", baseline_runs=3)
    assert judge.baseline_runs == 3
    assert judge.decide([10.0, 12.0], [10.5, 11.0, 11.4]).status == "keep"  # 11.0 > 10.966..
    assert judge.decide([10.0, 11.0], [10.5, 11.0, 11.4]).status == "discard"  # 10.5 < 10.966..


def test_strict_judge_never_repeats_and_rejects_nonfinite() -> None:
    judge = StrictJudge("minimize")
    verdicts = [judge.decide([v], [1.0]).status for v in (0.5, 1.0, 1.5, math.nan, math.inf)]
    assert "repeat" not in verdicts
    assert verdicts[3:] == ["discard", "discard"]
    with pytest.raises(ValueError):
        judge.decide([], [1.0])


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="'minimize' or 'maximize'"):
        StrictJudge("down")
    with pytest.raises(ConfigError, match="baseline_runs"):
        StrictJudge("minimize", baseline_runs=0)
