"""The experiment loop: baseline first, then propose -> apply -> commit -> run -> judge -> ratchet -> log.

`Night(settings, agent).run()` owns one tag for as long as it runs: it holds the tag lock,
works in the tag's git worktree (the person's checkout is never touched), and writes one TSV
row per attempt. It stops when the agent has nothing more (None), after `--max-experiments`
attempts past the baseline, past `--max-cost`, or on Ctrl-C/SIGTERM (the attempt in flight
becomes a crash row `interrupted`; exit 130).

Seams for later work (keep them small): `next_proposal()` (in `harness.night.proposer.Proposer`,
which Night inherits) returns the next ready proposal: pipelining and crash repair live there;
`checks` are called after every run with its `RunRecord` and may return a crash reason, and the
guard and metric provenance wrap every run (integrity).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from harness.agents.base import Agent, Context, CrashReport, Reply
from harness.agents.llm import LLMAgent
from harness.errors import ConfigError, EditError, HarnessError, RepoError
from harness.integrity import provenance
from harness.integrity.guard import Guard
from harness.night.judge import Judge, mean
from harness.night.live import View, make_view
from harness.night.metrics import metric_value, read_summary, typed
from harness.night.noise import make_judge, prime_from_runs
from harness.night.outcome import AttemptInfo, RunRecord, build_row, crash_reason, log_tail, row_values
from harness.night.pipeline import Pipeline
from harness.night.proposer import MAX_REPAIRS, Proposal, Proposer
from harness.night.runner import child_env, kill_leftover
from harness.night.runner import run as run_command
from harness.review.transplant import QueuedAgent
from harness.settings import Settings
from harness.store import journal
from harness.store.git import Ratchet
from harness.store.ledger import ResultsTSV, Row

INTERRUPTED = 130


class Stop(Exception):
    """Raised inside the loop to end the night after the current row (e.g. an interrupted run)."""


class Night(Proposer):
    """One harness on one tag. Construct, then `run()` -> exit code (0, or 130 when interrupted)."""

    def __init__(
        self,
        settings: Settings,
        agent: Agent,
        *,
        judge: Judge | None = None,
        view: View | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.s = settings
        self.agent = QueuedAgent(agent, settings.tag_dir / "queue.jsonl")  # transplanted replies first
        self.judge: Judge = judge or make_judge(settings.judge, settings.direction, settings.baseline_runs)
        self.view = view or make_view()
        self.env = dict(os.environ if env is None else env)
        self.tsv = ResultsTSV(settings.tsv_path, settings.metric)
        self.pending_path = settings.tag_dir / "pending.json"
        self.runs_dir = settings.tag_dir / "runs"
        self.checks: list[Callable[[RunRecord], str | None]] = []
        self.guard: Guard | None = None  # integrity: protected paths, built once the worktree exists
        self.since_remeasure = 0  # attempts since the best was last re-run (noise judge)
        self.ratchet: Ratchet | None = None
        self.best_values: list[float] = []
        self.next_n = 0
        self.last_crash: CrashReport | None = None
        self.stop_reason = ""
        # LLM agents: crash repair, pipelined proposals, retries and outages shown in the view.
        inner = getattr(self.agent, "inner", self.agent)
        self.llm: LLMAgent | None = inner if isinstance(inner, LLMAgent) else None
        self.pipeline: Pipeline[Context, Proposal] | None = None
        self.spent = 0.0  # LLM spend of the night so far (USD), for the live view
        if self.llm is not None:
            self.llm.notify = self.view.message
            if hasattr(self.view, "status_line"):  # the rich panel shows provider state and spend
                setattr(self.view, "status_line", self._llm_status)  # noqa: B010 - not part of View
            if settings.pipeline_depth != 0:
                self.pipeline = Pipeline(self._propose, self._reapply, depth=settings.pipeline_depth)
        self.repairs_left = 0
        self.crash_files: dict[str, str] | None = None

    # --- the night ------------------------------------------------------------------------

    def run(self) -> int:
        self._check_tag_state()
        created = not self.s.tag_dir.exists()
        results_created = not self.s.results_dir.exists()
        lock = journal.TagLock(self.s.tag_dir / "lock")
        lock.acquire()
        try:
            try:
                self.ratchet = Ratchet.open(
                    self.s.repo_root, self.s.tag, self.s.mutable, resume=self.s.resume
                )
            except BaseException:
                # Bad input must leave nothing behind: drop the lock folder we just made.
                lock.release()
                if created:
                    shutil.rmtree(self.s.tag_dir, ignore_errors=True)
                if results_created:
                    shutil.rmtree(self.s.results_dir, ignore_errors=True)
                raise
            try:
                self._resume_state()
                if not self.best_values:
                    self._prefetch(running=0)  # the first proposals are made while the baseline runs
                    self._baseline()
                while self._may_continue():
                    self.remeasure_best()
                    proposal = self.next_proposal()
                    if proposal is None:
                        self.stop_reason = f"the {self.agent.name} agent has nothing more to propose"
                        break
                    self.attempt(proposal)
            except (KeyboardInterrupt, Stop):
                self._recover()
                self.view.message("interrupted: the attempt in flight was logged as a crash (interrupted)")
                return INTERRUPTED
            self.view.message(f"done: {self.stop_reason}")
            return 0
        finally:
            lock.release()
            self.view.close()

    def _check_tag_state(self) -> None:
        tsv, tag = self.s.tsv_path, self.s.tag
        # A tag folder holding only the lock is what a harness killed before it made the branch
        # leaves behind: nothing was recorded, so it does not make the tag exist (Ratchet.open
        # still refuses an existing branch or worktree).
        recorded = self.s.tag_dir.exists() and any(p.name != "lock" for p in self.s.tag_dir.iterdir())
        if not self.s.resume and (tsv.exists() or recorded):
            raise RepoError(
                f"tag {tag!r} already exists ({tsv}); continue it with --resume or pick another --tag"
            )
        if self.s.resume and not tsv.exists() and not self.s.tag_dir.exists():
            raise ConfigError(
                f"tag {tag!r} has no results to resume ({tsv} is missing); start it without --resume"
            )

    def _resume_state(self) -> None:
        if self.s.resume:
            self._recover()
            self._ratchet().revert()
        rows = self.tsv.rows()
        numbers = [int(r.extra["n"]) for r in rows if r.extra.get("n", "").isdigit()]
        self.next_n = max(numbers) + 1 if numbers else len(rows)
        keeps = [r for r in rows if r.status == "keep"]
        self.best_values = row_values(keeps[-1]) if keeps else []
        prime_from_runs(self.judge, [r.extra.get("runs", "") for r in rows])
        for log in self.runs_dir.glob("*.log") if self.s.resume else ():
            kill_leftover(log)  # e.g. a re-measure of the best that a killed harness left running
        if rows:
            self.view.message(f"resuming {self.s.tag}: {len(rows)} rows, next attempt #{self.next_n}")

    def _may_continue(self) -> bool:
        rows = self.tsv.rows()
        attempts = sum(1 for r in rows if r.description != "baseline")
        if self.s.max_experiments is not None and attempts >= self.s.max_experiments:
            self.stop_reason = f"reached --max-experiments {self.s.max_experiments}"
            return False
        if self.s.max_cost is not None:
            spent = sum(_float(r.extra.get("cost_usd", "")) for r in rows)
            if spent >= self.s.max_cost:
                self.stop_reason = f"spent ${spent:.2f} of --max-cost ${self.s.max_cost:g}"
                return False
        return True

    # --- one attempt -------------------------------------------------------------------------

    def attempt(self, proposal: Proposal) -> Row:
        ratchet = self._ratchet()
        n = self.next_n
        self.next_n += 1
        self.since_remeasure += 1
        reply = proposal.reply
        info = AttemptInfo(
            n=n,
            commit="",
            parent=ratchet.best(),
            description=proposal.description,
            agent=self.agent.name,
            model=reply.model,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost_usd=reply.cost_usd,
            worker=self.s.worker,
            budget_s=self.s.budget,
        )
        self.view.start(n, proposal.description, self.s.budget)
        if proposal.files is None:
            return self._bad_edit(info, reply, proposal.error or "bad edit")
        pending = journal.Pending(n, "", info.parent, info.description, reply.text, info.agent, info.model)
        journal.write_pending(self.pending_path, pending)
        attempted = {**self.current_files(), **proposal.files}  # what a repair would start from
        for rel, text in proposal.files.items():
            (ratchet.worktree / rel).write_text(text, encoding="utf-8")
        try:
            info.commit = ratchet.commit(proposal.description)
        except EditError as exc:
            ratchet.revert()
            journal.clear_pending(self.pending_path)
            return self._bad_edit(info, reply, str(exc))
        journal.write_pending(self.pending_path, replace(pending, commit=info.commit))
        started = time.monotonic()
        row = self._measure_and_log(info, reply, baseline=False)
        if self.pipeline is not None:
            self.pipeline.record_run(time.monotonic() - started)
        if row.status == "crash":
            self.crash_files = attempted
            if not proposal.repair:
                self.repairs_left = MAX_REPAIRS  # a fresh crash: up to two fixes
        else:
            self.crash_files, self.repairs_left = None, 0
        self._report_cost(row)
        return row

    def _baseline(self) -> None:
        ratchet = self._ratchet()
        head = ratchet.head()
        n = self.next_n
        self.next_n += 1
        info = AttemptInfo(
            n=n, commit=head, parent=head, description="baseline", agent=self.agent.name,
            worker=self.s.worker, budget_s=self.s.budget,
        )  # fmt: skip
        self.view.start(n, "baseline", self.s.budget)
        journal.write_pending(
            self.pending_path, journal.Pending(n, head, head, "baseline", "", self.agent.name)
        )
        row = self._measure_and_log(info, None, baseline=True)
        if row.status == "crash":
            log = self.runs_dir / f"{n}.log"
            raise HarnessError(
                f"the baseline run crashed ({row.extra.get('reason')}); see {log}. "
                "Fix the experiment so its unmodified file runs, then continue with --resume."
            )

    def _report_cost(self, row: Row) -> None:
        """The LLM spend of this attempt and of the night so far (and against --max-cost)."""
        if self.llm is None:
            return
        total = self.spent = sum(_float(r.extra.get("cost_usd", "")) for r in self.tsv.rows())
        limit = f" of --max-cost ${self.s.max_cost:g}" if self.s.max_cost is not None else ""
        self.view.message(
            f"LLM cost: ${_float(row.extra.get('cost_usd', '')):.4f} this attempt, ${total:.4f} in total{limit}"
        )

    def _llm_status(self) -> str:
        """One line for the live panel: the provider's state (retrying, PAUSED) and the spend so far."""
        if self.llm is None:
            return ""
        limit = f" of ${self.s.max_cost:g}" if self.s.max_cost is not None else ""
        state = self.llm.status.line()
        return (state + " | " if state else "") + f"LLM {self.llm.model}: ${self.spent:.4f} spent{limit}"

    def _bad_edit(self, info: AttemptInfo, reply: Reply, error: str) -> Row:
        self.view.message(f"#{info.n} bad edit: {error}")
        reason = error[:160] if error.startswith("refused: ") else "bad edit"  # refused: integrity checks
        row = build_row(info, "crash", [], reason=reason)
        self.tsv.append(row)
        self._observe(reply, row)
        self.view.finish(row, self._best())
        self._report_cost(row)
        return row

    def _measure_and_log(self, info: AttemptInfo, reply: Reply | None, *, baseline: bool) -> Row:
        """Run the commit (repeats as the judge asks), write its row, keep or revert, clear pending."""
        ratchet = self._ratchet()
        runs: list[RunRecord] = []
        reason: str | None = None
        needed = self.judge.baseline_runs if baseline else 1
        while True:
            record = self.run_once(info.n, len(runs))
            runs.append(record)
            if record.reason:
                reason = record.reason
                break
            if len(runs) < needed:
                continue
            if baseline:
                status = "keep"
                break
            verdict = self.judge.decide([r.value for r in runs if r.value is not None], self.best_values)
            if verdict.status != "repeat":
                status = verdict.status
                break
            self.view.message(f"#{info.n} repeat: {verdict.reason}")
        if reason:
            status = "crash"
        row = build_row(info, status, runs, reason=reason or "")
        self.tsv.append(row)
        if status == "keep":
            ratchet.keep(info.commit)
            self.best_values = row_values(row)
        else:
            ratchet.revert()
        journal.clear_pending(self.pending_path)
        self.last_crash = (
            CrashReport(info.description, reason, log_tail(runs[-1].result.log_path, 50)) if reason else None
        )
        if reply is not None:
            self._observe(reply, row)
        self.view.finish(row, self._best())
        if reason == "interrupted":
            raise Stop()
        return row

    def run_once(self, n: int, k: int) -> RunRecord:
        """One run of the worktree's current commit, logged to runs/<n>.log (repeats: <n>.r<k>.log)."""
        worktree = self._ratchet().worktree
        log_path = self.runs_dir / (f"{n}.log" if k == 0 else f"{n}.r{k}.log")
        guard = self._guard()
        guard.snapshot()
        env = self.run_env(worktree, log_path)
        eval_record = provenance.EvalRecord.create() if self.s.verify_metric else None
        env.update(eval_record.env() if eval_record else {})
        result = run_command(
            self.s.run,
            cwd=worktree / self.s.experiment_rel,
            env=env,
            log_path=log_path,
            timeout=self.s.timeout,
            on_line=self.view.line,
        )
        tampering = guard.check()
        printed = read_summary(log_path, raw=True)  # one read: the metric as printed, for provenance
        summary = typed(printed)
        reason = crash_reason(result, summary, self.s.metric)
        if tampering:
            reason = tampering.reason
        elif eval_record is not None and reason is None:
            tokens = provenance.expected_eval_tokens(self.s.profile)
            reason = eval_record.verify(
                provenance.printed_metric(printed, self.s.metric), expected_eval_tokens=tokens
            )
        if eval_record is not None:
            eval_record.archive(log_path.with_name(log_path.name + ".eval.jsonl"))
        record = RunRecord(result, summary, None if reason else metric_value(summary, self.s.metric), reason)
        for check in self.checks:
            if record.reason:
                break
            record.reason = check(record)
            if record.reason:
                record.value = None
        return record

    def run_env(self, worktree: Path, log_path: Path) -> dict[str, str]:
        """The environment of HACKING.md for one run (secrets are dropped by runner.child_env)."""
        pythonpath = [str(worktree)] + [p for p in self.env.get("PYTHONPATH", "").split(os.pathsep) if p]
        extra = {
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONUNBUFFERED": "1",
            "AUTORESEARCH_DEVICE": self.s.profile,
            "AUTORESEARCH_TIME_BUDGET": f"{self.s.budget:g}",
            "AUTORESEARCH_CACHE": str(self.s.cache_root),
            "AUTORESEARCH_EVAL_RECORD": str(log_path.with_name(log_path.name + ".eval.jsonl")),
        }
        if self.s.dataset != "none":
            extra["AUTORESEARCH_DATASET"] = self.s.dataset
        return child_env(self.env, extra)

    def _guard(self) -> Guard:
        if self.guard is None:
            worktree = self._ratchet().worktree
            exp = worktree / self.s.experiment_rel
            self.guard = Guard.for_worktree(worktree, exp, self.s.tsv_path, repo_root=self.s.repo_root)
        return self.guard

    def remeasure_best(self) -> None:
        """Every `remeasure_every` attempts, run the best again and fold the value into its runs.

        This refines the noise judge's spread and the best's mean (a best kept on one lucky run
        regresses to its true level). Logged as runs/<best n>.r<k>.log; no row of its own.
        """
        wants = getattr(self.judge, "wants_remeasure", None)
        if wants is None or not self.best_values or not wants(self.since_remeasure):
            return
        self.since_remeasure = 0
        keeps = [r for r in self.tsv.rows() if r.status == "keep"]
        best_n = int(keeps[-1].extra.get("n", "0") or 0) if keeps else 0
        self.view.message(f"re-measuring the best (#{best_n}) to track the run-to-run spread")
        record = self.run_once(best_n, len(self.best_values))
        if record.value is not None:
            self.best_values = [*self.best_values, record.value]

    # --- recovery ------------------------------------------------------------------------

    def _recover(self) -> None:
        """Finish the attempt recorded in pending.json (resume, or after Ctrl-C). See harness.store.journal."""
        pending = journal.read_pending(self.pending_path)
        if pending is None:
            return
        ratchet = self._ratchet()
        for log in sorted(self.runs_dir.glob(f"{pending.n}.*log")):
            if kill_leftover(log):
                self.view.message(f"killed a run left over from an earlier harness ({log.name})")
        rows = [r for r in self.tsv.rows() if r.extra.get("n") == str(pending.n)]
        if rows:
            row = rows[-1]
        else:
            info = AttemptInfo(
                n=pending.n, commit=pending.commit, parent=pending.parent, description=pending.description,
                agent=pending.agent, model=pending.model, worker=self.s.worker, budget_s=self.s.budget,
            )  # fmt: skip
            row = build_row(info, "crash", [], reason="interrupted")
            self.tsv.append(row)
        if row.status == "keep" and pending.commit:
            ratchet.keep(pending.commit)
        else:
            ratchet.revert()
        journal.clear_pending(self.pending_path)

    # --- helpers -------------------------------------------------------------------------

    def _ratchet(self) -> Ratchet:
        if self.ratchet is None:
            raise RuntimeError("the ratchet is opened by run()")
        return self.ratchet

    def _best(self) -> float | None:
        return mean(self.best_values) if self.best_values else None

    def _observe(self, reply: Reply, row: Row) -> None:
        self.agent.observe(reply, row)


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0
