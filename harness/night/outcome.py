"""From a finished run to a TSV row: why a run crashed, and the row of one attempt.

`crash_reason` turns a `RunResult` and its parsed summary into the `reason` column of a
crash (syntax error / exception: <last exception line> / timeout / nan / loss / log flood /
no metric / interrupted), or None for a run that reported a usable metric. `build_row`
folds all runs of one commit (baseline repeats, noise checks) into its single row: the
metric is their mean, `runs` lists the values, `spread` is max - min.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.night.metrics import metric_value
from harness.night.runner import RunResult
from harness.store.ledger import NO_COMMIT, Row

_KILL_REASONS = {
    "timeout": "timeout",
    "nan": "nan",
    "loss": "loss",
    "log_flood": "log flood",
    "interrupted": "interrupted",
}
# "ValueError: boom", "torch.OutOfMemoryError: CUDA out of memory", "KeyboardInterrupt"
_EXC_LINE = re.compile(
    r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning)|AssertionError)\b(:.*)?$"
)
_TAIL_BYTES = 1 << 16


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


@dataclass
class RunRecord:
    """One run of a commit: what the runner returned, the summary, and the crash reason."""

    result: RunResult
    summary: dict[str, float | str] | None
    value: float | None
    reason: str | None


@dataclass
class AttemptInfo:
    """What the loop knows about an attempt besides its runs."""

    n: int
    commit: str  # full sha, or "" for an attempt that never became a commit
    parent: str
    description: str
    agent: str
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    worker: str = ""
    budget_s: float = 0.0
    extra: dict[str, str] = field(default_factory=dict)


def _g(value: float | str | None) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:g}" if not value.is_integer() else str(int(value))
    return str(value)


def build_row(info: AttemptInfo, status: str, runs: Sequence[RunRecord], reason: str = "") -> Row:
    """The one row of an attempt. `status` is keep/discard/crash; a crash zeroes metric and memory."""
    values = [r.value for r in runs if r.value is not None]
    last_ok = next((r for r in reversed(runs) if r.value is not None), None)
    summary = last_ok.summary if last_ok else (runs[-1].summary if runs else None)
    crashed = status == "crash"
    metric = 0.0 if crashed or not values else math.fsum(values) / len(values)
    memory = 0.0
    if not crashed and summary and isinstance(summary.get("peak_vram_mb"), float):
        memory = round(float(summary["peak_vram_mb"]) / 1024.0, 1)
    extra = {
        "n": str(info.n),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "runs": ",".join(f"{v:.6f}" for v in values),
        "spread": f"{max(values) - min(values):.6f}" if len(values) > 1 else "",
        "budget_s": _g(info.budget_s),
        "wall_s": f"{sum(r.result.wall_seconds for r in runs):.1f}" if runs else "",
        "training_s": _g(summary.get("training_seconds")) if summary else "",
        "num_steps": _g(summary.get("num_steps")) if summary else "",
        "agent": info.agent,
        "model": info.model,
        "input_tokens": str(info.input_tokens) if info.input_tokens else "",
        "output_tokens": str(info.output_tokens) if info.output_tokens else "",
        "cost_usd": f"{info.cost_usd:.4f}" if info.cost_usd else "",
        "worker": info.worker,
        "reason": reason if crashed else "",
        "parent": info.parent[:7],
        "summary": json.dumps(summary, separators=(",", ":"), sort_keys=True) if summary else "",
    }
    extra.update(info.extra)
    return Row(
        commit=info.commit[:7] if info.commit else NO_COMMIT,
        metric=metric,
        memory_gb=memory,
        status=status,
        description=info.description,
        extra=extra,
    )


def row_values(row: Row) -> list[float]:
    """The individual run values folded into a row (its `runs` column), or [metric]."""
    raw = row.extra.get("runs", "")
    try:
        values = [float(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        values = []
    return values or [row.metric]
