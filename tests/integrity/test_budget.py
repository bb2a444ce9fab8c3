"""The harness's budget clock: start-up, training and the over-budget verdict from marker lines."""

from __future__ import annotations

import pytest

from harness.integrity.budget import Limits, Marker, deadline, measure

LIMITS = Limits(budget=300.0, tolerance=0.02, warmup=90.0, startup=180.0, require_markers=True)


def test_an_honest_run_is_measured_from_the_first_batch_to_the_hand_off() -> None:
    marks = [Marker(12.0, "first-batch"), Marker(345.0, "hand-off", "tokens=499600000")]
    m = measure(marks, 360.0, LIMITS, reported=True)
    assert (m.startup_s, m.training_s, m.tokens, m.reason) == (12.0, 333.0, 499_600_000, None)
    assert m.tokens_per_s == pytest.approx(499_600_000 / 333.0)


@pytest.mark.parametrize(
    ("marks", "wall", "why"),
    [
        ([Marker(10.0, "first-batch"), Marker(1210.0, "hand-off")], 1230.0, "trained 1200.0 s"),  # 4x stretch
        (
            [Marker(10.0, "first-batch"), Marker(20.0, "hand-off"), Marker(600.0, "hand-off")],
            610.0,
            "trained 590.0 s",
        ),
        ([Marker(200.0, "first-batch"), Marker(500.0, "hand-off")], 520.0, "first training batch came 200 s"),
        ([], 100.0, "no first-batch marker"),
        ([], 200.0, "no first training batch within 180 s"),
    ],
)
def test_over_budget(marks: list[Marker], wall: float, why: str) -> None:
    reason = measure(marks, wall, LIMITS, reported=True).reason
    assert reason is not None and reason.startswith("over budget") and why in reason, reason


def test_a_forged_early_first_batch_only_lengthens_training() -> None:
    marks = [Marker(0.5, "first-batch"), Marker(12.0, "first-batch"), Marker(340.0, "hand-off")]
    assert measure(marks, 350.0, LIMITS, reported=True).training_s == 339.5


def test_permissive_experiments_without_markers_are_bounded_by_the_timeout_only() -> None:
    loose = Limits(300.0, 0.02, 90.0, 180.0, require_markers=False)
    m = measure([], 500.0, loose, reported=True)
    assert m.reason is None and m.startup_s is None and m.training_s == 500.0
    assert deadline([], loose) is None


def test_the_deadline_follows_the_markers() -> None:
    assert deadline([], LIMITS) == 180.0
    assert deadline([Marker(10.0, "first-batch")], LIMITS) == pytest.approx(10.0 + 300 * 1.02 + 90)
    assert deadline([Marker(10.0, "first-batch"), Marker(300.0, "hand-off")], LIMITS) is None
