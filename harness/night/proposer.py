"""Proposing: where the loop gets its next attempt, ready to commit.

`Proposer.next()` builds the agent's `Context` (program.md re-read every time, the mutable files
at the best commit, the history), asks the agent until a reply applies (an agent's
`edit_retries` bounds how often a non-applying edit goes back with feedback), runs the static
integrity checks on the result (a refused shortcut goes back like a bad edit), and returns an
`Attempt`, or None when the agent has nothing more.

For LLM agents it also owns two things that outlive one attempt:
- crash repair: a crash whose log shows a simple bug (`harness.agents.prompt.is_simple_bug`)
  goes back to the model with the crashed files and the log tail, at most MAX_REPAIRS times in
  a row, each its own row (`fix: ...`). The loop reports every measured attempt to `settled`.
- pipelining: the next proposals are made in background threads against the best while a run
  goes on (`prefetch` before each run; `harness.night.pipeline`). A proposal made against an
  older best is re-applied to the new one or dropped; what dropped ones cost goes on the next row.
"""

from __future__ import annotations

from dataclasses import replace

from harness.agents.base import Agent, Context, CrashReport, Reply
from harness.agents.llm import LLMAgent
from harness.agents.prompt import describe_hardware, is_simple_bug
from harness.edits import apply_reply, parse_reply
from harness.errors import EditError
from harness.integrity import checks
from harness.night.attempt import Attempt
from harness.night.live import View
from harness.night.measure import log_tail
from harness.night.pipeline import Pipeline
from harness.settings import Settings
from harness.store.git import Ratchet
from harness.store.ledger import Ledger
from harness.store.schema import read_program
from harness.store.text import DESCRIPTION_LIMIT, sanitize

MAX_REPAIRS = 2  # a crash with a simple bug goes back to the model for a fix at most this often


class Proposer:
    """Asks the agent (and the LLM, for repairs) for attempts on the tag's current best."""

    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        llm: LLMAgent | None,
        ledger: Ledger,
        ratchet: Ratchet,
        view: View,
        *,
        depth: int | None,
    ) -> None:
        """`llm`: the night's agent when it is an LLM (repairs, pipelining); `depth`: the
        pipeline's depth (None automatic, 0 off)."""
        self.s = settings
        self.agent = agent
        self.llm = llm
        self.ledger = ledger
        self.ratchet = ratchet
        self.view = view
        self.pipeline: Pipeline[Context, Attempt] | None = None
        if llm is not None and depth != 0:
            self.pipeline = Pipeline(self._propose, self._reapply, depth=depth)
        self.crash: CrashReport | None = None  # the last crash, while it may still be repaired
        self.crash_files: dict[str, str] = {}  # the files that crashed (best + the crashed change)
        self.repairs_left = 0

    def context(self) -> Context:
        """What the agent sees: program.md (re-read now), the files at the best commit, the history."""
        program = read_program(self.s.repo_root / "program.md")  # non-UTF-8 bytes: replaced, with a warning
        return Context(
            program=program,
            files=self.current_files(),
            history=self.ledger.rows(),
            metric=self.s.metric,
            direction=self.s.direction,
            budget_seconds=self.s.budget,
            device=self.s.device,
            hardware=describe_hardware(self.s.device),
            crash=None,  # set only when asking for a fix (see _repair): the files are the best's
        )

    def current_files(self) -> dict[str, str]:
        root = self.ratchet.worktree
        return {p: (root / p).read_text(encoding="utf-8") for p in self.s.mutable}

    def next(self) -> Attempt | None:
        """A fix of the last crash if it was a simple bug, else the next (pipelined) proposal."""
        repair = self._repair()
        if repair is not None:
            return repair
        ctx = self.context()
        if self.pipeline is None:
            return self._propose(ctx)
        attempt = self.pipeline.take(ctx, self.ratchet.best())
        for note in self.pipeline.notes:
            self.view.message(note)
        self.pipeline.notes.clear()
        if attempt is not None and attempt.reply is not None:
            # Stale proposals that were dropped were paid for: their cost goes on this row.
            attempt.reply = _add_cost(attempt.reply, [a.reply for a in self.pipeline.dropped if a.reply])
            self.pipeline.dropped.clear()
            self.prefetch(running=1, committed_cost=attempt.reply.cost_usd)
        return attempt

    def prefetch(self, *, running: int, committed_cost: float = 0.0) -> None:
        """Start the next proposals in the background against the best (runs while the GPU trains).

        `running`: attempts taken but not yet in the ledger; `committed_cost`: what they cost.
        """
        if self.pipeline is None:
            return
        limit = None
        if self.s.max_experiments is not None:
            limit = self.s.max_experiments - self.ledger.attempts - running
        if self.s.max_cost is not None and self.ledger.spent + committed_cost >= self.s.max_cost:
            limit = 0  # the proposal about to run already reaches --max-cost: ask for nothing more
        self.pipeline.prefetch(self.context(), self.ratchet.best(), limit=limit)

    def record_run(self, seconds: float) -> None:
        """The wall time of one attempt's runs, for the pipeline's depth."""
        if self.pipeline is not None:
            self.pipeline.record_run(seconds)

    def settled(self, attempt: Attempt) -> None:
        """An attempt was measured and its row written: remember a crash that may be repaired."""
        if attempt.status != "crash":
            self.crash, self.crash_files, self.repairs_left = None, {}, 0
            return
        tail = log_tail(attempt.runs[-1].result.log_path, 50) if attempt.runs else ""
        self.crash = CrashReport(attempt.description, attempt.reason, tail)
        # The worktree is back at the best: the crashed files are the best's plus the change.
        self.crash_files = {**self.current_files(), **(attempt.files or {})}
        if not attempt.repair:
            self.repairs_left = MAX_REPAIRS  # a fresh crash: up to two fixes

    def _check(self, files: dict[str, str]) -> None:
        """The experiment's integrity checks (EditError when refused)."""
        checks.check_files(files, checks=self.s.checks, sandboxed=self.s.sandbox == "on")

    def _reapply(self, attempt: Attempt, ctx: Context) -> Attempt | None:
        """Re-apply a proposal made against an older best to the files of the current best."""
        if attempt.files is None or attempt.reply is None:
            return attempt  # a bad edit stays a bad edit: it gets its row
        try:
            files = _encodable(apply_reply(parse_reply(attempt.reply.text), ctx.files, self.s.mutable))
            self._check(files)
        except EditError:
            return None
        return replace(attempt, files=files)

    def _repair(self) -> Attempt | None:
        """Send a crash with a simple bug (syntax, import, name, shape) back for a fix, at most twice."""
        crash = self.crash
        if self.llm is None or crash is None or self.repairs_left <= 0 or not is_simple_bug(crash):
            return None
        self.repairs_left -= 1
        self.view.message(
            f"asking the model to fix the crash ({crash.reason}); {self.repairs_left} more allowed"
        )
        ctx = replace(self.context(), files=dict(self.crash_files), crash=crash)
        attempt = self._propose(ctx, agent=self.llm)
        if attempt is None:
            return None
        if attempt.files is not None:
            # Commit the crashed change plus the fix on top of the best.
            attempt.files = {**self.crash_files, **attempt.files}
        attempt.description = sanitize(f"fix: {attempt.description}", DESCRIPTION_LIMIT)
        attempt.repair = True
        return attempt

    def _propose(self, ctx: Context, agent: Agent | None = None) -> Attempt | None:
        """Ask the agent until its reply applies (at most `edit_retries` times with feedback)."""
        agent = agent or self.agent
        paid: list[Reply] = []  # every reply costs, also those whose edit did not apply
        for attempt in range(agent.edit_retries + 1):
            reply = agent.propose(ctx)
            if reply is None:
                return None
            reply = _add_cost(reply, paid)
            paid = [reply]
            description = _loose_description(reply.text)
            try:
                parsed = parse_reply(reply.text)
                description = sanitize(parsed.description, DESCRIPTION_LIMIT) or description
                files = _encodable(apply_reply(parsed, ctx.files, self.s.mutable))
                self._check(files)  # refused shortcuts go back to the model like bad edits
                return Attempt(description, reply.agent or agent.name, reply, files)
            except EditError as exc:
                if attempt == agent.edit_retries:
                    return Attempt(description, reply.agent or agent.name, reply, error=str(exc))
                self.view.message(
                    f"edit did not apply ({exc}); asking again ({attempt + 1}/{agent.edit_retries})"
                )
                ctx = replace(ctx, feedback=exc.feedback)
        raise AssertionError("unreachable")


def _encodable(files: dict[str, str]) -> dict[str, str]:
    """`files`, if each can be written as UTF-8; an EditError (a bad edit) otherwise."""
    for path, text in files.items():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EditError(
                f"the edit of {path} holds a character that is not valid Unicode (at {exc.start})",
                f"Your edit of {path} contains an invalid character (a lone surrogate) at offset {exc.start}; "
                "write plain UTF-8 text.",
            ) from None
    return files


def _loose_description(text: str) -> str:
    for line in text.splitlines():
        if line.strip().lower().startswith("description:"):
            return sanitize(line.split(":", 1)[1], DESCRIPTION_LIMIT) or "(no description)"
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
