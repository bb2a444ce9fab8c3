"""Measuring one run: start it under the guard, in the sandbox, read its summary, name its crash.

`Measurer.run(n, k)` runs the worktree's current commit once (log `runs/<n>.log`, repeats
`<n>.r<k>.log`, the warm-up `<n>.warmup.log`):

1. the guard checks the protected paths against the night's snapshot (restoring anything a
   leftover process changed between runs) and records the harness's own files;
2. the run starts in its sandbox (`harness.integrity.sandbox`, when the night has one), with
   the allow-listed environment (`harness.integrity.environment`), a fresh scratch folder as
   HOME and TMPDIR, its log redacted (`harness.credentials`), and the harness's budget clock
   (`harness.integrity.budget`) able to kill it;
3. once nothing of it is alive (the runner makes sure), the guard checks again and the budget
   is measured from the marker lines;
4. for an experiment with an evaluator (`[integrity] evaluator`), the harness starts it on the
   model the run handed off (`harness.integrity.evaluation`): in its own sandbox, from a copy
   of prepare/ taken after the guard's check, with the validation data visible (the train run
   had it hidden); its output is appended to the run's log and its val_bpb is the metric.
   Otherwise the metric is the one the run printed.

It returns a `RunRecord`: the metric or the crash reason, the harness's measurements, and the
run's diagnostics (time split, throughput, loss curve: `harness.night.diagnostics`, watched
while the run prints).

`crash_reason` turns a `RunResult` and its parsed summary into the `reason` column of a
crash (syntax error / exception: <last exception line> / timeout / over budget / nan / loss /
log flood / no metric / incorrect: <why>, when the run printed an `@@autoresearch incorrect`
marker), or None for a run that ended well. Tampering wins over any other
reason, then the budget, then the evaluator's verdict. A run that printed a complete summary
(its metric; with an evaluator, the model handed off) is judged by it even if the process then
died (an abort at interpreter exit): the row notes the abnormal exit in its `reason` column
instead of losing the result.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness import credentials
from harness.integrity import budget, evaluation
from harness.integrity.environment import run_environment
from harness.integrity.guard import Guard, Tampering
from harness.integrity.sandbox import Sandbox
from harness.night.diagnostics import Progress
from harness.night.metrics import metric_value, read_summary
from harness.night.prune import Pruner
from harness.night.runner import RunResult
from harness.night.runner import run as run_command
from harness.settings import Settings, validation_files
from harness.store.attempts import Diagnostics
from harness.store.ledger import PRUNED
from harness.store.paths import TagPaths, compile_cache
from harness.store.seal import seal_path

_KILL_REASONS = {
    "timeout": "timeout",
    "over_budget": "over budget",
    "nan": "nan",
    "loss": "loss",
    "log_flood": "log flood",
    "pruned": PRUNED,
}
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
    measured: budget.Measured | None = None  # start-up, training and tokens by the harness's clock
    diagnostics: Diagnostics | None = None
    note: str = ""  # e.g. an abnormal exit after a complete summary (the run still counts)


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
    result: RunResult,
    summary: Mapping[str, float | str] | None,
    metric: str | None,
    *,
    handed_off: bool = False,
) -> str | None:
    """The crash reason of one run, or None when it ended well (and printed `metric`, unless None).

    A run that completed (printed a usable `metric`; with `metric` None, handed its model off to
    the evaluator, `handed_off`, and then died by a signal) is judged by that even when the
    process then ended abnormally (`abnormal_exit` says how, for the row); one the harness
    killed, or whose train file printed FAIL, is a crash whatever it printed.
    """
    if result.kill_reason:
        return _KILL_REASONS.get(result.kill_reason, result.kill_reason)
    for marker in result.markers:  # an immutable correctness gate failed (prepare.kernel_bench)
        if marker.name == "incorrect":
            return f"incorrect: {marker.payload[:200]}"
    value = metric_value(dict(summary) if summary else None, metric) if metric is not None else None
    tail = log_tail(result.log_path, 60).splitlines()
    if result.exit_code not in (0, None):
        for line in reversed(tail):
            if line.strip() == "FAIL" or line.startswith("FAIL"):
                # The train file's own divergence check (NaN or loss > 100).
                loss = result.last_loss
                return "nan" if loss is None or math.isnan(loss) else "loss"
        # With an evaluator, only a death by a signal after the hand-off (an abort at interpreter
        # exit) is forgiven: an exception in the train file after it is still its crash.
        signalled = result.exit_code is not None and (result.exit_code < 0 or result.exit_code > 128)
        if not (value is not None if metric is not None else handed_off and signalled):
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
    if value is None:
        return "no metric"
    return None


def abnormal_exit(result: RunResult) -> str:
    """A note for the row of a run judged by its summary although it did not exit with 0 ("" when it did)."""
    if result.kill_reason or result.exit_code in (0, None):
        return ""
    last = next((ln.strip() for ln in reversed(log_tail(result.log_path, 5).splitlines()) if ln.strip()), "")
    return f"exited with code {result.exit_code} after a complete summary" + (
        f" ({last[:120]})" if last else ""
    )


class Measurer:
    """Runs the tag's worktree as it is, one run at a time."""

    def __init__(
        self,
        settings: Settings,
        paths: TagPaths,
        worktree: Path,
        base_env: Mapping[str, str],
        on_line: Callable[[str], None],
        notify: Callable[[str], None] | None = None,
    ) -> None:
        """`settings.sandbox` is "on" or "off" here (the night settles "auto" before)."""
        self.s = settings
        self.paths = paths
        self.worktree = worktree
        self.base_env = base_env
        self.on_line = on_line
        self.notify = notify or on_line
        self.sandboxed = settings.sandbox == "on"
        self.redact = credentials.redactor(base_env)
        self.limits = budget.Limits(
            budget=settings.budget,
            tolerance=settings.budget_tolerance,
            warmup=settings.warmup_allowance,
            startup=settings.startup_max,
            require_markers=settings.checks == "strict",
        )
        self.guard = Guard.for_worktree(
            worktree,
            worktree / settings.experiment_rel,
            paths.tsv,
            repo_root=settings.repo_root,
            journal=paths.pending,
            seal=seal_path(paths.tsv),
        )
        self._snapshot_taken = False
        # the validation data a train run must not see when an evaluator computes the metric
        self.hidden = validation_files(settings) if settings.evaluator else ()

    def run(self, n: int, k: int, *, warmup: bool = False, prune: Pruner | None = None) -> RunRecord:
        """Run k of attempt n (k = 0 the first), logged to `paths.log(n, k)`; with `warmup`, the
        discarded warm-up run logged to `paths.warmup_log(n)`; with `prune` (a candidate's run),
        aborted once its loss is clearly behind the best's (reason `pruned`)."""
        log_path = self.paths.warmup_log(n) if warmup else self.paths.log(n, k)
        if not self._snapshot_taken:
            # the protected trees as the night's first run finds them (after --resume's reset):
            # never re-taken, so a change between two runs is found, not adopted
            self.guard.snapshot()
            self._snapshot_taken = True
        if FIXED_SNAPSHOT:
            self.guard.rebase()
            between = self.guard.check()
        else:
            self.guard.snapshot()
            between = Tampering()
        if between:
            self.notify(
                f"restored protected files changed between runs ({between.reason}); running #{n} on the originals"
            )
        scratch = self._scratch(log_path)
        # where prepare.hand_off writes the model: always given, so a train file never starts the
        # evaluator itself inside a judged run (it does only when run by hand)
        handoff = scratch / "hand-off"
        handoff.mkdir()
        env = self.env(scratch, handoff)
        progress = Progress()

        def on_line(text: str) -> None:
            progress.line(text)
            self.on_line(text)

        sandbox = self.sandbox(scratch) if self.sandboxed else None
        started = time.time()
        try:
            result = run_command(
                self.s.run,
                cwd=self.worktree / self.s.experiment_rel,
                env=env,
                log_path=log_path,
                timeout=self.s.timeout,
                on_line=on_line,
                sandbox=sandbox,
                redact=self.redact if self.redact else None,
                deadline=functools.partial(budget.deadline, limits=self.limits),
                prune=prune if prune else None,
            )
        finally:
            tampering = self.guard.check()
            if self.s.device == "mlx":
                _share_kernels(scratch / "mlx", compile_cache(self.s.cache_root) / "mlx")
        summary = read_summary(log_path)
        exit_note = abnormal_exit(result)  # before the evaluator's output is appended to the log
        evaluated = self.s.evaluator is not None
        reason = crash_reason(
            result,
            summary,
            None if evaluated else self.s.metric,
            handed_off=evaluated and evaluation.handed_off(handoff),
        )
        measured = budget.measure(result.markers, result.wall_seconds, self.limits, reported=reason is None)
        value = None if evaluated else metric_value(summary, self.s.metric)
        run_end = result.wall_seconds
        if tampering:
            reason = tampering.reason
        elif result.kill_reason == "over_budget" or (reason is None and measured.reason):
            reason = measured.reason or "over budget: killed past the training time the harness allows"
        elif reason is None and evaluated:
            outcome, result = self._evaluate(handoff, env, result, summary)
            reason, value = outcome.reason, outcome.value
            if value is not None:
                summary = {**(summary or {}), **outcome.summary, self.s.metric: value}
        if reason == PRUNED and prune is not None:
            _append(log_path, f"[autoresearch] pruned: {prune.why}")
        shutil.rmtree(handoff, ignore_errors=True)  # a real model's program is hundreds of MB
        _log_timing(log_path, started, result.markers, run_end, result.wall_seconds)
        diagnostics = progress.diagnostics(summary, result.wall_seconds, measured)
        value = None if reason else value
        note = exit_note if value is not None else ""
        return RunRecord(result, summary, value, reason, measured, diagnostics, note)

    def _evaluate(
        self,
        handoff: Path,
        run_env: Mapping[str, str],
        result: RunResult,
        summary: Mapping[str, float | str] | None,
    ) -> tuple[evaluation.Outcome, RunResult]:
        """Start the evaluator on the handed-off model; its output goes to the end of the run's log."""
        assert self.s.evaluator is not None
        if not evaluation.handed_off(handoff):
            reason = "no hand-off: the run ended without prepare.hand_off(model, batch_size)"
            return evaluation.Outcome(None, reason), result
        printed = evaluation.printed_metric(summary, self.s.metric)
        if printed:
            return evaluation.Outcome(None, printed), result
        lines: list[str] = []

        def on_line(line: str) -> None:
            lines.append(line)
            self.on_line(line)

        log_path = result.log_path
        eval_log = log_path.with_name(log_path.name + ".evaluator")
        with tempfile.TemporaryDirectory(prefix="ar-evaluator-") as tmp:
            code, home = evaluation.stage(self.worktree, Path(tmp) / "code"), Path(tmp) / "home"
            home.mkdir()
            sandbox = self.evaluator_sandbox(home, code, handoff) if self.sandboxed else None
            evaluated = run_command(
                evaluation.command(self.s.evaluator, handoff),
                cwd=code,
                env={
                    **evaluation.environment(self.base_env, run_env),
                    "HOME": str(home),
                    "TMPDIR": str(home),
                    # a fresh, private compile cache: never the one the agent's runs write
                    "TORCHINDUCTOR_CACHE_DIR": str(home / "inductor"),
                    "TRITON_CACHE_DIR": str(home / "triton"),
                },
                log_path=eval_log,
                timeout=max(EVAL_MIN_SECONDS, self.s.timeout - result.wall_seconds),
                on_line=on_line,
                sandbox=sandbox,
                redact=self.redact if self.redact else None,
            )
        with open(log_path, "ab") as log, open(eval_log, "rb") as out:
            log.write(f"[autoresearch] evaluator: {evaluation.module(self.s.evaluator)}\n".encode())
            shutil.copyfileobj(out, log)
        eval_log.unlink()
        outcome = evaluation.read_outcome(lines, evaluated.exit_code, evaluated.kill_reason, self.s.metric)
        return outcome, dataclasses.replace(result, wall_seconds=result.wall_seconds + evaluated.wall_seconds)

    def _scratch(self, log_path: Path) -> Path:
        """A fresh, empty scratch folder for this run; the previous run's goes."""
        shutil.rmtree(self.paths.scratch, ignore_errors=True)
        scratch = self.paths.scratch / log_path.stem
        scratch.mkdir(parents=True)
        if self.s.device == "mlx":
            _share_kernels(compile_cache(self.s.cache_root) / "mlx", scratch / "mlx")
        return scratch

    def sandbox(self, scratch: Path) -> Sandbox:
        """What a run may see: the worktree and the data cache read-only (the validation data hidden
        when an evaluator computes the metric), the compile cache writable, experiment.toml's extra
        paths, nothing of the checkout."""
        read: list[Path] = [self.worktree, self.s.cache_root, *self.s.read]
        for var in ("PYTHONPATH", "LD_LIBRARY_PATH"):
            for entry in self.base_env.get(var, "").split(os.pathsep):
                path = Path(entry) if entry else None
                # never the person's checkout (its results, .git): runs import the worktree's copy
                if path is not None and path.is_absolute() and not _overlaps(path, self.s.repo_root):
                    read.append(path)
        writable = [compile_cache(self.s.cache_root)]
        writable += [Path(self.base_env[v]) for v in _CACHE_VARS if v in self.base_env]
        return Sandbox(
            scratch=scratch,
            read_only=tuple(read),
            writable=tuple(writable),
            hidden=self.hidden,
            network=self.s.network,
            gpu=self.gpu,
        )

    def evaluator_sandbox(self, home: Path, code: Path, handoff: Path) -> Sandbox:
        """What the evaluator may see: its copy of prepare/, the handed-off model and the data cache,
        all read-only; no network; nothing of the worktree, the checkout or the compile caches."""
        return Sandbox(scratch=home, read_only=(code, handoff, self.s.cache_root), gpu=self.gpu)

    @property
    def gpu(self) -> bool:
        return self.s.profile == "cuda" or self.s.device == "cuda"

    def env(self, scratch: Path, handoff: Path) -> dict[str, str]:
        """The environment of one run: the allow-list of `harness.integrity.environment` plus
        what the harness sets for it.

        PYTHONPATH starts with the worktree, so `import prepare` and `import constants` resolve
        to the worktree's copy; AUTORESEARCH_* tell the run its device profile, budget, dataset,
        cache and the folder prepare.hand_off writes the model to; the compile caches are the
        cache root's (`harness.store.paths.compile_cache`), so only a machine's first run compiles cold.
        """
        pythonpath = [str(self.worktree)] + [
            p for p in self.base_env.get("PYTHONPATH", "").split(os.pathsep) if p
        ]
        harness_vars = {
            "PYTHONPATH": os.pathsep.join(pythonpath),
            "PYTHONUNBUFFERED": "1",
            "AUTORESEARCH_DEVICE": self.s.profile,
            "AUTORESEARCH_TIME_BUDGET": f"{self.s.budget:g}",
            "AUTORESEARCH_CACHE": str(self.s.cache_root),
        }
        harness_vars[evaluation.HAND_OFF_ENV] = str(handoff)
        if self.s.dataset != "none":
            harness_vars["AUTORESEARCH_DATASET"] = self.s.dataset
        for var, sub in zip(_CACHE_VARS, ("inductor", "triton"), strict=True):
            if var not in self.base_env:
                harness_vars[var] = str(compile_cache(self.s.cache_root) / sub)
                (compile_cache(self.s.cache_root) / sub).mkdir(parents=True, exist_ok=True)
        return run_environment(self.base_env, harness_vars, scratch=scratch, extra_names=self.s.env_names)


TIMING_PREFIX = "[autoresearch] timing "


def _log_timing(
    log_path: Path, started: float, markers: Sequence[budget.Marker], run_end: float, end: float
) -> None:
    """Append the harness's timeline of this run to its log, as one JSON line: `start` (epoch
    seconds), then seconds after it: `first_batch`, `hand_off` (the last), `run_end` (the train
    process ended) and `end` (the evaluation too). What the GPU-night benchmark reads to find the
    time outside the budget and the GPU's idle gaps between runs."""
    first = next((m.seconds for m in markers if m.name == budget.FIRST_BATCH), None)
    hand_off = next((m.seconds for m in reversed(markers) if m.name == budget.HAND_OFF), None)
    times = {"start": round(started, 3), "first_batch": first, "hand_off": hand_off}
    times |= {"run_end": run_end, "end": end}
    line = TIMING_PREFIX + json.dumps(
        {k: v if v is None or k == "start" else round(v, 3) for k, v in times.items()}
    )
    _append(log_path, line)


def _append(log_path: Path, line: str) -> None:
    with contextlib.suppress(OSError), open(log_path, "a", encoding="utf-8") as log:
        log.write(line + "\n")


_CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def _share_kernels(source: Path, target: Path) -> None:
    """Put the compiled kernels of `source` that `target` lacks into it: MLX's CPU backend compiles
    its kernels into $TMPDIR/mlx/ (no variable moves it), and a run's TMPDIR is its fresh scratch
    folder, so they go into the run's from the cache root's compile cache before it starts and
    back after it ends. Then only a machine's first MLX run pays the compile (45-51 s on the
    2-core CI box). MLX writes a kernel in place, so a kernel is linked or copied under a
    temporary name and renamed: a concurrent run never loads half a file."""
    for path in source.rglob("*.so") if source.is_dir() else ():
        dest = target / path.relative_to(source)
        if dest.exists():
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(f".{dest.name}.{os.getpid()}")
        with contextlib.suppress(OSError):
            try:
                os.link(path, part)
            except OSError:
                shutil.copy2(path, part)
            os.replace(part, dest)


#: turned off only by the planted-cheat tests: the guard then re-takes its snapshot before every
#: run, adopting whatever a process left behind by an earlier run changed in between (the race
#: the fixed snapshot closes)
FIXED_SNAPSHOT = True


def _overlaps(path: Path, root: Path) -> bool:
    """Whether `path` is `root`, inside it, or holds it."""
    try:
        p, r = path.resolve(), root.resolve()
    except OSError:
        return True
    return p == r or p.is_relative_to(r) or r.is_relative_to(p)
