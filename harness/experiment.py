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
    verify_metric = "evaluate_bpb"    # accept the metric only if prepare's evaluate_bpb computed it

The file is read through its schema (`harness.store.schema.ExperimentFile`): an unknown key
or a value of the wrong type is a ConfigError naming the file and the key. Nothing here
changes anything on disk.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from pydantic import ValidationError

from harness.errors import ConfigError
from harness.store.schema import ExperimentFile, read_text

DIRECTIONS = ("minimize", "maximize")
# Accepted values of verify_metric; harness.integrity.provenance implements each (a test checks).
VERIFIERS = ("evaluate_bpb",)

# How a wrong type is named in the error (the keys of ExperimentFile).
_WANTED = {"mutable": "list", "budget_seconds": "int or float", "timeout_seconds": "int or float"}
_ALLOWED = ", ".join(ExperimentFile.model_fields)


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
    verify_metric: str | None = None


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
    verify = parsed.verify_metric
    if verify is not None and verify not in VERIFIERS:
        raise ConfigError(
            f"{path}: key 'verify_metric' must be one of {', '.join(VERIFIERS)}, got {verify!r}"
        )
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
        verify_metric=verify,
    )


def _problem(path: Path, exc: ValidationError) -> str:
    """The first problem of experiment.toml, in the words the rest of the harness uses."""
    err = exc.errors(include_url=False)[0]
    key = str(err["loc"][0]) if err["loc"] else ""
    value = err.get("input")
    kind = err["type"]
    if kind == "extra_forbidden":
        return f"{path}: unknown key '{key}'; allowed keys: {_ALLOWED}"
    if kind == "missing":
        return f"{path}: missing required key '{key}'"
    if key == "mutable" and (len(err["loc"]) > 1 or kind == "too_short"):
        return f"{path}: key 'mutable' must be a non-empty list of file names"
    if key == "direction":
        return f"{path}: key 'direction' must be 'minimize' or 'maximize', got {value!r}"
    if kind in ("greater_than", "finite_number"):
        return f"{path}: key '{key}' must be positive, got {value!r}"
    if kind.endswith("_type") or kind == "bool_type":
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
