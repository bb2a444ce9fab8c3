"""Measuring one run: start it under the guard, read its summary, get its metric, name its crash.

`Measurer.run(n, k)` runs the worktree's current commit once (log `runs/<n>.log`, repeats
`<n>.r<k>.log`) in the environment of one run (`env`), snapshots the protected paths before
and checks them after (`harness.integrity.guard`), and returns a `RunRecord`: the metric, or
the crash reason. For an experiment with an evaluator (`[integrity] evaluator`), the metric
comes from the evaluator the harness starts once the run has ended, on the model the run handed
off (`harness.integrity.evaluation`); its output is appended to the run's log. Otherwise the
metric is the one the run printed.

`crash_reason` turns a `RunResult` and its parsed summary into the `reason` column of a
crash (syntax error / exception: <last exception line> / timeout / nan / loss / log flood /
no metric), or None for a run that ended well. Tampering wins over any other reason.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.integrity import evaluation
from harness.integrity.guard import Guard
from harness.night.metrics import metric_value, read_summary
from harness.night.runner import RunResult, child_env
from harness.night.runner import run as run_command
from harness.settings import Settings
from harness.store.paths import TagPaths

_KILL_REASONS = {"timeout": "timeout", "nan": "nan", "loss": "loss", "log_flood": "log flood"}
# "ValueError: boom", "torch.OutOfMemoryError: CUDA out of memory", "KeyboardInterrupt"
_EXC_LINE = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)|AssertionError)\b(:.*)?$"
)
_TAIL_BYTES = 1 << 16
EVAL_MIN_SECONDS = 120.0  # the evaluator's kill timeout is the run's unused time, at least this


@dataclass(frozen=True)
class RunRecord:
    """One run of a commit: what the runner returned, the summary, and the metric or crash reason."""

    result: RunResult
    summary: dict[str, float | str] | None
    value: float | None  # None when the run crashed
    reason: str | None


def log_tail(path: Path, lines: int = 50) -> str:
    """The last `lines` lines of a log (for crash feedback and exception lines)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - _TAIL_BYTES))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def crash_reason(
    result: RunResult, summary: Mapping[str, float | str] | None, metric: str | None
) -> str | None:
    """The crash reason of one run, or None when it ended well (and printed `metric`, unless None)."""
    if result.kill_reason:
        return _KILL_REASONS.get(result.kill_reason, result.kill_reason)
    tail = log_tail(result.log_path, 60).splitlines()
    if result.exit_code not in (0, None):
        for line in reversed(tail):
            if line.strip() == "FAIL" or line.startswith("FAIL"):
                # The train file's own divergence check (NaN or loss > 100).
                loss = result.last_loss
                return "nan" if loss is None or math.isnan(loss) else "loss"
        for line in reversed(tail):
            stripped = line.strip()
            if stripped.startswith(("SyntaxError", "IndentationError", "TabError")):
                return "syntax error"
            if _EXC_LINE.match(stripped):
                return f"exception: {stripped[:200]}"
        last = next((ln.strip() for ln in reversed(tail) if ln.strip()), "")
        return f"exception: exit code {result.exit_code}" + (f", last line: {last[:160]}" if last else "")
    if metric is None:
        return None
    raw = summary.get(metric) if summary else None
    if isinstance(raw, float) and math.isnan(raw):
        return "nan"
    if metric_value(dict(summary) if summary else None, metric) is None:
        return "no metric"
    return None


class Measurer:
    """Runs the tag's worktree as it is, one run at a time."""

    def __init__(
        self,
        settings: Settings,
        paths: TagPaths,
        worktree: Path,
        base_env: Mapping[str, str],
        on_line: Callable[[str], None],
    ) -> None:
        self.s = settings
        self.paths = paths
        self.worktree = worktree
        self.base_env = base_env
        self.on_line = on_line
        self.guard = Guard.for_worktree(
            worktree, worktree / settings.experiment_rel, paths.tsv, repo_root=settings.repo_root
        )

    def run(self, n: int, k: int) -> RunRecord:
        """Run k of attempt n (k = 0 the first), logged to `paths.log(n, k)`."""
        log_path = self.paths.log(n, k)
        handoff = self.paths.handoff(n, k) if self.s.evaluator else None
        if handoff is not None:
            shutil.rmtree(handoff, ignore_errors=True)
            handoff.mkdir(parents=True)
        self.guard.snapshot()
        env = self.env(handoff)
        try:
            result = run_command(
                self.s.run,
                cwd=self.worktree / self.s.experiment_rel,
                env=env,
                log_path=log_path,
                timeout=self.s.timeout,
                on_line=self.on_line,
            )
            tampering = self.guard.check()
            summary = read_summary(log_path)
            reason = crash_reason(result, summary, None if handoff else self.s.metric)
            value = metric_value(summary, self.s.metric) if reason is None and handoff is None else None
            if tampering:
                reason = tampering.reason
            elif reason is None and handoff is not None:
                outcome, result = self._evaluate(handoff, env, result, summary)
                reason, value = outcome.reason, outcome.value
                if value is not None:
                    summary = {**(summary or {}), **outcome.summary, self.s.metric: value}
        finally:
            if handoff is not None:
                shutil.rmtree(handoff, ignore_errors=True)
        return RunRecord(result, summary, None if reason else value, reason)

    def _evaluate(
        self,
        handoff: Path,
        run_env: Mapping[str, str],
        result: RunResult,
        summary: Mapping[str, float | str] | None,
    ) -> tuple[evaluation.Outcome, RunResult]:
        """Start the evaluator on the handed-off model; its output goes to the end of the run's log."""
        assert self.s.evaluator is not None
        printed = evaluation.printed_metric(summary, self.s.metric)
        if printed:
            return evaluation.Outcome(None, printed), result
        if not evaluation.handed_off(handoff):
            return evaluation.Outcome(
                None, "no hand-off: the run ended without prepare.hand_off(model, batch_size)"
            ), result
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            self.on_line(line)

        log_path = result.log_path
        eval_log = log_path.with_name(log_path.name + ".evaluator")
        with tempfile.TemporaryDirectory(prefix="ar-evaluator-") as tmp:
            code = evaluation.stage(self.worktree, Path(tmp) / "code")
            evaluated = run_command(
                evaluation.command(self.s.evaluator, handoff),
                cwd=code,
                env=evaluation.environment(self.base_env, run_env),
                log_path=eval_log,
                timeout=max(EVAL_MIN_SECONDS, self.s.timeout - result.wall_seconds),
                on_line=on_line,
            )
        with open(log_path, "ab") as log, open(eval_log, "rb") as out:
            log.write(f"[autoresearch] evaluator: {evaluation.module(self.s.evaluator)}\n".encode())
            shutil.copyfileobj(out, log)
        eval_log.unlink()
        outcome = evaluation.read_outcome(lines, evaluated.exit_code, evaluated.kill_reason)
        return outcome, dataclasses.replace(result, wall_seconds=result.wall_seconds + evaluated.wall_seconds)

    def env(self, handoff: Path | None = None) -> dict[str, str]:
        """The environment of one run (secrets are dropped by `runner.child_env`).

        PYTHONPATH starts with the worktree, so `import prepare` and `import constants` resolve
        to the worktree's copy; AUTORESEARCH_* tell the run its device profile, budget, dataset,
        cache and, with an evaluator, the folder prepare.hand_off writes the model to.
        """
        pythonpath = [str(self.worktree)] + [
            p for p in self.base_env.get("PYTHONPATH", "").split(os.pathsep) if p
        ]
        extra = {
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONUNBUFFERED": "1",
            "AUTORESEARCH_DEVICE": self.s.profile,
            "AUTORESEARCH_TIME_BUDGET": f"{self.s.budget:g}",
            "AUTORESEARCH_CACHE": str(self.s.cache_root),
        }
        if handoff is not None:
            extra[evaluation.HAND_OFF_ENV] = str(handoff)
        if self.s.dataset != "none":
            extra["AUTORESEARCH_DATASET"] = self.s.dataset
        return child_env(self.base_env, extra)
