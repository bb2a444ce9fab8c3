"""Proposing: how the loop gets its next ready proposal from the agent.

`Proposer` is the part of `harness.night.loop.Night` that talks to the agent: it builds the
`Context` (program.md re-read every time, the mutable files at the best commit, the history),
asks the agent until a reply applies (LLM agents get EditError feedback a bounded number of
times; replay and search replies none), runs the static integrity checks on the result, sends
a crash with a simple bug back for a fix (at most MAX_REPAIRS times), and, for LLM agents,
keeps proposals coming in the background while the current run trains (`harness.night.pipeline`).
It holds no state of its own; `Night.__init__` sets the attributes declared below.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from harness.agents import edit_retries
from harness.agents.base import Agent, Context, CrashReport, Reply
from harness.agents.prompt import describe_hardware, is_simple_bug
from harness.edits import apply_reply, parse_reply
from harness.errors import EditError
from harness.integrity import checks

if TYPE_CHECKING:
    from harness.agents.llm import LLMAgent
    from harness.night.live import View
    from harness.night.pipeline import Pipeline
    from harness.settings import Settings
    from harness.store.git import Ratchet
    from harness.store.ledger import ResultsTSV

MAX_REPAIRS = 2  # a crash with a simple bug goes back to the model for a fix at most this often


@dataclass
class Proposal:
    """A reply ready to commit (`files` = new contents), or a bad edit (`files` None, `error` set)."""

    reply: Reply
    description: str
    files: dict[str, str] | None
    error: str | None = None
    repair: bool = False  # a fix of the last crash (its files include the crashed change)


class Proposer:
    """The proposing half of `Night`; see the module docstring."""

    s: Settings
    agent: Agent
    tsv: ResultsTSV
    view: View
    llm: LLMAgent | None
    pipeline: Pipeline[Context, Proposal] | None
    last_crash: CrashReport | None
    crash_files: dict[str, str] | None
    repairs_left: int

    def _ratchet(self) -> Ratchet:
        raise NotImplementedError

    def context(self) -> Context:
        """What the agent sees: program.md (re-read now), the files at the best commit, the history."""
        program_path = self.s.repo_root / "program.md"
        program = program_path.read_text(encoding="utf-8") if program_path.exists() else ""
        return Context(
            program=program,
            files=self.current_files(),
            history=self.tsv.rows(),
            metric=self.s.metric,
            direction=self.s.direction,
            budget_seconds=self.s.budget,
            device=self.s.device,
            hardware=describe_hardware(self.s.device),
            crash=None,  # set only when asking for a fix (see _repair): the files are the best's
        )

    def current_files(self) -> dict[str, str]:
        root = self._ratchet().worktree
        return {p: (root / p).read_text(encoding="utf-8") for p in self.s.mutable}

    def next_proposal(self) -> Proposal | None:
        """A fix of the last crash if it was a simple bug, else the next (pipelined) proposal."""
        repair = self._repair()
        if repair is not None:
            return repair
        ctx = self.context()
        if self.pipeline is None:
            return self._propose(ctx)
        proposal = self.pipeline.take(ctx, self._ratchet().best())
        for note in self.pipeline.notes:
            self.view.message(note)
        self.pipeline.notes.clear()
        if proposal is not None:
            # Stale proposals that were dropped were paid for: their cost goes on this row.
            proposal.reply = _add_cost(proposal.reply, [p.reply for p in self.pipeline.dropped])
            self.pipeline.dropped.clear()
            self._prefetch(running=1, committed_cost=proposal.reply.cost_usd)
        return proposal

    def _prefetch(self, *, running: int, committed_cost: float = 0.0) -> None:
        """Start the next proposals in the background against the best (runs while the GPU trains)."""
        if self.pipeline is None:
            return
        rows = self.tsv.rows()
        limit = None
        if self.s.max_experiments is not None:
            done = sum(1 for r in rows if r.description != "baseline")
            limit = self.s.max_experiments - done - running
        spent = sum(_float(r.extra.get("cost_usd", "")) for r in rows) + committed_cost
        if self.s.max_cost is not None and spent >= self.s.max_cost:
            limit = 0  # the proposal about to run already reaches --max-cost: ask for nothing more
        self.pipeline.prefetch(self.context(), self._ratchet().best(), limit=limit)

    def _reapply(self, proposal: Proposal, ctx: Context) -> Proposal | None:
        """Re-apply a proposal made against an older best to the files of the current best."""
        if proposal.files is None:
            return proposal  # a bad edit stays a bad edit: it gets its row
        try:
            files = apply_reply(parse_reply(proposal.reply.text), ctx.files, self.s.mutable)
            checks.check_files(files)
        except EditError:
            return None
        return replace(proposal, files=files)

    def _repair(self) -> Proposal | None:
        """Send a crash with a simple bug (syntax, import, name, shape) back for a fix, at most twice."""
        crash, files = self.last_crash, self.crash_files
        if self.llm is None or crash is None or files is None or self.repairs_left <= 0:
            return None
        if not is_simple_bug(crash):
            return None
        self.repairs_left -= 1
        self.view.message(
            f"asking the model to fix the crash ({crash.reason}); {self.repairs_left} more allowed"
        )
        ctx = replace(self.context(), files=dict(files), crash=crash)
        proposal = self._propose(ctx, agent=self.llm)
        if proposal is None:
            return None
        if proposal.files is not None:
            # Commit the crashed change plus the fix on top of the best.
            proposal.files = {**files, **proposal.files}
        proposal.description = f"fix: {proposal.description}"
        proposal.repair = True
        return proposal

    def _propose(self, ctx: Context, agent: Agent | None = None) -> Proposal | None:
        """Ask the agent until its reply applies (LLM agents get EditError feedback, at most 3 times)."""
        agent = agent or self.agent
        retries = edit_retries(agent)
        paid: list[Reply] = []  # every reply costs, also those whose edit did not apply
        for attempt in range(retries + 1):
            reply = agent.propose(ctx)
            if reply is None:
                return None
            reply = _add_cost(reply, paid)
            paid = [reply]
            description = _loose_description(reply.text)
            try:
                parsed = parse_reply(reply.text)
                description = parsed.description or description
                files = apply_reply(parsed, ctx.files, self.s.mutable)
                checks.check_files(files)  # refused shortcuts go back to the model like bad edits
                return Proposal(reply, description, files)
            except EditError as exc:
                if attempt == retries:
                    return Proposal(reply, description, None, error=str(exc))
                self.view.message(f"edit did not apply ({exc}); asking again ({attempt + 1}/{retries})")
                ctx = replace(ctx, feedback=exc.feedback)
        raise AssertionError("unreachable")


def _loose_description(text: str) -> str:
    for line in text.splitlines():
        if line.strip().lower().startswith("description:"):
            return " ".join(line.split(":", 1)[1].split())[:200] or "(no description)"
    return "(unparseable reply)"


def _add_cost(reply: Reply, earlier: list[Reply]) -> Reply:
    """`reply` with the tokens and cost of `earlier` replies (retries, dropped proposals) added."""
    if not earlier:
        return reply
    return replace(
        reply,
        input_tokens=reply.input_tokens + sum(r.input_tokens for r in earlier),
        output_tokens=reply.output_tokens + sum(r.output_tokens for r in earlier),
        cost_usd=reply.cost_usd + sum(r.cost_usd for r in earlier),
    )


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
