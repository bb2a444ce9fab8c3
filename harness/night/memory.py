"""The night's memory: each attempt's record, the research notes, and the reflection that rewrites them.

`Memory.remember(attempt, row)` runs once per attempt, after its row is written: it writes the
attempt's record (`results/<tag>/attempts/<n>.json`: diagnostics, novelty key, note, log tail),
keeps it for the prompt (`records`), and appends the reply's `Note:` line to notes.md.

Every `reflect_every` attempts (`Settings.reflect_every`; 0: never) and only for LLM agents, a
reflection call rewrites the notes from the history (`LLMAgent.reflect`). It runs in a
background thread, like pipelined proposals, so the GPU does not wait for it; `collect()` picks
up a finished one at the next proposal, writes the notes (unless the person edited them in the
meantime: `harness.store.notes.Notes.rewrite`) and returns its reply, whose cost the proposer puts
on the next row (as it does for dropped proposals). One reflection runs at a time; one that falls
due meanwhile starts when it is done. A reflection still running when the night ends is abandoned
(like proposals still in flight, its cost reaches no row); a failed one is reported and skipped
(the next proposal meets any outage).
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

from harness.agents.base import Context, Reply
from harness.agents.llm import LLMAgent
from harness.errors import ProviderError
from harness.night.attempt import Attempt
from harness.night.measure import log_tail
from harness.store import attempts
from harness.store.attempts import AttemptRecord
from harness.store.ledger import Row
from harness.store.notes import MAX_NOTES_CHARS, Notes, bound, clean_note
from harness.store.paths import TagPaths

_FENCED = re.compile(r"^\s*(`{3,}|~{3,})[^\n]*\n(.*?)^\s*\1\s*$", re.S | re.M)


@dataclass
class _Reflection:
    based_on: str  # the notes the call was shown
    after: int  # the attempts count that triggered it
    reply: Reply | None = None
    error: str = ""
    done: bool = False


def notes_from_reply(text: str) -> str:
    """The notes in a reflection reply: its first fenced block, else the whole text; bounded."""
    match = _FENCED.search(text)
    body = match.group(2) if match else text
    return bound(body.strip(), MAX_NOTES_CHARS)


class Memory:
    """Records, notes and reflection of one tag."""

    def __init__(
        self,
        paths: TagPaths,
        tag: str,
        *,
        reflect_every: int,
        llm: LLMAgent | None,
        notify: Callable[[str], None],
    ) -> None:
        self.paths = paths
        self.notes = Notes(paths.notes, tag)
        self.records: dict[int, AttemptRecord] = attempts.read_all(paths.attempts)
        self.reflect_every = reflect_every
        self.llm = llm
        self.notify = notify
        self._reflection: _Reflection | None = None
        self._last_started: int | None = None  # attempts done when the last reflection started
        self._lock = threading.Lock()
        self.reflections = 0  # reflections written this night

    def remember(self, attempt: Attempt, row: Row) -> None:
        """Write attempt n's record and append its note; call once its row is written."""
        if attempt.n < 0:
            return
        log = self.paths.log(attempt.n, max(0, len(attempt.runs) - 1))
        record = attempt.record(row, log_tail(log, attempts.LOG_TAIL_LINES) if attempt.runs else "")
        attempts.write(self.paths.record(attempt.n), record)
        self.records[attempt.n] = record
        if attempt.note:
            result = row.status if row.status == "crash" else f"{row.status}, {row.metric:.6f}"
            if attempt.duplicate_of is not None:  # its result is the earlier attempt's
                result = f"{attempt.reason}, {result}"
            self.notes.append(f"#{attempt.n} ({result}): {clean_note(attempt.note)}")

    # --- reflection ----------------------------------------------------------------------

    def due(self, attempts_done: int) -> bool:
        """Whether a reflection should start now, after `attempts_done` attempts past the baseline:
        `reflect_every` attempts after the last one started (a multiple of it at the start of a
        harness, so a resumed tag keeps its rhythm) and none still running. One that was due while
        the previous one still ran starts as soon as that one is done, not a whole period later."""
        if self.llm is None or self.reflect_every <= 0 or attempts_done <= 0:
            return False
        if self._last_started is None:
            self._last_started = (attempts_done - 1) // self.reflect_every * self.reflect_every
        if attempts_done - self._last_started < self.reflect_every:
            return False
        with self._lock:
            return self._reflection is None

    def reflect(self, ctx: Context, attempts_done: int) -> None:
        """Start a reflection on `ctx` (the history and notes as they are now) in the background."""
        llm = self.llm
        if llm is None:
            return
        job = _Reflection(based_on=self.notes.read(), after=attempts_done)
        ctx = dataclasses.replace(ctx, notes=job.based_on)

        def work() -> None:
            try:
                job.reply = llm.reflect(ctx)
            except ProviderError as exc:
                job.error = str(exc)
            finally:
                job.done = True

        with self._lock:
            self._reflection = job
        self._last_started = attempts_done
        self.notify(f"reflecting on {attempts_done} attempts: the model rewrites the research notes")
        threading.Thread(target=work, name="autoresearch-reflect", daemon=True).start()

    def collect(self) -> Reply | None:
        """A finished reflection: its notes written (if still based on the file), its reply returned."""
        with self._lock:
            job = self._reflection
            if job is None or not job.done:
                return None
            self._reflection = None
        if job.reply is None:
            self.notify(
                f"reflection after {job.after} attempts failed ({job.error}); the notes stay as they were"
            )
            return None
        text = notes_from_reply(job.reply.text)
        if not text:
            self.notify("the reflection returned no notes; they stay as they were")
        elif self.notes.rewrite(text, job.based_on):
            self.reflections += 1
            self.notify(
                f"research notes rewritten after {job.after} attempts ({len(text)} chars, "
                f"${job.reply.cost_usd:.4f})"
            )
        else:
            self.notify("notes.md was edited during the reflection: your version is kept")
        return job.reply
