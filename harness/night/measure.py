"""Measuring one run: start it under the guard, read its summary, check its metric, name its crash.

`Measurer.run(n, k)` runs the worktree's current commit once (log `runs/<n>.log`, repeats
`<n>.r<k>.log`) in the environment of one run (`env`), snapshots the protected paths before
and checks them after (`harness.integrity.guard`), verifies the printed metric against the
evaluation record when the experiment asks for it (`harness.integrity.provenance`), and
returns a `RunRecord`: the metric, or the crash reason, and the run's diagnostics (time split,
throughput, loss curve: `harness.night.diagnostics`, watched while the run prints).

`crash_reason` turns a `RunResult` and its parsed summary into the `reason` column of a
crash (syntax error / exception: <last exception line> / timeout / nan / loss / log flood /
no metric), or None for a run that reported a usable metric. Tampering wins over any other
reason.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from harness.integrity import provenance
from harness.integrity.guard import Guard
from harness.night.diagnostics import Progress
from harness.night.metrics import metric_value, read_summary, typed
from harness.night.runner import RunResult, child_env, resolve_python
from harness.night.runner import run as run_command
from harness.settings import Settings
from harness.store.attempts import Diagnostics
from harness.store.paths import TagPaths, eval_record

_KILL_REASONS = {"timeout": "timeout", "nan": "nan", "loss": "loss", "log_flood": "log flood"}
# "ValueError: boom", "torch.OutOfMemoryError: CUDA out of memory", "KeyboardInterrupt"
_EXC_LINE = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)|AssertionError)\b(:.*)?$"
)
_TAIL_BYTES = 1 << 16


@dataclass(frozen=True)
class RunRecord:
    """One run of a commit: what the runner returned, the summary, and the metric or crash reason."""

    result: RunResult
    summary: dict[str, float | str] | None
    value: float | None  # None when the run crashed
    reason: str | None
    diagnostics: Diagnostics | None = None


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


def crash_reason(result: RunResult, summary: Mapping[str, float | str] | None, metric: str) -> str | None:
    """The crash reason of one run, or None when it produced a usable metric."""
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
        self.guard.snapshot()
        env = self.env(log_path)
        record = provenance.EvalRecord.create() if self.s.verify_metric else None
        env.update(record.env() if record else {})
        progress = Progress()

        def on_line(text: str) -> None:
            progress.line(text)
            self.on_line(text)

        result = run_command(
            resolve_python(self.s.run),
            cwd=self.worktree / self.s.experiment_rel,
            env=env,
            log_path=log_path,
            timeout=self.s.timeout,
            on_line=on_line,
        )
        tampering = self.guard.check()
        printed = read_summary(log_path, raw=True)  # one read: the metric as printed, for provenance
        summary = typed(printed)
        reason = crash_reason(result, summary, self.s.metric)
        if tampering:
            reason = tampering.reason
        elif record is not None and reason is None:
            tokens = provenance.expected_eval_tokens(self.s.profile)
            reason = record.verify(
                provenance.printed_metric(printed, self.s.metric), expected_eval_tokens=tokens
            )
        if record is not None:
            record.archive(eval_record(log_path))
        value = None if reason else metric_value(summary, self.s.metric)
        return RunRecord(result, summary, value, reason, progress.diagnostics(summary, result.wall_seconds))

    def env(self, log_path: Path) -> dict[str, str]:
        """The environment of one run (secrets are dropped by `runner.child_env`).

        PYTHONPATH starts with the worktree, so `import prepare` and `import constants` resolve
        to the worktree's copy; AUTORESEARCH_* tell the run its device profile, budget, dataset,
        cache and where evaluate_bpb records what it computed.
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
            "AUTORESEARCH_EVAL_RECORD": str(eval_record(log_path)),
        }
        if self.s.dataset != "none":
            extra["AUTORESEARCH_DATASET"] = self.s.dataset
        return child_env(self.base_env, extra)
