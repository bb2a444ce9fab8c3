"""Decide whether a candidate's metric beats the best so far: keep, discard, or run it again.

A judge sees the metric values of the candidate's runs (one per run of the same commit) and of
the current best commit's runs, and returns a `Verdict`. The loop runs the baseline
``judge.baseline_runs`` times and repeats a candidate while the verdict is ``repeat``, folding
every run of one commit into that commit's single TSV row.

`StrictJudge` is the simplest honest rule: keep iff the mean is strictly better in the
experiment's direction; it never asks for a repeat. `harness.night.noise.NoiseAwareJudge` (another
module) implements the same `Judge` protocol with a noise margin. Crashes never reach a judge:
a run without a finite metric is a crash, decided by the loop.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from harness.errors import ConfigError

Direction = Literal["minimize", "maximize"]
DIRECTIONS: tuple[str, ...] = ("minimize", "maximize")


@dataclass(frozen=True)
class Verdict:
    """What to do with a candidate; ``reason`` is one line for the TSV and the log."""

    status: Literal["keep", "discard", "repeat"]
    reason: str


class Judge(Protocol):
    """Decides keep / discard / repeat from the candidate's values and the best's values."""

    baseline_runs: int  # how often the baseline runs at the start

    def decide(self, values: Sequence[float], best: Sequence[float]) -> Verdict: ...


def check_direction(direction: str) -> Direction:
    """``direction`` validated; ConfigError naming the allowed values otherwise."""
    if direction == "minimize":
        return "minimize"
    if direction == "maximize":
        return "maximize"
    raise ConfigError(
        f"direction must be 'minimize' or 'maximize', not {direction!r} (set it in experiment.toml)"
    )


def better(a: float, b: float, direction: str) -> bool:
    """True iff ``a`` is strictly better than ``b`` in ``direction``; never for a NaN."""
    if check_direction(direction) == "minimize":
        return a < b
    return a > b


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; ValueError for no values (a judge is never asked about nothing)."""
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


class StrictJudge:
    """Keep iff mean(values) is strictly better than mean(best). Never asks for a repeat.

    With no best yet (the first run of the night), the candidate is kept: it becomes the
    reference everything else is measured against.
    """

    def __init__(self, direction: str, baseline_runs: int = 1) -> None:
        self.direction: Direction = check_direction(direction)
        if baseline_runs < 1:
            raise ConfigError(f"baseline_runs must be at least 1, not {baseline_runs}")
        self.baseline_runs = baseline_runs

    def decide(self, values: Sequence[float], best: Sequence[float]) -> Verdict:
        if not values:
            raise ValueError("StrictJudge.decide needs at least one value")
        if not all(math.isfinite(v) for v in values):
            return Verdict("discard", f"non-finite metric {list(values)}")
        cand = mean(values)
        if not best:
            return Verdict("keep", f"first result {cand:.6f}")
        ref = mean(best)
        if better(cand, ref, self.direction):
            return Verdict("keep", f"{cand:.6f} beats best {ref:.6f} ({cand - ref:+.6f})")
        if cand == ref:
            return Verdict("discard", f"{cand:.6f} ties best {ref:.6f}")
        return Verdict("discard", f"{cand:.6f} is worse than best {ref:.6f} ({cand - ref:+.6f})")

    def __repr__(self) -> str:
        return f"StrictJudge(direction={self.direction!r}, baseline_runs={self.baseline_runs})"
