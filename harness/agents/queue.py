"""The transplant queue as an agent: queued replies are served before the night's agent is asked.

`autoresearch transplant` appends other branches' kept changes to `results/<tag>/queue.jsonl`
(`{"reply": ...}` lines, under the queue's lock `queue.jsonl.lock`); the loop wraps its agent
in `QueuedAgent`, so each transplanted change is run and judged on this machine like any other
proposal. `queue.jsonl.served` counts the lines already served, so a restarted night continues
after the last served line and lines appended mid-night are picked up at the next proposal.

A queued reply names its maker in `Reply.agent` ("transplant"); a reply of the inner agent
carries the inner agent's name. The agent column of each row is taken from its own reply, so it
stays right when proposals are made in background threads. A queued change that does not apply
any more is sent back like any bad edit; the queue then moves on (the inner agent never gets
feedback on a reply it did not make).
"""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.agents.base import Agent, Context, Reply
from harness.errors import DataError
from harness.store.atomic import file_lock, write_atomic
from harness.store.schema import QUEUE_LIMIT, read_count, read_text, reply_lines

if TYPE_CHECKING:
    from harness.store.ledger import Row


class _LastReply(threading.local):
    """Per proposing thread (the pipeline proposes in several): was its last reply a queued one?"""

    queued = False


def queue_lock(queue: Path) -> Path:
    """The lock file shared by the queue's writer (`autoresearch transplant`) and its reader."""
    return queue.with_name(queue.name + ".lock")


class QueuedAgent(Agent):
    """Serves queued replies (results/<tag>/queue.jsonl) first, then asks `inner`."""

    name: ClassVar[str] = "transplant"

    def __init__(self, inner: Agent, queue: Path) -> None:
        self.inner = inner
        self.queue = Path(queue)
        self.served = self.queue.with_name(self.queue.name + ".served")
        self.edit_retries = inner.edit_retries
        self._local = _LastReply()

    def propose(self, ctx: Context) -> Reply | None:
        if ctx.feedback is not None and self._local.queued:
            # The feedback is about a queued reply; the queue cannot rewrite it, so move on,
            # and do not hand the inner agent feedback on a reply it never made.
            ctx = dataclasses.replace(ctx, feedback=None)
        text = self._next()
        self._local.queued = text is not None
        if text is not None:
            return Reply(text=text, model=self.name, agent=self.name, meta={"queued": True})
        reply = self.inner.propose(ctx)
        return dataclasses.replace(reply, agent=reply.agent or self.inner.name) if reply else None

    def observe(self, reply: Reply, row: Row) -> None:
        if not reply.meta.get("queued"):
            self.inner.observe(reply, row)

    def check(self) -> None:
        """Read the queue through its schema without serving anything: DataError on damage."""
        if self.queue.exists() or self.served.exists():
            with file_lock(queue_lock(self.queue)):
                self._unserved()

    def _unserved(self) -> tuple[int, int, list[tuple[int, str]]]:
        """(lines served so far, lines in the queue, the (line number, reply) of every line after
        the served ones); under the lock. DataError naming the file and line on damage."""
        restart = f"rm {self.served}"
        text = read_text(self.queue, limit=QUEUE_LIMIT, fix=f"move it away (mv {self.queue} {self.queue}.bak)",
                         what="transplant queue") or ""  # fmt: skip
        start = read_count(self.served, fix=f"remove it to serve the queue from its start ({restart})") or 0
        total = len(text.splitlines())
        if start > total:
            raise DataError(
                f"{self.served}: counts {start} lines served but {self.queue} has {total}; serve nothing "
                f"more from it (echo {total} > {self.served}) or serve it from its start ({restart})"
            )
        fix = f"remove that line from {self.queue} and run again with --resume"
        return start, total, reply_lines(text, str(self.queue), fix, start=start)

    def _next(self) -> str | None:
        if not self.queue.is_file() and not self.served.exists():
            return None
        with file_lock(queue_lock(self.queue)):
            start, total, lines = self._unserved()
            served, reply = total, None
            for lineno, text in lines:
                if text.strip():  # an empty reply is skipped
                    served, reply = lineno, text
                    break
            if served != start:
                write_atomic(self.served, f"{served}\n")
            return reply
