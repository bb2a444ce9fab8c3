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
    devices = ["cuda"]                # the devices it runs on (default: any); refused at start elsewhere

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
outside project). The file is read through its schema (`harness.store.schema.ExperimentFile`):
an unknown key or a value of the wrong type is a ConfigError naming the file and the key.
Nothing here changes anything on disk.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from pydantic import BaseModel, ValidationError

from harness.errors import ConfigError
from harness.store.schema import ExperimentFile, IntegrityTable, SandboxTable, read_text

DIRECTIONS = ("minimize", "maximize")
# Accepted values of [integrity] evaluator: the prepare module each one runs.
EVALUATORS = {"bpb": "prepare.evaluate_program", "arith": "prepare.evaluate_arith"}
# An evaluator that only makes sense on one dataset (arith: greedy decoding of additions)
EVALUATOR_DATASETS = {"arith": "arithmetic"}
CHECKS = ("strict", "permissive")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEVICES = ("cuda", "mlx", "cpu")  # accepted values of `devices`

# How a wrong type is named in the error (the keys of ExperimentFile and its tables).
_WANTED = {
    "mutable": "list",
    "budget_seconds": "int or float",
    "timeout_seconds": "int or float",
    "devices": "list",
    "sandbox": "table",
    "integrity": "table",
    "sandbox.network": "bool",
    "sandbox.read": "list",
    "sandbox.env": "list",
}
_TABLES: dict[str, type[BaseModel]] = {"sandbox": SandboxTable, "integrity": IntegrityTable}
_LIST_OF = {"sandbox.read": "a list of paths", "sandbox.env": "a list of environment variable names"}


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
    devices: tuple[str, ...] = ()  # the devices it runs on; empty: any


def load_experiment(exp_dir: Path) -> Experiment:
    """Parse `exp_dir/experiment.toml` through its schema; every problem is a ConfigError naming file and key."""
    path = exp_dir / "experiment.toml"
    if not path.is_file():
        raise ConfigError(f"{exp_dir} has no experiment.toml; an experiment folder needs one (see README.md)")
    text = (
        read_text(path, limit=1 << 20, fix="save it as a small UTF-8 TOML file", what="experiment file") or ""
    )
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    if "verify_metric" in data:
        raise ConfigError(
            f"{path}: key 'verify_metric' is gone: the metric now comes from prepare's evaluator; "
            'write [integrity] evaluator = "bpb" and end the train file with prepare.hand_off(model, batch_size)'
        )
    try:
        parsed = ExperimentFile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problem(path, exc)) from None
    mutable = parsed.mutable
    if not all(mutable):
        raise ConfigError(f"{path}: key 'mutable' must be a non-empty list of file names")
    for rel in mutable:
        _check_mutable(path, exp_dir, rel)
    if not parsed.run.strip():
        raise ConfigError(f"{path}: key 'run' is empty")
    devices = parsed.devices
    if devices is not None and (not devices or not all(d in DEVICES for d in devices)):
        raise ConfigError(
            f"{path}: key 'devices' must be a non-empty list of {', '.join(DEVICES)}, got {devices!r}"
        )
    sandbox, integrity = parsed.sandbox, parsed.integrity
    if not all(sandbox.read):
        raise ConfigError(f"{path}: key 'sandbox.read' must be {_LIST_OF['sandbox.read']}")
    if not all(_ENV_NAME.match(n) for n in sandbox.env):
        raise ConfigError(f"{path}: key 'sandbox.env' must be {_LIST_OF['sandbox.env']}")
    if integrity.checks not in CHECKS:
        raise ConfigError(
            f"{path}: key 'integrity.checks' must be one of {', '.join(CHECKS)}, got {integrity.checks!r}"
        )
    evaluator = integrity.evaluator
    if evaluator is not None and evaluator not in EVALUATORS:
        raise ConfigError(
            f"{path}: key 'integrity.evaluator' must be one of {', '.join(EVALUATORS)}, got {evaluator!r}"
        )
    if evaluator is not None and parsed.dataset == "none":
        raise ConfigError(
            f"{path}: key 'integrity.evaluator' needs a dataset to evaluate on, not dataset = \"none\""
        )
    pinned = EVALUATOR_DATASETS.get(evaluator or "")
    if pinned is not None and data.get("dataset") != pinned:
        raise ConfigError(f'{path}: key \'integrity.evaluator\' = "{evaluator}" needs dataset = "{pinned}"')
    return Experiment(
        name=parsed.name or exp_dir.name,
        dir=exp_dir.resolve(),
        mutable=tuple(mutable),
        run=parsed.run,
        metric=parsed.metric,
        direction=parsed.direction,
        budget_seconds=parsed.budget_seconds,
        timeout_seconds=parsed.timeout_seconds,
        dataset=parsed.dataset,
        evaluator=evaluator,
        network=sandbox.network,
        read=tuple((exp_dir / Path(r).expanduser()).resolve() for r in sandbox.read),
        env=tuple(sandbox.env),
        checks=integrity.checks,
        devices=tuple(devices or ()),
    )


def _problem(path: Path, exc: ValidationError) -> str:
    """The first problem of experiment.toml, in the words the rest of the harness uses."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    table = loc[0] if len(loc) > 1 and loc[0] in _TABLES else None
    key = ".".join(loc[:2]) if table else (loc[0] if loc else "")
    value = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        allowed = ", ".join(_TABLES[table].model_fields if table else ExperimentFile.model_fields)
        return f"{path}: unknown key '{key}'; allowed keys: {allowed}"
    if kind == "missing":
        return f"{path}: missing required key '{key}'"
    if key == "mutable" and (len(loc) > 1 or kind == "too_short"):
        return f"{path}: key 'mutable' must be a non-empty list of file names"
    if key in _LIST_OF and len(loc) > 2:
        return f"{path}: key '{key}' must be {_LIST_OF[key]}"
    if key == "direction":
        return f"{path}: key 'direction' must be 'minimize' or 'maximize', got {value!r}"
    if kind in ("greater_than", "finite_number"):
        return f"{path}: key '{key}' must be positive, got {value!r}"
    if kind.endswith("_type"):
        wanted = _WANTED.get(key, "str")
        return f"{path}: key '{key}' must be a {wanted}, got {type(value).__name__} {value!r}"
    return f"{path}: key '{key}': {err['msg']}, got {value!r}"


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
