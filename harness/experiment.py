"""experiment.toml: the description of one experiment folder, parsed and checked.

The generic template (every key but `mutable` and `run` is optional):

    name = "gpt"
    mutable = ["train.py"]            # relative to the experiment folder; nothing else is editable
    run = "python train.py"           # run from the experiment folder
    metric = "val_bpb"
    direction = "minimize"            # or "maximize"
    budget_seconds = 300              # training seconds; default: constants.py's TIME_BUDGET
    timeout_seconds = 600             # hard kill; default: the budget plus constants.py's allowance
    dataset = "none"                  # an experiment that reads no dataset, or a pinned dataset spec

    [integrity]
    evaluator = "bpb"                 # the metric comes from prepare's evaluator, not the run's summary

With `evaluator = "bpb"` the train file ends with `prepare.hand_off(model, batch_size)` and the
harness computes val_bpb in a separate evaluation process (`harness.integrity.evaluation`); the
run's own summary keeps its other keys. Without it the metric is the one the run printed (any
outside project). An unknown key or a value of the wrong type is a ConfigError naming the file
and the key.
Nothing here changes anything on disk.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from harness.errors import ConfigError

DIRECTIONS = ("minimize", "maximize")
# Accepted values of [integrity] evaluator: the prepare module each one runs.
EVALUATORS = {"bpb": "prepare.evaluate_program"}
_INTEGRITY_KEYS = ("evaluator",)

# key -> (accepted types, required)
_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), False),
    "mutable": ((list,), True),
    "run": ((str,), True),
    "metric": ((str,), False),
    "direction": ((str,), False),
    "budget_seconds": ((int, float), False),
    "timeout_seconds": ((int, float), False),
    "dataset": ((str,), False),
    "integrity": ((dict,), False),
}


@dataclass(frozen=True)
class Experiment:
    """The parsed experiment.toml. `mutable` is relative to the experiment folder."""

    name: str
    dir: Path
    mutable: tuple[str, ...]
    run: str
    metric: str = "val_bpb"
    direction: str = "minimize"
    budget_seconds: float | None = None
    timeout_seconds: float | None = None
    dataset: str | None = None
    evaluator: str | None = None  # [integrity] evaluator: a key of EVALUATORS


def load_experiment(exp_dir: Path) -> Experiment:
    """Parse `exp_dir/experiment.toml`; every problem is a ConfigError naming file and key."""
    path = exp_dir / "experiment.toml"
    if not path.is_file():
        raise ConfigError(f"{exp_dir} has no experiment.toml; an experiment folder needs one (see README.md)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for key, value in data.items():
        if key == "verify_metric":
            raise ConfigError(
                f"{path}: key 'verify_metric' is gone: the metric now comes from prepare's evaluator; "
                'write [integrity] evaluator = "bpb" and end the train file with prepare.hand_off(model, batch_size)'
            )
        if key not in _KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'; allowed keys: {', '.join(_KEYS)}")
        types, _ = _KEYS[key]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{path}: key '{key}' must be a {wanted}, got {type(value).__name__} {value!r}")
    for key, (_, required) in _KEYS.items():
        if required and key not in data:
            raise ConfigError(f"{path}: missing required key '{key}'")
    mutable = data["mutable"]
    if not mutable or not all(isinstance(m, str) and m for m in mutable):
        raise ConfigError(f"{path}: key 'mutable' must be a non-empty list of file names")
    for rel in mutable:
        _check_mutable(path, exp_dir, rel)
    direction = data.get("direction", "minimize")
    if direction not in DIRECTIONS:
        raise ConfigError(f"{path}: key 'direction' must be 'minimize' or 'maximize', got {direction!r}")
    for key in ("budget_seconds", "timeout_seconds"):
        if key in data and not 0 < data[key] < math.inf:  # TOML has nan and inf too
            raise ConfigError(f"{path}: key '{key}' must be positive, got {data[key]!r}")
    if not data["run"].strip():
        raise ConfigError(f"{path}: key 'run' is empty")
    evaluator = _evaluator(path, data.get("integrity", {}), data.get("dataset"))
    return Experiment(
        name=data.get("name", exp_dir.name),
        dir=exp_dir.resolve(),
        mutable=tuple(mutable),
        run=data["run"],
        metric=data.get("metric", "val_bpb"),
        direction=direction,
        budget_seconds=float(data["budget_seconds"]) if "budget_seconds" in data else None,
        timeout_seconds=float(data["timeout_seconds"]) if "timeout_seconds" in data else None,
        dataset=data.get("dataset"),
        evaluator=evaluator,
    )


def _evaluator(path: Path, table: dict[str, object], dataset: object) -> str | None:
    """The [integrity] table's evaluator (None: the metric is the run's own)."""
    for key in table:
        if key not in _INTEGRITY_KEYS:
            raise ConfigError(
                f"{path}: unknown key 'integrity.{key}'; allowed keys: {', '.join(_INTEGRITY_KEYS)}"
            )
    evaluator = table.get("evaluator")
    if evaluator is None:
        return None
    if not isinstance(evaluator, str) or evaluator not in EVALUATORS:
        raise ConfigError(
            f"{path}: key 'integrity.evaluator' must be one of {', '.join(EVALUATORS)}, got {evaluator!r}"
        )
    if dataset == "none":
        raise ConfigError(
            f"{path}: key 'integrity.evaluator' needs a dataset to evaluate on, but dataset = \"none\""
        )
    return evaluator


def _check_mutable(path: Path, exp_dir: Path, rel: str) -> None:
    """A mutable file must be an existing UTF-8 text file inside the experiment folder."""
    target = (exp_dir / rel).resolve()
    if not target.is_relative_to(exp_dir.resolve()):
        raise ConfigError(f"{path}: key 'mutable': {rel!r} is outside the experiment folder")
    if not target.is_file():
        raise ConfigError(f"{path}: key 'mutable': {rel!r} does not exist in {exp_dir}")
    try:
        target.read_text(encoding="utf-8")  # the agent edits text; the loop reads it as UTF-8
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: key 'mutable': {rel!r} is not UTF-8 text ({exc.reason}); save it as UTF-8"
        ) from None
