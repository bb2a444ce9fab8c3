"""Build the prompt an LLM agent gets for one proposal, from the loop's `Context`.

System text: program.md (the person's research instructions, re-read before every
experiment) followed by the reply format. User text, in order: the setup (metric and
direction, budget, device profile, hardware), this tag's history (every attempt with
its metric and status, the kept changes in order, what crashed and why), the mutable
files in full as they are at the current best, the last crash's log tail (at most 50
lines) when the model is asked to fix it, the feedback on a reply whose edit did not
apply, and the task.

The history is bounded in size: when the table of attempts would exceed `max_history_chars`
the oldest discarded and crashed attempts are condensed into one counted line in place;
kept changes and the newest attempts stay. Rows are always whole. Every secret of the
environment (API keys, tokens, URLs with a password), in every encoding `harness.credentials`
knows (raw, reversed, hex, base64, percent-encoded), is redacted from everything sent.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.agents.base import Context, CrashReport
from harness.credentials import redact
from harness.edits import REPLY_FORMAT

if TYPE_CHECKING:
    from harness.store.ledger import Row

MAX_CRASH_LINES = 50
MAX_HISTORY_CHARS = 12_000
_MAX_DESCRIPTION = 140
# A crash the model can fix from the log: syntax, import, name and shape errors. Out of
# memory, timeouts, NaNs and integrity refusals are not "simple bugs": they go to the
# history like any other crash.
_SIMPLE_BUG = re.compile(
    r"\b(SyntaxError|IndentationError|TabError|ImportError|ModuleNotFoundError|NameError|"
    r"UnboundLocalError|AttributeError|TypeError|IndexError|KeyError)\b|"
    r"shape|size mismatch|must match the size|mat1 and mat2|Dimension out of range|dimension",
)
_NOT_SIMPLE = re.compile(r"out of memory|OutOfMemoryError|CUDA error|Killed|MemoryError", re.IGNORECASE)


@dataclass(frozen=True)
class Prompt:
    system: str
    user: str

    @property
    def chars(self) -> int:
        return len(self.system) + len(self.user)


def build_prompt(
    ctx: Context, *, max_history_chars: int = MAX_HISTORY_CHARS, env: Mapping[str, str] | None = None
) -> Prompt:
    """The system and user text for `ctx`, with secrets from `env` (default os.environ) redacted."""
    better = "lower" if ctx.direction == "minimize" else "higher"
    system = ctx.program.strip() + "\n\n# Reply format\n\n" + REPLY_FORMAT + "\n"

    parts = [_setup(ctx, better)]
    parts.append(_history(ctx.history, ctx.metric, ctx.direction, max_history_chars))
    parts.append(_files(ctx.files))
    if ctx.crash is not None:
        tail = "\n".join(ctx.crash.log_tail.splitlines()[-MAX_CRASH_LINES:])
        parts.append(
            "# The last experiment crashed: fix it\n\n"
            f"Attempt: {ctx.crash.description}\nReason: {ctx.crash.reason}\n"
            f"Last {min(MAX_CRASH_LINES, len(tail.splitlines()))} lines of its log:\n```\n{tail}\n```\n"
            "The files above are that crashed version. Fix the bug with the smallest edit that keeps "
            "the idea; the Description should say what you fixed."
        )
    if ctx.feedback:
        parts.append(f"# Your previous reply could not be applied\n\n{ctx.feedback.strip()}")
    task = (
        "# Task\n\n"
        f"Propose ONE experiment that you expect to make {ctx.metric} {better}. Change only the files "
        f"shown above ({', '.join(ctx.files)}). The run is stopped after the time budget, so a change "
        "that is slower per step must win on quality. Keep the code simple: a tiny gain that adds "
        "ugly complexity is not worth it. Do not repeat an attempt from the history.\n\n" + REPLY_FORMAT
    )
    parts.append(task)
    user = "\n\n".join(p for p in parts if p)
    env = os.environ if env is None else env
    return Prompt(system=redact(system, env), user=redact(user, env))


def is_simple_bug(crash: CrashReport) -> bool:
    """True when the crash log shows a bug the model can fix from the tail (syntax, import, name, shape)."""
    if crash.reason == "syntax error":
        return True
    if not crash.reason.startswith("exception"):
        return False  # killed for time, NaN, loss, log flood, no metric, or refused by an integrity check
    tail = "\n".join(crash.log_tail.splitlines()[-MAX_CRASH_LINES:])
    return bool(_SIMPLE_BUG.search(tail)) and not _NOT_SIMPLE.search(tail)


@functools.cache
def describe_hardware(device: str) -> str:
    """A one-line description of the machine for the prompt, e.g. "1x NVIDIA H100 80GB HBM3 (81559 MiB)"."""
    cpu = f"{os.cpu_count() or '?'} CPU cores, {platform.machine() or 'unknown arch'}"
    if device == "cuda" and shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                capture_output=True, text=True, timeout=10, check=True,
            ).stdout  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            out = ""
        gpus = [line.strip() for line in out.splitlines() if line.strip()]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
        if visible and gpus:
            ids = [int(i) for i in visible.split(",") if i.strip().isdigit() and int(i) < len(gpus)]
            gpus = [gpus[i] for i in ids] or gpus
        if gpus:
            return f"{len(gpus)}x {gpus[0]}; {cpu}"
    if device == "mlx":
        backend = "Apple silicon (MLX, Metal)" if sys.platform == "darwin" else "MLX on its CPU backend"
        return f"{backend}; {cpu}"
    return cpu


def _setup(ctx: Context, better: str) -> str:
    hardware = ctx.hardware or "unknown hardware"
    return (
        "# Setup\n\n"
        f"- metric: {ctx.metric} ({better} is better), read from the summary block the run prints last\n"
        f"- time budget: {ctx.budget_seconds:g} s of training per experiment (fixed; do not change it)\n"
        f"- device profile: {ctx.device}\n"
        f"- hardware: {hardware}\n"
    )


def _fmt_metric(value: float) -> str:
    return f"{value:.6f}"


def _row_line(row: Row, metric: str) -> str:
    n = row.extra.get("n", "")
    description = " ".join(row.description.split())
    if len(description) > _MAX_DESCRIPTION:
        description = description[: _MAX_DESCRIPTION - 3] + "..."
    value = _fmt_metric(row.metric) if row.scored else "-"
    reason = row.extra.get("reason", "")
    why = f" [{reason}]" if reason and row.status != "keep" else ""
    return f"{n:>4} | {row.commit} | {value} | {row.status:<7} | {description}{why}"


def _history(history: Sequence[Row], metric: str, direction: str, limit: int) -> str:
    if not history:
        return "# History\n\nNo experiment has run yet: the first run is the unmodified baseline."
    header = f"   n | commit  | {metric} | status  | description [reason]"
    lines = [_row_line(row, metric) for row in history]
    shown = _condense(history, lines, limit)

    kept = [r for r in history if r.status == "keep"]
    crashes = sum(1 for r in history if r.status == "crash")
    summary = [f"{len(history)} attempts so far: {len(kept)} kept, {crashes} crashed."]
    if kept:
        best = kept[-1]
        summary.append(f"Current best: {_fmt_metric(best.metric)} ({best.commit}: {best.description}).")
        ladder = " -> ".join(_fmt_metric(r.metric) for r in kept[-12:])
        summary.append(f"Kept changes, in order (each one is in the current files): {ladder}")
    body = "\n".join([header, *shown])
    return "# History of this run\n\n" + " ".join(summary) + "\n\n```\n" + body + "\n```"


def _condense(history: Sequence[Row], lines: list[str], limit: int) -> list[str]:
    """Keep whole rows within `limit` chars: every kept row and the newest others; count the rest."""
    if sum(len(line) + 1 for line in lines) <= limit:
        return lines
    budget = limit - 60  # room for the condensed-gap line after the last kept row
    keep_idx: set[int] = set()
    # Kept changes first (newest first if even they do not fit), then the newest attempts.
    kept_first = [i for i in reversed(range(len(lines))) if history[i].status == "keep"]
    others = [i for i in reversed(range(len(lines))) if history[i].status != "keep"]
    # Each group is taken newest first and stops at the first row that does not fit, so what
    # is shown is always a contiguous recent stretch plus the kept ladder.
    for group in (kept_first, others):
        for i in group:
            # A kept row may open a gap before it: reserve room for that condensed line.
            cost = len(lines[i]) + 1 + (60 if group is kept_first else 0)
            if cost > budget:
                break
            keep_idx.add(i)
            budget -= cost
    out: list[str] = []
    gap: list[Row] = []

    def flush() -> None:
        if gap:
            counts: dict[str, int] = {}
            for row in gap:
                counts[row.status] = counts.get(row.status, 0) + 1
            what = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            out.append(f"   ... {len(gap)} older attempts condensed ({what}) ...")
            gap.clear()

    for i, line in enumerate(lines):
        if i in keep_idx:
            flush()
            out.append(line)
        else:
            gap.append(history[i])
    flush()
    return out


def _files(files: Mapping[str, str]) -> str:
    parts = ["# Current files (the best version so far)"]
    for path, content in files.items():
        lang = "python" if path.endswith(".py") else ""
        parts.append(f"{path}\n```{lang}\n{content.rstrip()}\n```")
    return "\n\n".join(parts)
