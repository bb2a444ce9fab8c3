"""Build the prompts an LLM agent gets: one proposal (`build_prompt`) or a reflection (`build_reflection_prompt`).

System text: program.md (the person's research instructions, re-read before every
experiment) followed by the reply format. User text of a proposal, in order: the setup (metric
and direction, budget, device profile, hardware), the research notes, this tag's history with
each attempt's diagnostics, near misses to build on, what is being tried right now, the mutable
files in full as they are at the current best, the last crash's log tail (at most 50 lines)
when the model is asked to fix it, the feedback on a reply that could not be used, and the task.
The sections are `harness.agents.history`'s, each bounded, so the prompt stays bounded over any
number of attempts (BENCHMARKS.md has the sizes over a 200-attempt night).

A reflection prompt shows the same history and the notes and asks for the notes rewritten.
Every secret of the environment (API keys, tokens, URLs with a password), in every encoding
`harness.credentials` knows (raw, reversed, hex, base64, percent-encoded), is redacted from
everything sent.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from harness.agents import history as sections
from harness.agents.base import Context, CrashReport
from harness.agents.history import MAX_HISTORY_CHARS
from harness.credentials import redact
from harness.detect import nvidia_gpus
from harness.edits import REPLY_FORMAT
from harness.store.notes import MAX_NOTES_CHARS

MAX_CRASH_LINES = 50
# A crash the model can fix from the log: syntax, import, name and shape errors. Out of
# memory, timeouts, NaNs and integrity refusals are not "simple bugs": they go to the
# history like any other crash.
_SIMPLE_BUG = re.compile(
    r"\b(SyntaxError|IndentationError|TabError|ImportError|ModuleNotFoundError|NameError|"
    r"UnboundLocalError|AttributeError|TypeError|IndexError|KeyError)\b|"
    r"shape|size mismatch|must match the size|mat1 and mat2|Dimension out of range|dimension",
)
_MARKER = "[autoresearch] "  # how the runner prefixes the lines it adds to a run's log
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

    parts = [_setup(ctx, better), sections.notes(ctx.notes)]
    parts.append(sections.history(ctx.history, ctx.records, ctx.metric, ctx.direction, max_history_chars))
    parts.append(sections.near_misses(ctx.near_misses))
    parts.append(sections.in_flight(ctx.in_flight, ctx.writing))
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
        "ugly complexity is not worth it. Do not repeat an attempt from the history or one being tried "
        "right now: a change equal to one of them is refused without a run. Add a `Note:` line when you "
        "learned something worth keeping in the research notes.\n\n" + REPLY_FORMAT
    )
    parts.append(task)
    user = "\n\n".join(p for p in parts if p)
    env = os.environ if env is None else env
    return Prompt(system=redact(system, env), user=redact(user, env))


def build_reflection_prompt(
    ctx: Context, *, max_history_chars: int = MAX_HISTORY_CHARS, env: Mapping[str, str] | None = None
) -> Prompt:
    """The prompt of a reflection call: rewrite the research notes from the history."""
    better = "lower" if ctx.direction == "minimize" else "higher"
    system = (
        ctx.program.strip()
        + "\n\n# Your task now\n\nYou keep the research notes of this autonomous experiment run: a short, "
        "dense record that the next proposals are based on."
    )
    parts = [
        _setup(ctx, better),
        sections.notes(ctx.notes) or "# Research notes\n\n(none yet)",
        sections.history(ctx.history, ctx.records, ctx.metric, ctx.direction, max_history_chars),
        "# Task\n\n"
        f"Rewrite the research notes from the history above, in Markdown, at most {MAX_NOTES_CHARS} "
        "characters. Use the sections `## Insights` (what helped or hurt and why, citing attempts as "
        "#n), `## Dead ends` (what not to try again) and `## Next` (the most promising directions). "
        "Keep what the person wrote in the notes unless the history contradicts it. Reply with the "
        "notes only, in one fenced ```markdown block.",
    ]
    user = "\n\n".join(p for p in parts if p)
    env = os.environ if env is None else env
    return Prompt(system=redact(system, env), user=redact(user, env))


def is_simple_bug(crash: CrashReport) -> bool:
    """True when the crash log shows a bug the model can fix from the tail (syntax, import, name, shape)."""
    if crash.reason == "syntax error":
        return True
    if not crash.reason.startswith("exception"):
        return False  # killed for time, NaN, loss, log flood, no metric, or refused by an integrity check
    # Only the run's own lines: the harness's markers (e.g. "[autoresearch] killed 1 process(es)
    # of the run still alive after it ended", common on a loaded machine) say nothing of the bug.
    lines = [ln for ln in crash.log_tail.splitlines()[-MAX_CRASH_LINES:] if not ln.startswith(_MARKER)]
    tail = "\n".join(lines)
    return bool(_SIMPLE_BUG.search(tail)) and not _NOT_SIMPLE.search(tail)


@functools.cache
def describe_hardware(device: str) -> str:
    """A one-line description of the machine for the prompt, e.g. "1x NVIDIA H100 80GB HBM3 (81559 MiB)"."""
    cpu = f"{os.cpu_count() or '?'} CPU cores, {platform.machine() or 'unknown arch'}"
    if device == "cuda":
        gpus = nvidia_gpus("name,memory.total")
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


def _files(files: Mapping[str, str]) -> str:
    parts = ["# Current files (the best version so far)"]
    for path, content in files.items():
        lang = "python" if path.endswith(".py") else ""
        parts.append(f"{path}\n```{lang}\n{content.rstrip()}\n```")
    return "\n\n".join(parts)
