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
import json
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.agents.base import Agent, Context, Reply
from harness.store.atomic import file_lock, write_atomic

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

    def _next(self) -> str | None:
        if not self.queue.is_file():
            return None
        with file_lock(queue_lock(self.queue)):
            start = int(self.served.read_text().strip() or 0) if self.served.is_file() else 0
            lines = self.queue.read_text(encoding="utf-8").splitlines()
            served, reply = start, None
            while served < len(lines) and reply is None:
                served += 1
                try:
                    reply = json.loads(lines[served - 1])["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    print(f'{self.queue}:{served}: not a {{"reply": ...}} line; skipped', file=sys.stderr)
                if not isinstance(reply, str) or not reply.strip():
                    reply = None
            if served != start:
                write_atomic(self.served, f"{served}\n")
            return reply
