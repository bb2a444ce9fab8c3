"""The night: baseline first, then propose -> commit -> measure -> judge -> row, until a limit.

`Night(settings, agent).run()` owns one tag for as long as it runs: it holds the tag lock,
works in the tag's git worktree (the person's checkout is never touched) and writes one ledger
row per attempt. It stops when the agent has nothing more, after `--max-experiments` attempts
past the baseline, past `--max-cost`, after `--plateau N` attempts in a row without a keep,
before a run that could not finish by `--until HH:MM`, or on Ctrl-C/SIGTERM (the attempt in
flight becomes a crash row `interrupted`; exit 130).

Every committed attempt (keeps, discards and crashes) stays reachable as
refs/autoresearch/<tag>/attempts/<n>; a proposal that repeats an earlier change (same novelty
key) is never committed or run: its row is a `duplicate of #n` with that earlier result.

This module only orchestrates. The parts: `Proposer` (the next attempt: the agent, the
transplant queue, crash repair, pipelining, sweeps, novelty), `Memory` (records, notes,
reflection), `Measurer` (one run under the integrity guard), the `Judge` (keep / discard /
repeat), `Deadline` (--until), `Ratchet` (git), `Ledger` (the TSV), the journal (pending.json,
the tag lock), and the `View` a person watches.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import shutil
import time
from typing import Any

from harness.agents.base import Agent
from harness.agents.llm import LLMAgent
from harness.agents.queue import QueuedAgent
from harness.detect import describe_hardware
from harness.errors import ConfigError, DataError, EditError, HarnessError, RepoError
from harness.integrity.sandbox import choose
from harness.night.adopt import Adopter
from harness.night.attempt import Attempt
from harness.night.deadline import Deadline
from harness.night.judge import Judge, make_judge, mean
from harness.night.live import make_view
from harness.night.measure import Measurer, RunRecord
from harness.night.memory import Memory
from harness.night.proposer import Proposer
from harness.night.prune import Pruner, curve_of_log
from harness.night.runner import kill_leftover
from harness.settings import Settings
from harness.store import journal
from harness.store.family import Link
from harness.store.git import Ratchet
from harness.store.ledger import PRUNED, Ledger, Row, header_metric, rename_metric
from harness.store.novelty import FileRegistry

INTERRUPTED = 130
# Flags that change how a run goes: a baseline crash names them, they may be its cause.
RUN_FLAGS = ("--device", "--budget", "--timeout", "--dataset", "--cache-dir")


class Night:
    """One harness on one tag. Construct, then `run()` -> exit code (0, or 130 when interrupted)."""

    # Set by run() once the tag is locked and its worktree open.
    ratchet: Ratchet
    ledger: Ledger
    measurer: Measurer
    proposer: Proposer

    def __init__(self, settings: Settings, agent: Agent, family: Link | None = None) -> None:
        if settings.sandbox == "auto":  # `autoresearch run` settles it (and says so) before
            settings = dataclasses.replace(settings, sandbox="on" if choose("auto")[0] else "off")
        self.s = settings
        self.paths = settings.paths
        self.agent = QueuedAgent(agent, self.paths.queue)  # transplanted replies first
        self.agent_name = agent.name
        self.llm = agent if isinstance(agent, LLMAgent) else None
        self.env = dict(os.environ)
        self.depth = settings.pipeline_depth if self.llm is not None else 0
        self.judge: Judge = make_judge(settings.judge, settings.direction, settings.baseline_runs)
        self.view = make_view()
        self.deadline = Deadline(settings.until, settings.timeout) if settings.until is not None else None
        # A worker of a family claims through the family's shared ledger (harness.store.family).
        self.family = family
        self.registry: FileRegistry | Link = (
            family if family is not None else FileRegistry(self.paths.novelty, owner=settings.tag)
        )
        self.adopter: Adopter | None = None
        self.hardware = describe_hardware(settings.device)  # the `hardware` column of every row
        self.best_values: list[float] = []  # the best commit's runs (re-measurements added)
        self.since_remeasure = 0  # attempts since the best was last re-run
        self.opened = False  # the tag is locked and its worktree open
        self.stop_reason = ""

    # --- the night ------------------------------------------------------------------------

    def run(self) -> int:
        lock = journal.TagLock(self.paths)
        try:
            self._check_tag_state()
            self._open(lock)
            try:
                self._resume()
                if not self.best_values and self._in_time(self.judge.baseline_runs + int(self.s.warmup_run)):
                    self._baseline()
                while self.best_values and self._may_continue():
                    self.remeasure_best()
                    adoption = self.adopter.next(mean(self.best_values)) if self.adopter else None
                    if adoption is not None and self._in_time(1):
                        self.attempt(adoption)
                        continue
                    if self.llm is not None:
                        self.view.waiting(f"waiting for the model ({self.llm.model})")
                    asked = time.monotonic()
                    attempt = self.proposer.next()
                    if self.deadline is not None:
                        self.deadline.record_propose(time.monotonic() - asked)
                    if attempt is None:
                        self.stop_reason = f"the {self.agent_name} agent has nothing more to propose"
                        break
                    if attempt.files is not None and attempt.duplicate_of is None and not self._in_time(1):
                        if attempt.key:
                            self.registry.release(attempt.key)
                        self.view.message("the proposal that just arrived would not finish in time: not run")
                        break
                    self.attempt(attempt)
            except KeyboardInterrupt:
                self.ledger = Ledger(self.paths.tsv, self.s.metric)  # what reached the disk
                self._recover()
                self.view.message("interrupted: the attempt in flight was logged as a crash (interrupted)")
                return INTERRUPTED
            self.view.message(f"done: {self.stop_reason}")
            return 0
        finally:
            if self.opened:
                self.registry.release_owner()  # proposals still queued will never run
            lock.release()
            self.view.close()

    def _check_tag_state(self) -> None:
        tag, tsv = self.s.tag, self.paths.tsv
        if not self.s.resume and self.paths.recorded():
            raise RepoError(
                f"tag {tag!r} already exists ({tsv}); continue it with --resume or pick another --tag"
            )
        if self.s.resume and not tsv.exists() and not self.paths.dir.exists():
            raise ConfigError(
                f"tag {tag!r} has no results to resume ({tsv} is missing); start it without --resume"
            )

    def _open(self, lock: journal.TagLock) -> None:
        """Take the tag lock and open the worktree; bad input leaves nothing behind."""
        created = not self.paths.dir.exists()
        results_created = not self.paths.results.exists()
        lock.acquire()
        try:
            self.ratchet = Ratchet.open(self.s.repo_root, self.s.tag, self.s.mutable, resume=self.s.resume)
        except BaseException:
            lock.release()
            if created:
                shutil.rmtree(self.paths.dir, ignore_errors=True)
            if results_created:
                shutil.rmtree(self.paths.results, ignore_errors=True)
            raise
        try:
            self._follow_metric_rename()
            self.ledger = Ledger(self.paths.tsv, self.s.metric)
        except BaseException:
            lock.release()
            raise
        self.measurer = Measurer(
            self.s, self.paths, self.ratchet.worktree, self.env, self.view.line, notify=self.view.message
        )
        self.registry.release_owner()  # what a killed harness of this tag left in flight
        memory = Memory(
            self.paths, self.s.tag, reflect_every=self.s.reflect_every, llm=self.llm, notify=self.view.message
        )
        self.proposer = Proposer(
            self.s, self.agent, self.llm, self.ledger, self.ratchet, self.view, self.registry, memory,
            depth=self.depth, deadline=self.deadline,
        )  # fmt: skip
        if self.llm is not None:
            self.llm.notify = self.view.message
            self.view.status_line = self._llm_status
        if self.family is not None:
            for row in self.ledger.rows():  # rows a lost connection kept from the shared ledger
                self.family.logged(row)
            self.adopter = Adopter(
                self.family, self.s.family, self.ratchet, self.ledger, self.s.direction, self.view.message
            )
        self.opened = True

    def _follow_metric_rename(self) -> None:
        """On --resume after experiment.toml renamed its metric: a ledger that scored nothing yet
        (a crashed baseline) follows the rename; one with results names the command that works."""
        old = header_metric(self.paths.tsv)
        if not self.s.resume or old is None or old == self.s.metric:
            return
        try:
            rename_metric(self.paths.tsv, self.s.metric)
        except DataError:
            raise DataError(
                f"tag {self.s.tag!r} measured {old!r}, but the experiment now reports {self.s.metric!r}: "
                f"their values do not compare. Start a new tag: {self._command_for_new_tag()}"
            ) from None
        self.view.message(
            f"the experiment's metric is now {self.s.metric!r} (was {old!r}); no row had scored one"
        )

    def _command_for_new_tag(self) -> str:
        argv = shlex.split(self.s.command())
        argv[argv.index("--tag") + 1] = f"{self.s.tag}-2"
        return shlex.join(argv)

    def _resume(self) -> None:
        if self.s.resume:
            self._recover()
            if self.ledger.best is None:
                # Nothing kept yet (the baseline crashed): start from the person's branch as it is
                # now, which is where the fix was committed.
                moved = self.ratchet.restart_from_checkout()
                if moved:
                    self.view.message(
                        f"no result kept yet: starting {self.s.tag} from your checkout's {moved[:7]}"
                    )
            self.ratchet.revert()
            for log in self.paths.runs.glob("*.log"):
                kill_leftover(log)  # e.g. a re-measure of the best that a killed harness left running
        rows = self.ledger.rows()
        for row in rows:
            self.judge.observe(row.runs())
        if self.ledger.best is not None:
            self.best_values = self.ledger.best.values()
        if self.deadline is not None:
            self.deadline.seed(rows)
        if rows:
            self.view.message(f"resuming {self.s.tag}: {len(rows)} rows, next attempt #{self.ledger.next_n}")
            self.view.history(rows[-8:], mean(self.best_values) if self.best_values else None)

    def _may_continue(self) -> bool:
        if self.s.max_experiments is not None and self.ledger.attempts >= self.s.max_experiments:
            self.stop_reason = f"reached --max-experiments {self.s.max_experiments}"
            return False
        if self.s.max_cost is not None and self.ledger.spent >= self.s.max_cost:
            self.stop_reason = f"spent ${self.ledger.spent:.2f} of --max-cost ${self.s.max_cost:g}"
            return False
        if self.s.plateau is not None and self.since_keep() >= self.s.plateau:
            self.stop_reason = (
                f"--plateau {self.s.plateau}: {self.since_keep()} attempts in a row without a keep"
            )
            return False
        return self._in_time(1, propose=True)

    def since_keep(self) -> int:
        """Attempts since the last keep (the baseline's row is a keep)."""
        rows = self.ledger.rows()
        last = max((i for i, r in enumerate(rows) if r.status == "keep"), default=-1)
        return len(rows) - 1 - last if last >= 0 else len(rows)

    def _in_time(self, runs: int, *, propose: bool = False) -> bool:
        """Whether `runs` runs (after a proposal) can end before --until; sets the stop reason if not."""
        if self.deadline is None or self.deadline.allows(runs, propose=propose):
            return True
        self.stop_reason = self.deadline.describe(runs)
        return False

    # --- one attempt -------------------------------------------------------------------------

    def attempt(self, attempt: Attempt) -> Row:
        """Commit, measure, judge and log one proposed attempt."""
        attempt.n, attempt.parent = self.ledger.next_n, self.ratchet.best()
        self.since_remeasure += 1
        self.view.start(attempt.n, attempt.description, self.s.budget)
        if attempt.files is None:
            return self._bad_edit(attempt, attempt.error or "bad edit")
        earlier = self.proposer.duplicate_of(attempt)
        if earlier is not None:
            label = earlier.label(self.s.tag)
            self.view.message(f"#{attempt.n} is the same change as {label}: refused, not run")
            return self._log(attempt.duplicate(earlier, label))
        journal.write_pending(self.paths.pending, attempt.journal())
        for rel, text in attempt.files.items():
            (self.ratchet.worktree / rel).write_text(text, encoding="utf-8")
        try:
            attempt.commit = self.ratchet.commit(attempt.description)
        except EditError as exc:
            self.ratchet.revert()
            journal.clear_pending(self.paths.pending)
            if attempt.key:
                self.registry.release(attempt.key)
            return self._bad_edit(attempt, str(exc))
        self.ratchet.mark_attempt(attempt.n, attempt.commit)
        journal.write_pending(self.paths.pending, attempt.journal())
        if self.family is not None:
            self.family.started(attempt.journal())
        self.proposer.started(attempt)
        started = time.monotonic()
        row = self._measure(attempt, baseline=False)
        self.proposer.record_run(time.monotonic() - started)
        self.proposer.settled(attempt)
        return row

    def _baseline(self) -> None:
        head = self.ratchet.head()
        attempt = Attempt("baseline", self.agent_name, n=self.ledger.next_n, parent=head, commit=head)
        self.ratchet.mark_attempt(attempt.n, head)
        self.proposer.started(attempt)
        self.proposer.prefetch(running=0)  # the first proposals are made while the baseline runs
        if self.s.warmup_run:
            # A cold first run (compilation caches, page cache, GPU clocks) is slower, trains fewer
            # steps and scores worse; it must not be a noise sample of the baseline.
            self.view.start(attempt.n, "warm-up (discarded)", self.s.budget)
            warm = self._run(attempt.n, 0, warmup=True)
            shown = warm.reason or f"{self.s.metric} {warm.value:.6f}"
            self.view.message(f"warm-up run done ({shown}); not a sample, the baseline runs next")
        journal.write_pending(self.paths.pending, attempt.journal())
        if self.family is not None:
            self.family.started(attempt.journal())
        row = self._measure(attempt, baseline=True)
        if row.status == "crash":
            raise HarnessError(self._baseline_crash_message(attempt))

    def _baseline_crash_message(self, attempt: Attempt) -> str:
        """Why the baseline crashed and the exact way on: the cause, the flags, the command."""
        run = attempt.runs[-1] if attempt.runs else None
        lines = [
            f"the baseline run crashed ({attempt.reason}); its log: {run.result.log_path if run else '-'}."
        ]
        if attempt.reason == "no metric" and run is not None:
            printed = sorted(run.summary or {})
            if printed:
                lines.append(
                    f"Its summary block printed {', '.join(printed)} but not {self.s.metric!r}: set `metric` "
                    "in experiment.toml to the one you mean, or print it."
                )
            else:
                lines.append(
                    f"It printed no summary block: end the run with a '---' line, then '{self.s.metric}: <value>'."
                )
        given = self.s.given_flags()
        flags = [
            f"{flag} {given[i + 1]}"
            for i, flag in enumerate(given)
            if flag in RUN_FLAGS and i + 1 < len(given)
        ]
        if flags:
            lines.append(
                f"It ran with {', '.join(flags)}: if the unmodified experiment runs without them, the cause "
                "is there; start a new tag without them."
            )
        lines.append(
            "Fix the experiment (or experiment.toml), commit the fix on your branch, then run "
            f"`{self.s.command('--resume')}`: nothing is kept yet, so it starts from your branch's latest commit."
        )
        return " ".join(lines)

    def _bad_edit(self, attempt: Attempt, error: str) -> Row:
        self.view.message(f"#{attempt.n} bad edit: {error}")
        attempt.status = "crash"
        attempt.reason = error[:160] if error.startswith("refused: ") else "bad edit"  # integrity checks
        return self._log(attempt)

    def _measure(self, attempt: Attempt, *, baseline: bool) -> Row:
        """Run the commit (the baseline `baseline_runs` times, a candidate as often as the judge
        asks), then log it and keep or revert."""
        needed = self.judge.baseline_runs if baseline else 1
        while True:
            k = len(attempt.runs)
            if baseline:
                label = f"baseline (run {k + 1} of {needed})" if needed > 1 else "baseline"
                self.view.start(attempt.n, label, self.s.budget)
            elif k:
                self.view.start(attempt.n, f"{attempt.description} (confirmation run {k + 1})", self.s.budget)
            prune = None if baseline else self._pruner()
            record = self._run(attempt.n, k, prune=prune)
            attempt.runs.append(record)
            if record.reason == PRUNED:
                attempt.status, attempt.reason = "discard", PRUNED
                break
            if record.reason:
                attempt.status, attempt.reason = "crash", record.reason
                break
            if len(attempt.runs) < needed:
                continue
            if baseline:
                attempt.status = "keep"
                break
            verdict = self.judge.decide(attempt.values(), self.best_values)
            if verdict.status != "repeat":
                attempt.status = verdict.status
                break
            if not self._in_time(1):
                # Unconfirmed is not kept: the judge wanted another run to tell gain from noise.
                attempt.status, attempt.reason = "discard", "not confirmed before --until"
                break
            self.view.message(f"#{attempt.n} repeat: {verdict.reason}")
        return self._log(attempt)

    def _run(self, n: int, k: int, *, warmup: bool = False, prune: Pruner | None = None) -> RunRecord:
        record = self.measurer.run(n, k, warmup=warmup, prune=prune)
        if self.deadline is not None:
            self.deadline.record_run(record.result.wall_seconds)
        return record

    def _pruner(self) -> Pruner | None:
        """The early abort of a candidate's run: against the best's loss curves (its logs)."""
        best = self.ledger.best
        if self.s.prune <= 0 or best is None:
            return None
        n = int(best.extra.get("n", "-1") or -1)
        curves = [curve_of_log(log) for log in self.paths.logs_of(n) if not log.name.endswith(".warmup.log")]
        pruner = Pruner(curves, self.s.prune)
        return pruner if pruner else None

    def _log(self, attempt: Attempt) -> Row:
        """Write the attempt's row, then keep or revert, then clear the journal (this order: --resume)."""
        row = self.ledger.append(attempt.row(**self._row_context()))
        if self.family is not None:
            self.family.logged(row)
        if row.status == "keep":
            self.ratchet.keep(attempt.commit)
            self.best_values = row.values()
            if self.family is not None and self.family.remote is not None:
                self.ratchet.push_branch(self.family.remote)  # where the other workers adopt it from
        elif attempt.commit:
            self.ratchet.revert()
        journal.clear_pending(self.paths.pending)
        self.proposer.observe(attempt, row)  # the registry, the record and note, the agent
        self.view.finish(row, mean(self.best_values) if self.best_values else None)
        if self.llm is not None and attempt.reply is not None:
            limit = f" of --max-cost ${self.s.max_cost:g}" if self.s.max_cost is not None else ""
            cost = float(row.extra.get("cost_usd") or 0)
            self.view.message(f"LLM cost: ${cost:.4f} this attempt, ${self.ledger.spent:.4f} in total{limit}")
        return row

    def _row_context(self) -> dict[str, Any]:
        """What every row of this night records besides the attempt: worker, budget, hardware."""
        return {
            "worker": self.s.worker,
            "budget_s": self.s.budget,
            "device": self.s.device,
            "hardware": self.hardware,
        }

    def _llm_status(self) -> str:
        """One line for the live panel: the provider's state (retrying, PAUSED) and the spend so far."""
        if self.llm is None:
            return ""
        limit = f" of ${self.s.max_cost:g}" if self.s.max_cost is not None else ""
        state = self.llm.status.line()
        return (
            state + " | " if state else ""
        ) + f"LLM {self.llm.model}: ${self.ledger.spent:.4f} spent{limit}"

    def remeasure_best(self) -> None:
        """When the judge wants it, run the best again and fold the value into its runs.

        This refines the noise judge's sigma and the best's mean (a best kept on one lucky run
        regresses to its true level). Logged as runs/<best n>.r<k>.log; no row of its own.
        """
        if not self.best_values or not self.judge.wants_remeasure(self.since_remeasure):
            return
        if self.deadline is not None and not self.deadline.allows(2):
            return  # the time left goes to an attempt, not to measuring noise
        self.since_remeasure = 0
        best = self.ledger.best
        best_n = int(best.extra.get("n", "0") or 0) if best is not None else 0
        self.view.message(f"re-measuring the best (#{best_n}) to track the run-to-run noise")
        record = self._run(best_n, len(self.best_values))
        if record.value is not None:
            self.best_values = [*self.best_values, record.value]

    # --- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Finish the attempt recorded in pending.json (resume, or after Ctrl-C). See harness.store.journal."""
        data = journal.read_pending(self.paths.pending)
        if data is None:
            return
        attempt = Attempt.from_journal(data, str(self.paths.pending))
        for log in self.paths.logs_of(attempt.n):
            if kill_leftover(log):
                self.view.message(f"killed a run left over from an earlier harness ({log.name})")
        row = self.ledger.find(attempt.n)
        if row is None:
            row = self.ledger.append(attempt.crash("interrupted").row(**self._row_context()))
        if self.family is not None:
            self.family.logged(row)
        if row.status == "keep" and attempt.commit:
            self.ratchet.keep(attempt.commit)
        else:
            self.ratchet.revert()
        journal.clear_pending(self.paths.pending)
