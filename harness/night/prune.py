"""Early abort: stop a candidate's run whose loss is clearly behind the best's at the same budget share.

A run that is far behind the best halfway through its budget is not going to be kept; the rest
of its budget decides nothing. Train files print progress lines with the share of the budget
spent and the training loss, e.g. ``step 00120 (41.3%) | loss: 3.412 | ...``; the best commit's
logs hold the same lines, so the best's loss curve over the budget share is known for free.

`Pruner(reference, margin)` answers, for each progress line of the candidate's run, whether
to abort it: once the share is at least `FROM_SHARE`, the candidate's loss must be above the
reference loss at that share (the mean over the best's runs, linearly interpolated) by more
than `margin` of it (and by more than three times the spread of the best's own runs at that
share, when it has several) on `PATIENCE` progress lines in a row. A best whose runs printed
fewer than `MIN_POINTS` progress lines gives no reference (nothing is pruned). The margin is relative and
generous (default 5 %, `--prune`): a learning-rate schedule that is behind early and catches up
in its warm-down is rarely 5 % behind past a quarter of the budget, while a change that breaks
training is far more. The loop asks only for candidates: never for the baseline, its repeats,
the warm-up run or a re-measurement of the best, and only when the best's logs have progress
lines (an experiment without them is never pruned). A pruned run is a `discard` with reason
`pruned`: no metric, no evaluation.
"""

from __future__ import annotations

import statistics
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from pathlib import Path

from harness.night.metrics import last_loss, progress_pct

#: the share of the budget (percent) before which no run is pruned: warm-up transients
FROM_SHARE = 25.0
#: consecutive progress lines behind the reference before the run is aborted
PATIENCE = 3
#: a reference run with fewer progress lines is too coarse to interpolate (real train files
#: print one per step, hundreds per run; a smoke test's four lines are no curve)
MIN_POINTS = 20

Curve = tuple[tuple[float, float], ...]  # (share in percent, loss), share increasing


def read_curve(lines: Iterable[str]) -> Curve:
    """The (share, loss) points of a run's progress lines, share strictly increasing."""
    points: list[tuple[float, float]] = []
    for line in lines:
        if "loss:" not in line:
            continue
        pct, loss = progress_pct(line), last_loss(line)
        if pct is None or loss is None or loss != loss:
            continue
        if points and pct <= points[-1][0]:
            continue
        points.append((pct, loss))
    return tuple(points)


def curve_of_log(path: Path) -> Curve:
    """`read_curve` of a log file; empty when it cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return read_curve(fh)
    except OSError:
        return ()


def at(curve: Curve, share: float) -> float | None:
    """The curve's loss at `share`, linearly interpolated; None outside the shares it covers."""
    if not curve or share < curve[0][0] or share > curve[-1][0]:
        return None
    i = bisect_left([p for p, _ in curve], share)
    if curve[i][0] == share:
        return curve[i][1]
    (p0, l0), (p1, l1) = curve[i - 1], curve[i]
    return l0 + (l1 - l0) * (share - p0) / (p1 - p0)


class Pruner:
    """Called with (share, loss) for each progress line of a run; True: abort it."""

    def __init__(self, reference: Sequence[Curve], margin: float) -> None:
        self.reference = [c for c in reference if len(c) >= MIN_POINTS]
        self.margin = margin
        self.behind = 0
        self.why = ""

    def __bool__(self) -> bool:
        return bool(self.reference) and self.margin > 0

    def __call__(self, share: float, loss: float) -> bool:
        if not self or share < FROM_SHARE:
            return False
        values = [v for v in (at(c, share) for c in self.reference) if v is not None]
        if not values:
            return False
        ref = statistics.fmean(values)
        spread = statistics.stdev(values) if len(values) >= 2 else 0.0
        allowed = max(self.margin * abs(ref), 3 * spread)
        if loss > ref + allowed:
            self.behind += 1
        else:
            self.behind = 0
        if self.behind >= PATIENCE:
            self.why = f"loss {loss:.4f} at {share:.1f}% of the budget, the best's {ref:.4f} (+{allowed:.4f} allowed)"
            return True
        return False
