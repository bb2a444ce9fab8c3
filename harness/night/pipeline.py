"""Pipelined proposals: ask the LLM for the next experiments while the current one runs.

The GPU should train, not wait for the model. `Pipeline` keeps a FIFO of proposals being
made in background threads, each against the best commit of the moment it was asked for.
The loop tops the queue up (`prefetch`) just before it starts a run and takes the oldest
proposal (`take`) when the run is over:

- made against the current best: use it as it is;
- made against an older best (an experiment was kept since): re-apply its reply to the
  new best; if it applies cleanly it runs, otherwise it is dropped and the next one (or a
  fresh one) is taken.

How many proposals are kept in flight adapts to the measured times: enough to cover the
model's latency with runs, ceil(1.25 * llm_seconds / run_seconds), between 1 and `max_depth`
(before the first measurement, `initial_depth`). With a 5-minute budget and a 1-minute
model that is 1: exactly "propose the next while the current runs"; with a 30 s budget
it is 3. `Settings.pipeline_depth` (AUTORESEARCH_PIPELINE_DEPTH) fixes it (0 turns pipelining off).

Requests started together are not identical: `vary(ctx, k, m)` gives the k-th of the m requests
being written at once its own context (the proposer names the proposals in flight and tells
each request which one it is). `writing()` says how many are still being written.

Threads are daemons: a night that ends with a proposal in flight does not wait for it.
An exception raised while proposing (a non-retryable provider error) is re-raised by
`take`, in the loop's thread. Callbacks run in the worker threads must not touch the view.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

P = TypeVar("P")
C = TypeVar("C")

_EWMA = 0.5  # weight of the newest measurement: adapt quickly, the model's latency drifts
# Ask a little earlier than the averages say, so one slow answer does not leave the GPU idle.
_MARGIN = 1.25


@dataclass
class _Ticket(Generic[P]):
    future: Future[P | None]
    base: str  # the best commit the proposal was made against
    started: float


class Pipeline(Generic[C, P]):
    """A queue of proposals made in the background. `make(ctx)` proposes; `reapply(p, ctx)` rebases."""

    def __init__(
        self,
        make: Callable[[C], P | None],
        reapply: Callable[[P, C], P | None],
        *,
        depth: int | None = None,
        vary: Callable[[C, int, int], C] | None = None,
        initial_depth: int = 2,
        max_depth: int = 4,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.make = make
        self.reapply = reapply
        self.vary = vary
        self.fixed_depth = depth
        self.initial_depth = initial_depth
        self.max_depth = max_depth
        self.clock = clock
        self.queue: deque[_Ticket[P]] = deque()
        self.llm_seconds: float | None = None
        self.run_seconds: float | None = None
        self.notes: list[str] = []  # what happened to stale proposals, for the loop to show
        self.dropped: list[P] = []  # stale proposals that did not re-apply (their cost still counts)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.fixed_depth is None or self.fixed_depth > 0

    def depth(self) -> int:
        """How many proposals to keep queued or in flight."""
        if self.fixed_depth is not None:
            return self.fixed_depth
        llm = self.llm_seconds
        # A request in flight for longer than the estimate already tells us the model is slow.
        now = self.clock()
        with self._lock:
            for ticket in self.queue:
                if not ticket.future.done():
                    llm = max(llm or 0.0, now - ticket.started)
        if llm is None or not self.run_seconds:
            return self.initial_depth
        return max(1, min(self.max_depth, math.ceil(_MARGIN * llm / self.run_seconds)))

    def record_run(self, seconds: float) -> None:
        """The wall time of one run (from start to row), for the depth estimate."""
        if seconds > 0:
            self.run_seconds = _ewma(self.run_seconds, seconds)

    def prefetch(self, ctx: C, best: str, *, limit: int | None = None) -> int:
        """Start proposals against `best` until the queue holds depth() of them; return how many started.

        `limit` caps the queue (e.g. the experiments left before --max-experiments).
        """
        if not self.enabled:
            return 0
        want = self.depth()
        if limit is not None:
            want = min(want, max(0, limit))
        start = max(0, want - len(self.queue))
        writing = self.writing()
        for j in range(start):
            k, m = writing + j + 1, writing + start
            self._submit(self.vary(ctx, k, m) if self.vary is not None else ctx, best)
        return start

    def writing(self) -> int:
        """Proposals still being made (their thread has not returned)."""
        with self._lock:
            return sum(1 for ticket in self.queue if not ticket.future.done())

    def ready(self) -> list[P]:
        """The proposals made and waiting to be taken, oldest first."""
        with self._lock:
            done = [t.future for t in self.queue if t.future.done() and t.future.exception() is None]
        return [p for p in (f.result() for f in done) if p is not None]

    def take(self, ctx: C, best: str) -> P | None:
        """The next proposal valid on `best` (whose context is `ctx`); None when the agent is done."""
        while self.queue:
            with self._lock:
                ticket = self.queue.popleft()
            proposal = ticket.future.result()  # re-raises what the worker raised
            if proposal is None:
                self.cancel()
                return None
            if ticket.base == best:
                return proposal
            rebased = self.reapply(proposal, ctx)
            if rebased is not None:
                self.notes.append(
                    "a proposal made against the previous best re-applied cleanly to the new best"
                )
                return rebased
            self.dropped.append(proposal)
            self.notes.append(
                "a proposal made against the previous best did not apply to the new best; dropped"
            )
        # Nothing queued (pipelining off, or everything was stale): ask now, in this thread.
        started = self.clock()
        proposal = self.make(ctx)
        self.llm_seconds = _ewma(self.llm_seconds, self.clock() - started)
        return proposal

    def cancel(self) -> None:
        """Forget every queued proposal; threads still in flight finish on their own and are ignored."""
        with self._lock:
            self.queue.clear()

    def _submit(self, ctx: C, best: str) -> None:
        future: Future[P | None] = Future()
        ticket = _Ticket(future, best, self.clock())

        def work() -> None:
            try:
                result = self.make(ctx)
            except BaseException as exc:  # noqa: BLE001 - handed to the loop's thread by take()
                future.set_exception(exc)
                return
            self.llm_seconds = _ewma(self.llm_seconds, self.clock() - ticket.started)
            future.set_result(result)

        with self._lock:
            self.queue.append(ticket)
        threading.Thread(target=work, name="autoresearch-propose", daemon=True).start()


def _ewma(old: float | None, new: float) -> float:
    return new if old is None else (1 - _EWMA) * old + _EWMA * new
