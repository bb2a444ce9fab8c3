"""The metric out of the agent's reach: the evaluator seen from the harness.

For an experiment with an `[integrity] evaluator` (`bpb`, `arith`) the number that decides keep or discard
is never one the train run printed. The run ends with `prepare.hand_off(model, batch_size)`,
which writes the model as data (an ATen graph or an MLX function, plus its tensors) into a
fresh folder named by $AUTORESEARCH_HAND_OFF. Once the run has ended and the guard has checked
the protected files, the harness (`harness.night.measure`) starts the evaluator:

    python -E -s -B -u -m prepare.evaluate_program <hand-off folder>

in a new interpreter whose only importable project code is a copy of prepare/ and constants.py
(`stage`, taken after the guard's check, without bytecode caches), with `-E` (no PYTHON*
variables: no PYTHONPATH or PYTHONSTARTUP from anyone), `-s` (no user site), an environment
of a few named variables (`environment`) and, when the night has one, its own sandbox. The evaluator loads the program as data, proves it
causal on probe rows and computes val_bpb exactly as prepare's evaluate_bpb does; its last
stdout line, which the harness reads from the pipe it holds, is the result (`read_outcome`).

Crash reasons it adds: `no hand-off` (the run never handed a model over), `unverified metric`
(the train run printed the metric itself: with an evaluator only the evaluator may),
`refused program: <why>` (the evaluator would not run it: an operator outside its list,
state, randomness, a malformed file), `non-causal: <where>` (a probe row changed the losses
before its cut), `evaluation failed: <why>` (the evaluator crashed or timed out).

What the train run can still do is ARCHITECTURE.md's ("Integrity"): what the exported graph
computes is the model's business, within the probes' reach.
"""

from __future__ import annotations

import json
import math
import shlex
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.experiment import EVALUATORS
from harness.integrity.environment import allowed

HAND_OFF_ENV = "AUTORESEARCH_HAND_OFF"
# The evaluator's result line (prepare.verdict.RESULT_MARKER; the harness imports prepare
# in three places only, so it is repeated here and a test checks the two agree).
RESULT_MARKER = "@@autoresearch evaluation"
# Defence switches passed to the evaluator. Empty in every real night: only the test suite sets
# them, to show that each cheat wins when its defence is off.
TEST_SWITCHES: tuple[str, ...] = ()
_RUN_VARIABLES = ("AUTORESEARCH_DEVICE", "AUTORESEARCH_DATASET", "AUTORESEARCH_CACHE")
_STAGED = ("prepare", "constants.py")
# result key -> the key it gets in the run's summary (the TSV's summary column); other keys keep their name
_SUMMARY_KEYS = {
    "eval_tokens": "eval_tokens", "target_tokens": "target_tokens", "bytes": "eval_bytes",
    "seconds": "eval_seconds", "probes": "causal_probes", "max_probe_diff": "causal_max_diff",
}  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    """What the evaluator said: the metric, or the crash reason; `summary` its keys for the TSV."""

    value: float | None
    reason: str | None
    summary: dict[str, float] = field(default_factory=dict)


def module(evaluator: str) -> str:
    """The prepare module an [integrity] evaluator name runs."""
    return EVALUATORS[evaluator]


def handed_off(folder: Path) -> bool:
    """Whether the run left a program in its hand-off folder."""
    return (folder / "program.json").is_file()


def stage(worktree: Path, dest: Path) -> Path:
    """Copy prepare/ and constants.py of the (verified) worktree into `dest`, without bytecode.

    The evaluator runs from `dest`: nothing else is importable from the project, so no file the
    run dropped in the worktree (a `torch.py` next to the package, a poisoned `__pycache__`) can
    shadow what it imports.
    """
    dest.mkdir(parents=True, exist_ok=True)
    for name in _STAGED:
        src = worktree / name
        if src.is_dir():
            shutil.copytree(
                src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=False
            )
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return dest


def command(evaluator: str, folder: Path, python: str = sys.executable) -> str:
    """The evaluator's command line (a shell string, as the runner takes it)."""
    return shlex.join([python, "-E", "-s", "-B", "-u", "-m", module(evaluator), str(folder), *TEST_SWITCHES])


def environment(base: Mapping[str, str], run_env: Mapping[str, str]) -> dict[str, str]:
    """The evaluator's environment: the allow-listed variables of the harness's (PATH, locale,
    accelerator: `harness.integrity.environment`) and the run's device, dataset and cache."""
    env = {k: v for k, v in base.items() if allowed(k, v) and not k.startswith(_COMPILE_PREFIXES)}
    env.update({k: run_env[k] for k in _RUN_VARIABLES if k in run_env})
    return env


#: the evaluator never reads a compile cache the runs write (it runs eager ATen operators;
#: the measurer points these at its private home)
_COMPILE_PREFIXES = ("TORCHINDUCTOR_", "TRITON_")


def printed_metric(summary: Mapping[str, float | str] | None, metric: str) -> str | None:
    """The crash reason when the train run printed the metric itself (None when it did not)."""
    if summary is not None and metric in summary:
        return (
            f"unverified metric: the train run printed {metric} itself; with an evaluator "
            "the metric comes from prepare's evaluator only"
        )
    return None


def read_outcome(
    lines: Sequence[str], exit_code: int | None, kill_reason: str | None, metric: str = "val_bpb"
) -> Outcome:
    """The evaluator's verdict from its stdout lines (the last result line counts): `metric`'s
    value, the other numbers of the result line as summary keys."""
    result = None
    for line in reversed(lines):
        if line.startswith(RESULT_MARKER):
            try:
                result = json.loads(line[len(RESULT_MARKER) :])
            except ValueError:
                result = None
            break
    if kill_reason:
        return Outcome(None, f"evaluation failed: {kill_reason.replace('_', ' ')}")
    if isinstance(result, dict) and isinstance(result.get("reason"), str):
        return Outcome(None, result["reason"][:300])
    value = result.get(metric) if isinstance(result, dict) else None
    if exit_code != 0 or not isinstance(value, (int, float)) or not math.isfinite(value):
        last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
        return Outcome(None, f"evaluation failed: exit code {exit_code}, last line: {last[:200]}")
    assert isinstance(result, dict)
    summary: dict[str, float] = {
        _SUMMARY_KEYS.get(str(key), str(key)): float(v)
        for key, v in result.items()
        if key != metric and isinstance(v, (int, float)) and not isinstance(v, bool)
    }
    return Outcome(float(value), None, summary)
