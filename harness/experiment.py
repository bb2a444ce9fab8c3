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

    [sandbox]                         # what the run may reach beyond its worktree and scratch folder
    network = false                   # true: the run may open network connections
    read = ["/data/imagenet"]         # extra paths it may read (absolute, ~, or relative to this folder)
    env = ["HF_HOME"]                 # extra environment variables it gets from the harness's

    [integrity]
    checks = "permissive"             # "strict": the source checks of harness.integrity.checks too
    evaluator = "bpb"                 # the metric comes from prepare's evaluator, not the run's summary
                                      # ("bpb": val_bpb; "arith": accuracy by greedy decoding, dataset "arithmetic")

With `evaluator = "bpb"` the train file ends with `prepare.hand_off(model, batch_size)` and the
harness computes val_bpb in a separate evaluation process (`harness.integrity.evaluation`); the
run's own summary keeps its other keys. Without it the metric is the one the run printed (any
outside project). An unknown key or a value of the wrong type is a ConfigError naming the file
and the key.
Nothing here changes anything on disk.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from harness.errors import ConfigError

DIRECTIONS = ("minimize", "maximize")
# Accepted values of [integrity] evaluator: the prepare module each one runs.
EVALUATORS = {"bpb": "prepare.evaluate_program", "arith": "prepare.evaluate_arith"}
# An evaluator that only makes sense on one dataset (arith: greedy decoding of additions)
EVALUATOR_DATASETS = {"arith": "arithmetic"}
CHECKS = ("strict", "permissive")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

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
    "sandbox": ((dict,), False),
    "integrity": ((dict,), False),
}
_TABLES: dict[str, dict[str, type]] = {
    "sandbox": {"network": bool, "read": list, "env": list},
    "integrity": {"checks": str, "evaluator": str},
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
    network: bool = False  # [sandbox] network
    read: tuple[Path, ...] = ()  # [sandbox] read, absolute
    env: tuple[str, ...] = ()  # [sandbox] env
    checks: str = "permissive"  # [integrity] checks


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
    sandbox, integrity = _table(path, data, "sandbox"), _table(path, data, "integrity")
    read = sandbox.get("read", [])
    names = sandbox.get("env", [])
    if not all(isinstance(r, str) and r for r in read):
        raise ConfigError(f"{path}: key 'sandbox.read' must be a list of paths")
    if not all(isinstance(n, str) and _ENV_NAME.match(n) for n in names):
        raise ConfigError(f"{path}: key 'sandbox.env' must be a list of environment variable names")
    checks = integrity.get("checks", "permissive")
    if checks not in CHECKS:
        raise ConfigError(
            f"{path}: key 'integrity.checks' must be one of {', '.join(CHECKS)}, got {checks!r}"
        )
    evaluator = integrity.get("evaluator")
    if evaluator is not None and evaluator not in EVALUATORS:
        raise ConfigError(
            f"{path}: key 'integrity.evaluator' must be one of {', '.join(EVALUATORS)}, got {evaluator!r}"
        )
    if evaluator is not None and data.get("dataset") == "none":
        raise ConfigError(
            f"{path}: key 'integrity.evaluator' needs a dataset to evaluate on, not dataset = \"none\""
        )
    pinned = EVALUATOR_DATASETS.get(evaluator or "")
    if pinned is not None and data.get("dataset") != pinned:
        raise ConfigError(f'{path}: key \'integrity.evaluator\' = "{evaluator}" needs dataset = "{pinned}"')
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
        network=bool(sandbox.get("network", False)),
        read=tuple((exp_dir / Path(r).expanduser()).resolve() for r in read),
        env=tuple(names),
        checks=checks,
    )


def _table(path: Path, data: dict[str, Any], name: str) -> dict[str, Any]:
    """A sub-table of experiment.toml with its keys and their types checked."""
    table = data.get(name, {})
    assert isinstance(table, dict)
    for key, value in table.items():
        wanted = _TABLES[name].get(key)
        if wanted is None:
            raise ConfigError(f"{path}: unknown key '{name}.{key}'; allowed keys: {', '.join(_TABLES[name])}")
        if not isinstance(value, wanted):
            raise ConfigError(
                f"{path}: key '{name}.{key}' must be a {wanted.__name__}, got {type(value).__name__} {value!r}"
            )
    return table


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
