"""harness.night.diagnostics (reading a run as it prints) and harness.night.deadline (--until)."""

from __future__ import annotations

import datetime

import pytest

from harness.integrity.budget import Measured
from harness.night.deadline import Deadline
from harness.night.diagnostics import Progress
from harness.options import OPTIONS
from harness.store.ledger import Row


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_progress_times_the_phases_and_summarises_the_loss_curve() -> None:
    clock = Clock()
    p = Progress(clock)
    clock.t += 12.0  # imports, data, compilation
    p.line("device: cpu | params: 1.0M")
    for step in range(100):
        pct = step + 1
        loss = 5.0 - 0.02 * step
        p.line(
            f"step {step:05d} ({pct:.1f}%) | loss: {loss:.6f} | dt: 10ms | tok/sec: 1,{step:03d},000 | mfu: {30 + step % 3:.1f}% | remaining: 1s"
        )
        clock.t += 3.0
    clock.t += 7.0  # evaluation
    p.line("---")
    p.line("val_bpb: 1.0")
    d = p.diagnostics({"val_bpb": 1.0, "peak_vram_mb": 2048.0, "num_steps": 100.0}, wall=clock.t - 100.0)
    assert d.steps == 100 and d.peak_memory_gb == 2.0
    assert d.startup_s == 12.0 and d.training_s == 297.0 and d.eval_s == 10.0
    assert d.tokens_per_sec == pytest.approx(1_074_500.0, rel=1e-3)  # median of the second half
    assert d.mfu_percent == 31.0
    assert [pct for pct, _ in d.loss] == [5.0 * i for i in range(1, 21)]
    assert d.loss_at(100) == pytest.approx(5.0 - 0.02 * 97)  # mean of steps 96..100 (pct 96..100)
    assert (d.falling() or 0) < 0


def test_the_summary_wins_and_a_run_without_progress_lines_has_no_curve() -> None:
    p = Progress(Clock())
    p.line("hello")
    summary = {"training_seconds": 300.5, "tokens_per_sec": 5.0, "mfu_percent": 9.0, "val_bpb": 1.0}
    d = p.diagnostics(summary, wall=400.0)
    assert (d.training_s, d.tokens_per_sec, d.mfu_percent, d.steps) == (300.5, 5.0, 9.0, None)
    assert d.loss == [] and d.startup_s is None and d.eval_s is None and d.wall_s == 400.0


def test_the_harness_clock_wins_where_the_run_printed_the_markers() -> None:
    p = Progress(Clock())
    p.line("step 00001 (50.0%) | loss: 3.000000 | tok/sec: 9,999,999")
    summary = {"training_seconds": 1.0, "tokens_per_sec": 9.9e9, "val_bpb": 1.0}  # the run's own claims
    marked = Measured(startup_s=13.0, training_s=60.5, tokens=60_500_000, reason=None)
    d = p.diagnostics(summary, wall=110.0, measured=marked)
    assert (d.startup_s, d.training_s, d.eval_s) == (13.0, 60.5, 36.5)
    assert d.tokens_per_sec == pytest.approx(1_000_000.0)
    # no markers: what the run says is all there is
    unmarked = Measured(startup_s=None, training_s=110.0, tokens=None, reason=None)
    d = p.diagnostics(summary, wall=110.0, measured=unmarked)
    assert (d.training_s, d.tokens_per_sec) == (1.0, 9.9e9)


def test_deadline_uses_the_timeout_until_runs_are_measured_then_the_longest_recent_run() -> None:
    clock = Clock()
    dl = Deadline(until=clock.t + 1000, timeout=600, clock=clock)
    assert dl.allows(1) and not dl.allows(2)
    dl.record_run(200.0)
    dl.record_run(300.0)
    assert dl.run_estimate() == 300.0 and dl.allows(3) and not dl.allows(4)
    dl.record_propose(150.0)
    assert dl.allows(2, propose=True) and not dl.allows(3, propose=True)
    for _ in range(5):
        dl.record_run(100.0)  # the 300 s run left the window
    assert dl.run_estimate() == 100.0
    clock.t += 950
    assert not dl.allows(1) and "--until" in dl.describe()


def test_deadline_reads_earlier_runs_of_the_tag_on_resume() -> None:
    dl = Deadline(until=0.0, timeout=600)
    dl.seed([Row("a", 1.0, 0, "keep", "baseline", {"wall_s": "900.0", "runs": "1.0,1.0,1.0"}),
             Row("b", 1.0, 0, "discard", "x", {"wall_s": "250"}), Row("c", 0, 0, "crash", "y", {"wall_s": ""})])  # fmt: skip
    assert list(dl.runs) == [300.0, 250.0]


def test_until_is_the_next_occurrence_of_a_local_time() -> None:
    until = next(opt for opt in OPTIONS if opt.field == "until")
    now = datetime.datetime.now().astimezone()
    soon = (now + datetime.timedelta(minutes=90)).strftime("%H:%M")
    value, _ = until.read({"until": soon}, {})
    assert 80 * 60 <= value - now.timestamp() <= 91 * 60
    past = (now - datetime.timedelta(minutes=30)).strftime("%H:%M")
    value, _ = until.read({"until": past}, {})
    assert 23 * 3600 <= value - now.timestamp() <= 24 * 3600
    # A config file's TOML local time (`until = 06:30:00`) reads as the same minute.
    with_seconds = (now + datetime.timedelta(minutes=90)).strftime("%H:%M:00")
    assert until.read({"until": with_seconds}, {})[0] == until.read({"until": soon}, {})[0]
    for bad in ("25:00", "6.30", "noon", "06:30:99"):
        with pytest.raises(Exception, match="HH:MM"):
            until.read({"until": bad}, {})
