"""Diagnostics of a run, gathered once while it prints: the time split, throughput and the loss curve.

`Progress` is fed every line the run prints as it prints it (the runner's `on_line`), with the
time since the run started, so it knows what no log line says: when the first progress line came
(the end of start-up: imports, data, compilation), when the last one came (the end of training)
and when the summary block began (the end of evaluation). It keeps the training loss in twenty
5 % slices of the budget (the mean of each slice: a step's loss is noisy, a slice's is not) and
the tokens per second and MFU of the progress lines.

`Progress.diagnostics(summary, wall, measured)` turns that and the summary block into the compact
`harness.store.attempts.Diagnostics` of the attempt's record. Where the run printed prepare's
marker lines, the time split and throughput are the harness's own measurement
(`harness.integrity.budget.Measured`, the same numbers the TSV's training_s and startup_s
columns hold); otherwise the summary's own numbers (`num_steps`, `tokens_per_sec`,
`mfu_percent`, `peak_vram_mb`, `training_seconds`) win over what was read off progress lines.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Mapping

from harness.integrity.budget import Measured
from harness.night.metrics import last_loss, progress_pct, throughput
from harness.store.attempts import Diagnostics

SLICES = 20  # the loss curve's resolution: 5 % of the budget each
_RECENT = 200  # progress lines whose throughput counts (the end of the run, past compilation)


class Progress:
    """Watches one run's lines as they arrive."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.start = clock()
        self.first: float | None = None  # seconds from the start to the first progress line
        self.last: float | None = None
        self.summary_at: float | None = None
        self.steps = 0
        self._sums = [0.0] * SLICES
        self._counts = [0] * SLICES
        self._tok: deque[float] = deque(maxlen=_RECENT)
        self._mfu: deque[float] = deque(maxlen=_RECENT)

    def line(self, text: str) -> None:
        """One line of the run, just printed."""
        now = self.clock() - self.start
        if text.strip() == "---":
            if self.summary_at is None or self.last is None or self.summary_at < self.last:
                self.summary_at = now
            return
        loss = last_loss(text)
        if loss is None:
            return
        self.steps += 1
        self.first = now if self.first is None else self.first
        self.last = now
        pct = progress_pct(text)
        if pct is not None and math.isfinite(loss):
            i = min(SLICES - 1, max(0, math.ceil(pct / (100 / SLICES)) - 1))
            self._sums[i] += loss
            self._counts[i] += 1
        tok, mfu = throughput(text)
        if tok is not None:
            self._tok.append(tok)
        if mfu is not None:
            self._mfu.append(mfu)

    def curve(self) -> list[tuple[float, float]]:
        """(budget % at the end of the slice, mean loss in it) for every slice with a progress line."""
        width = 100 / SLICES
        return [
            (width * (i + 1), s / c)
            for i, (s, c) in enumerate(zip(self._sums, self._counts, strict=True))
            if c
        ]

    def diagnostics(
        self, summary: Mapping[str, float | str] | None, wall: float, measured: Measured | None = None
    ) -> Diagnostics:
        """The compact diagnostics of this run: the harness's measurement when the run printed the
        markers, else the summary's numbers over the progress lines'."""
        summary = summary or {}

        def number(key: str) -> float | None:
            value = summary.get(key)
            return float(value) if isinstance(value, float) and math.isfinite(value) else None

        def median(values: deque[float]) -> float | None:
            # The second half: the first steps run uncompiled or cold.
            tail = list(values)[len(values) // 2 :]
            return statistics.median(tail) if tail else None

        steps = number("num_steps")
        peak = number("peak_vram_mb")
        training = number("training_seconds")
        if training is None and self.first is not None and self.last is not None:
            training = self.last - self.first
        eval_end = self.summary_at if self.summary_at is not None else wall
        startup, tokens_per_sec = self.first, number("tokens_per_sec") or median(self._tok)
        eval_s = eval_end - self.last if self.last is not None and eval_end >= self.last else None
        if measured is not None and measured.startup_s is not None:
            # the markers: from the first batch to the hand-off, by the harness's clock; the rest
            # of the wall time (the evaluation, in a process of its own or not) is evaluation
            startup, training = measured.startup_s, measured.training_s
            tokens_per_sec = measured.tokens_per_s or tokens_per_sec
            eval_s = max(0.0, wall - startup - training)
        return Diagnostics(
            steps=int(steps) if steps is not None else (self.steps or None),
            tokens_per_sec=tokens_per_sec,
            mfu_percent=number("mfu_percent") or median(self._mfu),
            peak_memory_gb=round(peak / 1024, 2) if peak is not None else None,
            startup_s=_r(startup),
            training_s=_r(training),
            eval_s=_r(eval_s),
            wall_s=_r(wall),
            loss=self.curve(),
        )


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 2)
