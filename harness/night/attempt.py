"""One attempt, the one record that flows through the night: propose -> commit -> measure -> judge -> row.

The proposer makes an `Attempt` from an agent's `Reply` (its description, who made it, the new
file contents or why the edit did not apply); the loop numbers it, commits it (`parent`,
`commit`), journals it (`journal()`: what pending.json holds while it runs), measures it
(`runs`), judges it (`status`, `reason`) and writes its row (`row()`). A recovered attempt is
rebuilt from the journal (`from_journal`).

`row()` folds all runs of one commit (baseline repeats, confirmation runs) into its single
row: the metric is their mean, `runs` lists the values, `spread` is max - min of them. The
per-run columns (`training_s`, `startup_s` and `tokens_per_s` as the harness measured them,
`num_steps` as the run printed it) list one value per run of `runs`, in the same order (for a
crash: the crashed run's).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from harness.agents.base import Reply
from harness.agents.sweep import SweepSpec
from harness.errors import DataError
from harness.night.measure import RunRecord
from harness.store import attempts
from harness.store.attempts import AttemptRecord
from harness.store.ledger import NO_COMMIT, Row
from harness.store.novelty import Entry


@dataclass
class Attempt:
    """What the loop knows about one attempt, step by step."""

    description: str
    agent: str  # the agent column: who made the reply ("transplant" for a queued one)
    reply: Reply | None = None  # None for the baseline
    files: dict[str, str] | None = None  # new contents of the mutable files; None: nothing to commit
    error: str = ""  # why the reply's edit did not apply (a bad edit)
    repair: bool = False  # a fix of the last crash (its files include the crashed change)
    n: int = -1
    parent: str = ""  # full sha of the best commit it was made on
    commit: str = ""  # full sha, once committed
    runs: list[RunRecord] = field(default_factory=list)
    status: str = ""  # keep / discard / crash, once judged
    reason: str = ""  # the crash reason, or `duplicate of #n`
    key: str = ""  # the novelty key of the change (claimed in the registry)
    note: str = ""  # the reply's `Note:` line
    built_on: int | None = None  # the attempt its reply named with `Parent: #n`
    duplicate_of: Entry | None = None  # the earlier attempt it repeats: never run
    sweep: SweepSpec | None = None  # a sweep request: its trials are the attempts, not this

    def values(self) -> list[float]:
        """The metric of every run that produced one."""
        return [r.value for r in self.runs if r.value is not None]

    def crash(self, reason: str) -> Attempt:
        self.status, self.reason = "crash", reason
        return self

    def duplicate(self, earlier: Entry, label: str) -> Attempt:
        """Settle it as a repeat of `earlier`, with that result: a crash stays a crash, anything
        else is a discard (the change is not new, so it is not run and not kept)."""
        self.duplicate_of = earlier
        self.status = "crash" if earlier.status == "crash" else "discard"
        self.reason = f"duplicate of {label}"
        return self

    # -- the journal ------------------------------------------------------------------------

    def journal(self) -> dict[str, Any]:
        """What pending.json records while the attempt is in flight."""
        reply = self.reply or Reply("")
        return {
            "n": self.n,
            "commit": self.commit,
            "parent": self.parent,
            "description": self.description,
            "reply": reply.text,
            "agent": self.agent,
            "model": reply.model,
            "input_tokens": reply.input_tokens,
            "output_tokens": reply.output_tokens,
            "cost_usd": reply.cost_usd,
        }

    @classmethod
    def from_journal(cls, data: dict[str, Any], where: str) -> Attempt:
        """The attempt a harness left in flight (older journals lack the agent, model and cost)."""
        try:
            reply = Reply(
                str(data.get("reply", "")),
                model=str(data.get("model", "")),
                input_tokens=int(data.get("input_tokens", 0)),
                output_tokens=int(data.get("output_tokens", 0)),
                cost_usd=float(data.get("cost_usd", 0.0)),
            )
            return cls(
                str(data["description"]), str(data.get("agent", "")), reply,
                n=int(data["n"]), parent=str(data.get("parent", "")), commit=str(data.get("commit", "")),
            )  # fmt: skip
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{where} is corrupt ({exc!r}); it records the attempt in flight when the harness stopped. "
                "Delete it to resume without that attempt."
            ) from None

    # -- the row ----------------------------------------------------------------------------

    def row(self, *, worker: str, budget_s: float, device: str = "", hardware: str = "") -> Row:
        """The one row of this attempt; a crash zeroes metric and memory."""
        values = self.values()
        last_ok = next((r for r in reversed(self.runs) if r.value is not None), None)
        summary = last_ok.summary if last_ok else (self.runs[-1].summary if self.runs else None)
        crashed = self.status == "crash"
        metric = 0.0 if crashed or not values else math.fsum(values) / len(values)
        if self.duplicate_of is not None and not crashed:
            metric = self.duplicate_of.metric or 0.0  # the earlier result of the same change
        memory = 0.0
        if not crashed and summary and isinstance(summary.get("peak_vram_mb"), float):
            memory = round(float(summary["peak_vram_mb"]) / 1024.0, 1)
        reply = self.reply or Reply("")
        measured = [r for r in self.runs if r.value is not None] or self.runs[-1:]
        extra = {
            "n": str(self.n),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "runs": ",".join(f"{v:.6f}" for v in values),
            "spread": f"{max(values) - min(values):.6f}" if len(values) > 1 else "",
            "budget_s": _g(budget_s),
            "wall_s": f"{sum(r.result.wall_seconds for r in self.runs):.1f}" if self.runs else "",
            "training_s": _per_run(
                measured, lambda r: r.measured.training_s if r.measured else None, "{:.1f}"
            ),
            "num_steps": _per_run(measured, lambda r: (r.summary or {}).get("num_steps"), "{:g}"),
            "startup_s": _per_run(measured, lambda r: r.measured.startup_s if r.measured else None, "{:.1f}"),
            "tokens_per_s": _per_run(
                measured, lambda r: r.measured.tokens_per_s if r.measured else None, "{:.0f}"
            ),
            "agent": self.agent,
            "model": reply.model,
            "input_tokens": str(reply.input_tokens) if reply.input_tokens else "",
            "output_tokens": str(reply.output_tokens) if reply.output_tokens else "",
            "cost_usd": f"{reply.cost_usd:.4f}" if reply.cost_usd else "",
            "worker": worker,
            "reason": self.reason,  # a crash's, a duplicate's, or why a candidate went unconfirmed
            "parent": self.parent[:7],
            "summary": json.dumps(summary, separators=(",", ":"), sort_keys=True) if summary else "",
            "device": device,
            "hardware": hardware,
        }
        commit = self.commit[:7] if self.commit else NO_COMMIT
        return Row(commit, metric, memory, self.status, self.description, extra)

    def record(self, row: Row, log_text: str) -> AttemptRecord:
        """The attempt's record (harness.store.attempts) once its row is written."""
        last_ok = next((r for r in reversed(self.runs) if r.value is not None), None)
        run = last_ok or (self.runs[-1] if self.runs else None)
        earlier = self.duplicate_of
        return AttemptRecord(
            n=self.n,
            status=row.status,
            description=self.description,
            agent=self.agent,
            metric=None if row.status == "crash" else row.metric,
            commit=self.commit,
            parent=self.parent,
            key=self.key,
            built_on=self.built_on,
            duplicate_of=earlier.n if earlier is not None else None,
            note=self.note,
            reason=row.extra.get("reason", ""),
            runs=len(self.runs),
            diagnostics=run.diagnostics if run is not None else None,
            summary=dict(run.summary or {}) if run is not None else {},
            log_tail=attempts.tail(log_text),
        )


def _per_run(runs: list[RunRecord], get: Callable[[RunRecord], object], spec: str) -> str:
    """One value per run, comma-separated; empty when no run has it."""
    values = [get(r) for r in runs]
    if all(v is None for v in values):
        return ""
    return ",".join(spec.format(v) if isinstance(v, int | float) else "" for v in values)


def _g(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if not value.is_integer() else str(int(value))
    return str(value)
