"""`--until HH:MM`: no run starts that cannot finish by then.

A run is expected to take as long as the longest of the last `WINDOW` runs measured on this tag
(this night's, and the earlier rows' on `--resume`: a row's wall_s over its number of runs);
before anything was measured, as long as the kill timeout allows (the most it can take). The loop
asks `allows(runs)` before it starts a run (the baseline's runs, a candidate, a confirmation
run, a re-measurement of the best) and, before it even asks the agent for the next attempt,
`allows(1, propose=True)`, which adds the time proposals have taken (zero when a pipelined one
is already waiting). The pipeline asks for no proposal that could not run in time.
"""

from __future__ import annotations

import datetime
import time
from collections import deque
from collections.abc import Callable, Sequence

from harness.store.ledger import Row

WINDOW = 5


class Deadline:
    """The wall-clock deadline of a night and the measured durations it is judged by."""

    def __init__(self, until: float, timeout: float, clock: Callable[[], float] = time.time) -> None:
        self.until = until
        self.timeout = timeout
        self.clock = clock
        self.runs: deque[float] = deque(maxlen=WINDOW)
        self.propose_seconds = 0.0

    def seed(self, rows: Sequence[Row]) -> None:
        """Durations of runs an earlier harness on this tag measured (wall_s per run of each row)."""
        for row in rows:
            try:
                wall = float(row.extra.get("wall_s") or "nan")
            except ValueError:
                continue
            if wall == wall and wall > 0:
                self.runs.append(wall / max(1, len(row.runs())))

    def record_run(self, seconds: float) -> None:
        if seconds > 0:
            self.runs.append(seconds)

    def record_propose(self, seconds: float) -> None:
        """How long the agent took to hand over the last attempt (the loop waited that long)."""
        self.propose_seconds = max(0.0, seconds)

    def run_estimate(self) -> float:
        return max(self.runs) if self.runs else self.timeout

    def allows(self, runs: int = 1, *, propose: bool = False) -> bool:
        """Whether `runs` more runs (after a proposal, with `propose`) would end by the deadline."""
        need = runs * self.run_estimate() + (self.propose_seconds if propose else 0.0)
        return self.clock() + need <= self.until

    def describe(self, runs: int = 1) -> str:
        """Why a run does not start, for the night's end message."""
        at = datetime.datetime.fromtimestamp(self.until).strftime("%H:%M")
        what = "measured" if self.runs else "the kill timeout, nothing measured yet"
        return f"--until {at}: {runs} more run(s) of about {self.run_estimate():.0f} s ({what}) would end after it"
