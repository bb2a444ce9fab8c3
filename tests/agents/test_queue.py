"""`QueuedAgent`: the transplant queue (results/<tag>/queue.jsonl) is served before the night's agent
is asked, each reply naming who made it; served lines survive restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.agents.base import Agent, Context, Reply
from harness.agents.queue import QueuedAgent
from harness.errors import DataError
from harness.review.transplant import append_queue
from harness.store.ledger import Row


class ScriptedAgent(Agent):
    """A fake agent: proposes numbered replies and records what it was shown."""

    name = "scripted"

    def __init__(self) -> None:
        self.seen_feedback: list[str | None] = []
        self.observed: list[str] = []
        self.count = 0

    def propose(self, ctx: Context) -> Reply | None:
        self.seen_feedback.append(ctx.feedback)
        self.count += 1
        return Reply(text=f"Description: inner {self.count}\n")

    def observe(self, reply: Reply, row: Row) -> None:
        self.observed.append(reply.text)


def ctx(feedback: str | None = None) -> Context:
    return Context(program="", files={}, history=[], feedback=feedback)


def test_queued_agent_serves_queue_first_and_survives_restarts(tmp_path: Path) -> None:
    queue = tmp_path / "results" / "t" / "queue.jsonl"
    append_queue(queue, ["Description: q1\n", "Description: q2\n"])
    inner = ScriptedAgent()
    agent = QueuedAgent(inner, queue)
    row = Row("0000000", 0.0, 0.0, "crash", "x")

    first = agent.propose(ctx())
    assert first is not None and first.text == "Description: q1\n" and first.meta["queued"]
    assert first.agent == "transplant"  # what the loop writes in the agent column
    agent.observe(first, row)
    assert inner.observed == []  # the inner agent learns only from its own proposals

    # The loop would send edit feedback about q1; the queue moves on to q2.
    second = agent.propose(ctx(feedback="SEARCH text not found"))
    assert second is not None and second.text == "Description: q2\n"

    # Queue empty: the inner agent is asked, without feedback on a reply it never made.
    third = agent.propose(ctx(feedback="SEARCH text not found"))
    assert third is not None and third.text == "Description: inner 1\n" and third.agent == "scripted"
    assert inner.seen_feedback == [None]
    agent.observe(third, row)
    assert inner.observed == ["Description: inner 1\n"]

    # Lines appended mid-night (another transplant), a damaged line, and a restart: the damage
    # is refused naming the file and line (nothing is served past it) until it is removed.
    with queue.open("a") as fh:
        fh.write("not json\n")
    append_queue(queue, ["Description: q3\n"])
    restarted = QueuedAgent(ScriptedAgent(), queue)
    served = (queue.parent / "queue.jsonl.served").read_text()
    with pytest.raises(DataError, match=r"queue\.jsonl, line 3: not valid JSON"):
        restarted.propose(ctx())
    with pytest.raises(DataError, match="line 3"):
        restarted.check()
    assert (queue.parent / "queue.jsonl.served").read_text() == served and restarted.inner.count == 0
    queue.write_text("".join(ln for ln in queue.read_text().splitlines(keepends=True) if ln != "not json\n"))
    fourth = restarted.propose(ctx())
    assert fourth is not None and fourth.text == "Description: q3\n"
    fifth = restarted.propose(ctx())
    assert fifth is not None and fifth.text == "Description: inner 1\n"
    assert fifth.agent == "scripted" and restarted.inner.count == 1
    assert agent.name == restarted.name == "transplant"  # the agent itself never changes its name


def test_the_inner_agents_retry_bound_and_a_replys_own_agent_name(tmp_path: Path) -> None:
    class Fixed(ScriptedAgent):
        edit_retries = 0

    class Relabelled(ScriptedAgent):
        def propose(self, ctx: Context) -> Reply | None:
            reply = super().propose(ctx)
            return Reply(text=reply.text, agent="someone else") if reply else None

    assert QueuedAgent(Fixed(), tmp_path / "q.jsonl").edit_retries == 0
    assert QueuedAgent(ScriptedAgent(), tmp_path / "q.jsonl").edit_retries == 3
    relabelled = QueuedAgent(Relabelled(), tmp_path / "q.jsonl").propose(ctx())
    assert relabelled is not None and relabelled.agent == "someone else"
