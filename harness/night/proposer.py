"""Proposing: where the loop gets its next attempt, ready to commit.

`Proposer.next()` builds the agent's `Context` (program.md and notes.md re-read every time, the
mutable files at the best commit, the history with each attempt's record, near misses, what is
in flight), asks the agent until a reply can be used (an agent's `edit_retries` bounds how often
a reply goes back with feedback), runs the static integrity checks on the result (a refused
shortcut goes back like a bad edit), and returns an `Attempt`, or None when the agent has nothing
more. A reply is used in one of three ways:

- an edit (SEARCH/REPLACE or a whole file), applied to the best's files, or with `Parent: #n`
  to attempt n's files rebased onto the best (`Ratchet.rebase_attempt`: n's change and the new
  one are both committed on top of the best, so only keeps ever reach the branch);
- a sweep request (`harness.agents.sweep`): the next attempts are its TPE trials, whose rows
  carry the agent `<agent>+search`; the request's cost goes on the first trial's row;
- refused before any GPU time: a change whose novelty key (`harness.store.novelty`) equals one
  already tried or in flight goes back with that earlier result; after the agent's retries it
  becomes an attempt that is a `duplicate of #n` (a row, never run).

For LLM agents it also owns what outlives one attempt:
- crash repair: a crash whose log shows a simple bug (`harness.agents.prompt.is_simple_bug`)
  goes back to the model with the crashed files and the log tail, at most MAX_REPAIRS times in
  a row, each its own row (`fix: ...`). The loop reports every measured attempt to `settled`.
- pipelining: the next proposals are made in background threads against the best while a run
  goes on (`prefetch` before each run; `harness.night.pipeline`), each told which of the
  concurrent requests it is and what is in flight. A proposal made against an older best is
  re-applied to the new one or dropped; what dropped ones cost goes on the next row.
- the memory (`harness.night.memory`): records, notes, and the periodic reflection.
"""

from __future__ import annotations

import time
from dataclasses import replace

from harness.agents.base import Agent, Context, CrashReport, InFlight, NearMiss, Reply
from harness.agents.llm import LLMAgent
from harness.agents.prompt import describe_hardware, is_simple_bug
from harness.agents.sweep import SweepAgent, parse_sweep
from harness.edits import ParsedReply, apply_reply, parse_reply
from harness.errors import EditError
from harness.integrity import checks
from harness.night.attempt import Attempt
from harness.night.deadline import Deadline
from harness.night.live import View
from harness.night.measure import log_tail
from harness.night.memory import Memory
from harness.night.pipeline import Pipeline
from harness.settings import Settings
from harness.store.git import Ratchet
from harness.store.ledger import Ledger, Row
from harness.store.novelty import Entry, Registry, change_key

MAX_REPAIRS = 2  # a crash with a simple bug goes back to the model for a fix at most this often
NEAR_MISSES = 3  # recent discards shown with their diffs, to build on
NEAR_MISS_WINDOW = 20  # ... chosen among this many newest attempts


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
        registry: Registry,
        memory: Memory,
        *,
        depth: int | None,
        deadline: Deadline | None = None,
    ) -> None:
        """`llm`: the night's agent when it is an LLM (repairs, pipelining); `depth`: the
        pipeline's depth (None automatic, 0 off); `deadline`: --until, which bounds prefetching."""
        self.s = settings
        self.agent = agent
        self.llm = llm
        self.ledger = ledger
        self.ratchet = ratchet
        self.view = view
        self.registry = registry
        self.memory = memory
        self.deadline = deadline
        self.pipeline: Pipeline[Context, Attempt] | None = None
        if llm is not None and depth != 0:
            self.pipeline = Pipeline(self._propose, self._reapply, depth=depth, vary=self._vary)
        self.crash: CrashReport | None = None  # the last crash, while it may still be repaired
        self.crash_files: dict[str, str] = {}  # the files that crashed (best + the crashed change)
        self.repairs_left = 0
        self.sweep: SweepAgent | None = None  # the sweep whose trials come next
        self.running: Attempt | None = None  # the attempt the loop is measuring
        self.deferred: list[Attempt] = []  # duplicates of a proposal of ours not numbered yet
        self.unpaid: list[Reply] = []  # calls without a row of their own (reflections, sweep requests, ...)
        self._diffs: dict[int, str | None] = {}

    # --- what the agent sees ---------------------------------------------------------------

    def context(self) -> Context:
        """What the agent sees: program.md and notes.md (re-read now), the files at the best
        commit, the history and its records, near misses, and what is in flight."""
        program_path = self.s.repo_root / "program.md"
        program = program_path.read_text(encoding="utf-8") if program_path.exists() else ""
        rows = self.ledger.rows()
        return Context(
            program=program,
            files=self.current_files(),
            history=rows,
            metric=self.s.metric,
            direction=self.s.direction,
            budget_seconds=self.s.budget,
            device=self.s.device,
            hardware=describe_hardware(self.s.device),
            crash=None,  # set only when asking for a fix (see _repair): the files are the best's
            notes=self.memory.notes.read(),
            records=dict(self.memory.records),
            in_flight=self._in_flight(),
            near_misses=self._near_misses(rows) if self.llm is not None else (),
        )

    def current_files(self) -> dict[str, str]:
        root = self.ratchet.worktree
        return {p: (root / p).read_text(encoding="utf-8") for p in self.s.mutable}

    def _in_flight(self) -> tuple[InFlight, ...]:
        items: list[InFlight] = []
        running = self.running
        if running is not None:
            items.append(InFlight(f"#{running.n} running", running.description))
        for entry in self.registry.in_flight():
            if running is not None and entry.key == running.key:
                continue
            if entry.owner != self.s.tag:
                where = f"#{entry.n} running" if entry.n is not None else "queued"
                items.append(InFlight(f"{where} on {entry.owner}", entry.description))
            elif entry.n is None:
                items.append(InFlight("queued to run next", entry.description))
        return tuple(items)

    def _vary(self, ctx: Context, k: int, m: int) -> Context:
        """The context of the k-th of m requests written at once: the in-flight list as of now."""
        return replace(ctx, in_flight=self._in_flight(), writing=(k, m))

    def _near_misses(self, rows: list[Row]) -> tuple[NearMiss, ...]:
        """The recent discards closest to the best, with their changes (from their attempt refs)."""
        recent = [
            r
            for r in rows[-NEAR_MISS_WINDOW:]
            if r.status == "discard" and not r.extra.get("reason") and r.extra.get("n", "").isdigit()
        ]
        direction = self.s.direction
        ranked = sorted(recent, key=lambda r: r.metric if direction == "minimize" else -r.metric)
        out: list[NearMiss] = []
        for row in ranked[:NEAR_MISSES]:
            n = int(row.extra["n"])
            if n not in self._diffs:
                self._diffs[n] = self.ratchet.attempt_diff(n)
            diff = self._diffs[n]
            if diff:
                out.append(NearMiss(n, row.status, row.metric, row.description, diff))
        return tuple(out)

    # --- the next attempt ------------------------------------------------------------------

    def next(self) -> Attempt | None:
        """A ready duplicate, a fix of the last crash, a sweep trial, else the next (pipelined) proposal."""
        paid = self.memory.collect()  # a finished reflection: its cost goes on this row
        if paid is not None:
            self.unpaid.append(paid)
        attempt = self._next()
        if attempt is not None and self.unpaid:
            attempt.reply = _add_cost(attempt.reply or Reply(""), self.unpaid)
            self.unpaid = []
        return attempt

    def _next(self) -> Attempt | None:
        ready = self._ready_duplicate()
        if ready is not None:
            return ready
        repair = self._repair()
        if repair is not None:
            return repair
        while True:
            sweeping = self.sweep is not None
            attempt = self._sweep_trial() if sweeping else self._take()
            if attempt is None and sweeping:
                continue  # the sweep just ended: back to the agent
            if attempt is None:
                return self._drain()
            if attempt.sweep is not None:
                self._start_sweep(attempt)
                continue
            if self._waits(attempt):
                # A duplicate of one of our proposals not taken yet: settled once that one has a number.
                self.deferred.append(attempt)
                continue
            return attempt

    def _waits(self, attempt: Attempt) -> bool:
        """A repeat waits for its original's number (ours, not taken yet) or result (another worker's
        in flight), so its row can name it and carry the result."""
        if attempt.duplicate_of is None:
            return False
        entry = self.registry.lookup(attempt.key)
        if entry is None:
            return False  # released: the change is new after all
        return entry.in_flight and (entry.n is None or entry.owner != self.s.tag)

    def _drain(self) -> Attempt | None:
        """The agent is done: the waiting repeats get their rows, once their originals have a result
        (at most one run's timeout; then with what is known)."""
        give_up = time.monotonic() + self.s.timeout + 60
        while self.deferred:
            ready = self._ready_duplicate()
            if ready is not None:
                return ready
            if time.monotonic() > give_up:
                return self.deferred.pop(0)
            time.sleep(0.2)
        return None

    def _take(self) -> Attempt | None:
        ctx = self.context()
        if self.pipeline is None:
            return self._propose(ctx)
        attempt = self.pipeline.take(ctx, self.ratchet.best())
        for note in self.pipeline.notes:
            self.view.message(note)
        self.pipeline.notes.clear()
        for dropped in self.pipeline.dropped:
            if dropped.key:
                self.registry.release(dropped.key)
        if attempt is not None and attempt.reply is not None:
            # Stale proposals that were dropped were paid for: their cost goes on this row.
            attempt.reply = _add_cost(attempt.reply, [a.reply for a in self.pipeline.dropped if a.reply])
            self.pipeline.dropped.clear()
            # Deferred repeats are taken too: they count against --max-experiments like the one running.
            self.prefetch(running=1 + len(self.deferred), committed_cost=attempt.reply.cost_usd)
        return attempt

    def _ready_duplicate(self) -> Attempt | None:
        """A deferred repeat whose original now has its number or result, re-applied to the current
        best like any proposal made against an older one: it is still a repeat (its row says so), a
        new change when the original was dropped (it runs), or dropped when it no longer applies."""
        for i, attempt in enumerate(self.deferred):
            if self._waits(attempt):
                continue
            del self.deferred[i]
            rebased = self._reapply(attempt, self.context())
            if rebased is not None:
                return rebased
            if attempt.reply is not None:
                self.unpaid.append(attempt.reply)  # paid for: its cost goes on the next row
            return self._ready_duplicate()
        return None

    def duplicate_of(self, attempt: Attempt) -> Entry | None:
        """The earlier entry `attempt` repeats, as the registry knows it now (its result may have
        come in since the proposal was refused), or None when it is not a duplicate."""
        if attempt.duplicate_of is None:
            return None
        return self.registry.lookup(attempt.key) or attempt.duplicate_of

    def prefetch(self, *, running: int, committed_cost: float = 0.0) -> None:
        """Start the next proposals in the background against the best (runs while the GPU trains).

        `running`: attempts taken but not yet in the ledger; `committed_cost`: what they cost.
        """
        if self.pipeline is None or self.sweep is not None:
            return
        limit = None
        if self.s.max_experiments is not None:
            limit = self.s.max_experiments - self.ledger.attempts - running
        if self.s.max_cost is not None and self.ledger.spent + committed_cost >= self.s.max_cost:
            limit = 0  # the proposal about to run already reaches --max-cost: ask for nothing more
        if self.deadline is not None and not self.deadline.allows(1 + max(running, 1)):
            limit = 0  # what runs now leaves no time for another run before --until
        self.pipeline.prefetch(self.context(), self.ratchet.best(), limit=limit)

    def record_run(self, seconds: float) -> None:
        """The wall time of one attempt's runs, for the pipeline's depth."""
        if self.pipeline is not None:
            self.pipeline.record_run(seconds)

    # --- the loop reports back -------------------------------------------------------------

    def started(self, attempt: Attempt) -> None:
        """The loop numbered `attempt` and is about to run it."""
        self.running = attempt
        if attempt.key:
            self.registry.number(attempt.key, attempt.n)

    def observe(self, attempt: Attempt, row: Row) -> None:
        """`attempt`'s row is written: settle its key, remember it, let its agent learn."""
        self.running = None
        if attempt.key and attempt.duplicate_of is None:
            self.registry.settle(
                attempt.key, attempt.n, row.status, None if row.status == "crash" else row.metric
            )
        self.memory.remember(attempt, row)
        if attempt.reply is not None:
            if attempt.reply.meta.get("sweep") and self.sweep is not None:
                self.sweep.observe(attempt.reply, row)
            elif not attempt.reply.meta.get("sweep"):
                self.agent.observe(attempt.reply, row)
        last = self.s.max_experiments is not None and self.ledger.attempts >= self.s.max_experiments
        if self.memory.due(self.ledger.attempts) and not last:
            self.memory.reflect(self.context(), self.ledger.attempts)

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

    # --- sweeps ----------------------------------------------------------------------------

    def _start_sweep(self, request: Attempt) -> None:
        spec = request.sweep
        assert spec is not None and request.reply is not None
        label = f"{request.agent or self.agent.name}+search"
        seed = f"{self.s.tag}/{self.ledger.next_n}"
        self.sweep = SweepAgent(spec, label=label, seed_text=seed, direction=self.s.direction)
        self.unpaid.append(request.reply)  # the request is paid by the first trial's row
        names = ", ".join(p.name for p in spec.params)
        self.view.message(f"sweep requested ({spec.description}): {spec.trials} TPE trials over {names}")

    def _sweep_trial(self) -> Attempt | None:
        assert self.sweep is not None
        attempt = self._propose(self.context(), agent=self.sweep)
        if attempt is None:
            self.sweep = None
            self.view.message("the sweep is done; back to the model")
        return attempt

    # --- one proposal ----------------------------------------------------------------------

    def _reapply(self, attempt: Attempt, ctx: Context) -> Attempt | None:
        """Re-apply a proposal made against an older best to the files of the current best."""
        if attempt.files is None or attempt.reply is None:
            return attempt  # a bad edit stays a bad edit: it gets its row
        try:
            parsed = parse_reply(attempt.reply.text)
            base = self._base(parsed, dict(ctx.files))
            files = _changed(base, apply_reply(parsed, base, self.s.mutable), ctx.files)
            self._check(files)
        except EditError:
            if attempt.key and attempt.duplicate_of is None:
                self.registry.release(attempt.key)
            return None
        if attempt.duplicate_of is not None:
            # A refused repeat whose original was dropped: claim the change now (None: it is new).
            attempt = replace(attempt, duplicate_of=self.registry.claim(attempt.key, attempt.description))
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
        best = self.current_files()
        ctx = replace(self.context(), files=dict(self.crash_files), crash=crash)
        attempt = self._propose(ctx, agent=self.llm, best=best)
        if attempt is None:
            return None
        if attempt.files is not None:
            # Commit the crashed change plus the fix on top of the best.
            attempt.files = {**self.crash_files, **attempt.files}
        attempt.description = f"fix: {attempt.description}"
        attempt.repair = True
        return attempt

    def _base(self, parsed: ParsedReply, files: dict[str, str]) -> dict[str, str]:
        """The files a reply's edits apply to: `files`, or with `Parent: #n` attempt n's rebased onto them."""
        if parsed.parent is None:
            return files
        return self.ratchet.rebase_attempt(parsed.parent, files)

    def _propose(
        self, ctx: Context, agent: Agent | None = None, best: dict[str, str] | None = None
    ) -> Attempt | None:
        """Ask the agent until its reply can be used (at most `edit_retries` times with feedback).

        `best`: the best's files when `ctx.files` are something else (a crash being repaired);
        the novelty key is always the change from the best.
        """
        agent = agent or self.agent
        best = ctx.files if best is None else best
        paid: list[Reply] = []  # every reply costs, also those that could not be used
        for attempt in range(agent.edit_retries + 1):
            reply = agent.propose(ctx)
            if reply is None:
                return None
            reply = _add_cost(reply, paid)
            paid = [reply]
            description = _loose_description(reply.text)
            who = reply.agent or agent.name
            last = attempt == agent.edit_retries
            try:
                parsed = parse_reply(reply.text)
                description = parsed.description or description
                if parsed.sweep is not None:
                    if ctx.crash is not None:
                        raise EditError(
                            "a sweep request cannot fix a crash",
                            "A crash is fixed with an edit, not a sweep request: send SEARCH/REPLACE blocks.",
                        )
                    spec = parse_sweep(
                        parsed.sweep, description, dict(ctx.files), trials=parsed.trials,
                        default_trials=self.s.sweep_trials,
                    )  # fmt: skip
                    return Attempt(description, who, reply, note=parsed.note, sweep=spec)
                base = self._base(parsed, dict(ctx.files))
                files = _changed(base, apply_reply(parsed, base, self.s.mutable), ctx.files)
                if not files:
                    raise EditError(
                        "the edit changes nothing",
                        "Your edit undoes the parent's change: the files equal the current ones. "
                        "Propose a change that actually modifies the code.",
                    )
                self._check(files)  # refused shortcuts go back to the model like bad edits
                if parsed.parent is not None:
                    description = f"on #{parsed.parent}: {description}"
                key = change_key(best, {**ctx.files, **files})
                if key is None:
                    raise EditError(
                        "the edit changes only comments or whitespace",
                        "Your edit changes only comments, docstrings or whitespace, which cannot change "
                        "a run. Propose a change to the code itself.",
                    )
                made = Attempt(
                    description, who, reply, files, key=key, note=parsed.note, built_on=parsed.parent
                )
                earlier = self.registry.claim(key, description)
                if earlier is None:
                    return made
                if last:
                    made.duplicate_of = earlier  # never run; the loop gives it its row
                    return made
                self.view.message(
                    f"proposal repeats {earlier.label(self.s.tag)}; asking again "
                    f"({attempt + 1}/{agent.edit_retries})"
                )
                ctx = replace(ctx, feedback=_duplicate_feedback(earlier, self.s.tag, self.s.metric))
            except EditError as exc:
                if last:
                    return Attempt(description, who, reply, error=str(exc))
                self.view.message(
                    f"edit did not apply ({exc}); asking again ({attempt + 1}/{agent.edit_retries})"
                )
                ctx = replace(ctx, feedback=exc.feedback)
        raise AssertionError("unreachable")


def _changed(base: dict[str, str], applied: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    """The files that differ from `current`: `applied` over `base` (a parent's rebased files)."""
    full = {**base, **applied}
    return {path: text for path, text in full.items() if text != current.get(path)}


def _duplicate_feedback(earlier: Entry, own: str, metric: str) -> str:
    label = earlier.label(own)
    if earlier.in_flight:
        result = "it is being tried right now"
    elif earlier.status == "crash":
        result = "it crashed"
    else:
        result = (
            f"{metric} {earlier.metric:.6f}, {earlier.status}"
            if earlier.metric is not None
            else earlier.status
        )
    return (
        f"Your change is the same as {label} ({earlier.description!r}), once comments and whitespace are "
        f"ignored: {result}. It was not run again. Propose a different change (you may build on it with "
        "`Parent: #n` and change something more)."
    )


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
