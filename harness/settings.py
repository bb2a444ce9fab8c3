"""One typed, frozen `Settings` object from experiment.toml, the CLI flags and the machine.

Precedence for every value: command-line flag > experiment.toml > environment > the device
profile of constants.py > built-in default. Values that are detected rather than given
(device, dataset, agent, budget, cache root) carry the reason they were chosen in
`Settings.reasons`, and `Settings.describe()` prints them at start, so a person reading a
night's log knows why it ran on the CPU with the search agent.

experiment.toml follows the template in ARCHITECTURE.md; an unknown key or a value of the
wrong type raises ConfigError naming the key. Nothing here changes anything on disk.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from harness.detect import (
    _known_experiments,
    detect_dataset,
    detect_device,
    detect_profile,
    find_experiment,
    parse_gpus,
    profile_values,
)
from harness.errors import ConfigError, DataError, RepoError
from harness.store.paths import TagPaths

__all__ = [
    "Experiment",
    "Settings",
    "detect_dataset",
    "detect_device",
    "find_experiment",
    "load_experiment",
    "parse_gpus",
    "profile_values",
    "resolve",
    "ensure_dataset",
]

DEVICES = ("cuda", "mlx", "cpu")
DIRECTIONS = ("minimize", "maximize")
DEFAULT_EXPERIMENT = "gpt"
# Used only when the repository has no constants.py (a bare experiment repo, e.g. a kernel benchmark).
FALLBACK_TIME_BUDGET = 300.0
FALLBACK_TIMEOUT = 600.0
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

# key -> (accepted types, required)
_TOML_KEYS: dict[str, tuple[tuple[type, ...], bool]] = {
    "name": ((str,), False),
    "mutable": ((list,), True),
    "run": ((str,), True),
    "metric": ((str,), False),
    "direction": ((str,), False),
    "budget_seconds": ((int, float), False),
    "timeout_seconds": ((int, float), False),
    # Optional extension of the template: "none" for experiments that read no dataset
    # (a kernel benchmark), or a dataset spec the experiment is pinned to.
    "dataset": ((str,), False),
    # Metric provenance (harness.integrity.provenance): "evaluate_bpb" = accept the metric only if
    # prepare's evaluate_bpb computed it in that run. Absent: any printed metric counts.
    "verify_metric": ((str,), False),
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
    verify_metric: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything one `autoresearch run` needs, resolved. Paths are absolute."""

    tag: str
    repo_root: Path
    experiment_dir: Path
    experiment_name: str
    mutable: tuple[str, ...]  # relative to repo_root, e.g. "experiments/gpt/train.py"
    run: str
    metric: str
    direction: str
    budget: float  # training seconds (AUTORESEARCH_TIME_BUDGET)
    budget_overridden: bool  # True when --budget or budget_seconds replaced the profile's value
    timeout: float  # hard kill after this many wall seconds
    device: str
    profile: str  # the constants.py profile the run gets as AUTORESEARCH_DEVICE (usually == device)
    dataset: str  # "arithmetic", "climbmix", "text:PATH" or "none"
    cache_root: Path
    agent: str  # "claude", "openai", "search" or "replay:/abs/path"
    model: str | None = None
    max_experiments: int | None = None
    max_cost: float | None = None
    resume: bool = False
    gpus: tuple[int, ...] = ()
    worker: str = ""
    reasons: Mapping[str, str] = field(default_factory=dict)
    judge: str = "noise"  # "noise" (NoiseAwareJudge) or "strict" (StrictJudge)
    baseline_runs: int | None = None  # None: the judge's default (noise 3, strict 1)
    verify_metric: str | None = None  # experiment.toml verify_metric (metric provenance)

    @property
    def experiment_rel(self) -> str:
        """The experiment folder relative to the repo root (the same inside the tag's worktree)."""
        return self.experiment_dir.relative_to(self.repo_root).as_posix()

    @property
    def paths(self) -> TagPaths:
        """Where this tag's files live (results, logs, journal, lock, queue, worktree)."""
        return TagPaths(self.repo_root, self.tag)

    def describe(self) -> list[str]:
        """The resolved settings, one `key: value (why)` line each, for the start of a night."""
        shown: list[tuple[str, Any]] = [
            ("tag", self.tag),
            ("repo", self.repo_root),
            ("experiment", f"{self.experiment_name} ({self.experiment_rel})"),
            ("mutable", ", ".join(self.mutable)),
            ("run", self.run),
            ("metric", f"{self.metric} ({self.direction})"),
            ("budget", f"{self.budget:g} s"),
            ("timeout", f"{self.timeout:g} s"),
            ("device", self.device),
            ("profile", self.profile),
            ("dataset", self.dataset),
            ("cache", self.cache_root),
            ("agent", self.agent),
            ("model", self.model or "(agent default)"),
            ("max_experiments", self.max_experiments if self.max_experiments is not None else "unlimited"),
            ("max_cost", f"${self.max_cost:g}" if self.max_cost is not None else "unlimited"),
            ("resume", self.resume),
            ("judge", f"{self.judge}, baseline x{self.baseline_runs or (3 if self.judge == 'noise' else 1)}"),
            ("verify_metric", self.verify_metric or "off"),
        ]
        if self.gpus:
            shown.append(("gpus", ",".join(map(str, self.gpus))))
        if self.worker:
            shown.append(("worker", self.worker))
        lines = []
        for key, value in shown:
            why = self.reasons.get(key)
            lines.append(f"{key + ':':<16} {value}" + (f"  ({why})" if why else ""))
        return lines


# --- experiment.toml ---------------------------------------------------------------------


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
        if key not in _TOML_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}'; allowed keys: {', '.join(_TOML_KEYS)}")
        types, _ = _TOML_KEYS[key]
        if isinstance(value, bool) or not isinstance(value, types):
            wanted = " or ".join(t.__name__ for t in types)
            raise ConfigError(f"{path}: key '{key}' must be a {wanted}, got {type(value).__name__} {value!r}")
    for key, (_, required) in _TOML_KEYS.items():
        if required and key not in data:
            raise ConfigError(f"{path}: missing required key '{key}'")
    mutable = data["mutable"]
    if not mutable or not all(isinstance(m, str) and m for m in mutable):
        raise ConfigError(f"{path}: key 'mutable' must be a non-empty list of file names")
    for rel in mutable:
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
    direction = data.get("direction", "minimize")
    if direction not in DIRECTIONS:
        raise ConfigError(f"{path}: key 'direction' must be 'minimize' or 'maximize', got {direction!r}")
    for key in ("budget_seconds", "timeout_seconds"):
        if key in data and not 0 < data[key] < math.inf:  # TOML has nan and inf too
            raise ConfigError(f"{path}: key '{key}' must be positive, got {data[key]!r}")
    if not data["run"].strip():
        raise ConfigError(f"{path}: key 'run' is empty")
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
        verify_metric=_verify_metric(path, data.get("verify_metric")),
    )


def _verify_metric(path: Path, value: str | None) -> str | None:
    from harness.integrity.provenance import VERIFIERS

    if value is not None and value not in VERIFIERS:
        raise ConfigError(f"{path}: key 'verify_metric' must be one of {', '.join(VERIFIERS)}, got {value!r}")
    return value


# --- the one entry point -----------------------------------------------------------------


def resolve(
    *,
    tag: str,
    experiment: str | None = None,
    dataset: str | None = None,
    device: str = "auto",
    agent: str = "auto",
    model: str | None = None,
    budget: float | None = None,
    timeout: float | None = None,
    max_experiments: int | None = None,
    max_cost: float | None = None,
    resume: bool = False,
    gpus: Sequence[int] | str | None = None,
    worker: str = "",
    cache_dir: str | None = None,
    judge: str = "noise",
    baseline_runs: int | None = None,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Resolve flags (None = not given) against experiment.toml and the machine."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    reasons: dict[str, str] = {}

    if not TAG_RE.match(tag or ""):
        raise ConfigError(
            f"--tag {tag!r}: use letters, digits, '.', '_' or '-' (at most 64, not starting with '.' or '-')"
        )
    # `not x > 0` rather than `x <= 0`: NaN compares false both ways (a NaN or infinite
    # --timeout would switch the hard kill off).
    if budget is not None and not 0 < budget < math.inf:
        raise ConfigError(f"--budget {budget:g}: must be a positive number of seconds")
    if timeout is not None and not 0 < timeout < math.inf:
        raise ConfigError(f"--timeout {timeout:g}: must be a positive number of seconds")
    if max_experiments is not None and max_experiments < 0:
        raise ConfigError(f"--max-experiments {max_experiments}: must be 0 or more")
    if max_cost is not None and not 0 <= max_cost < math.inf:
        raise ConfigError(f"--max-cost {max_cost:g}: must be 0 or more")
    gpu_list = parse_gpus(gpus) if isinstance(gpus, str) else tuple(gpus or ())

    # Cache root: flag > env > default.
    if cache_dir:
        cache_root, reasons["cache"] = Path(cache_dir).expanduser().resolve(), "--cache-dir"
    elif env.get("AUTORESEARCH_CACHE"):
        cache_root = Path(env["AUTORESEARCH_CACHE"]).expanduser().resolve()
        reasons["cache"] = "AUTORESEARCH_CACHE"
    else:
        cache_root, reasons["cache"] = Path.home() / ".cache" / "autoresearch", "default"

    # Device first: the default experiment depends on it.
    if device == "auto":
        if gpu_list:
            device, reasons["device"] = "cuda", "--gpus given"
        else:
            device, why = detect_device(env)
            reasons["device"] = f"auto: {why}"
    elif device not in DEVICES:
        raise ConfigError(f"--device {device!r}: expected auto, cuda, mlx or cpu")

    if experiment is None:
        experiment = "gpt-mlx" if device == "mlx" else DEFAULT_EXPERIMENT
        reasons["experiment"] = f"default for device {device}"
        known = _known_experiments(cwd)
        if experiment not in known and len(known) == 1:
            experiment = known[0]
            reasons["experiment"] = "the only experiment in experiments/"
    exp_dir, repo_root = find_experiment(experiment, cwd)
    exp = load_experiment(exp_dir)
    if not exp_dir.is_relative_to(repo_root):
        raise RepoError(f"{exp_dir} is not inside the git repository {repo_root}")
    mutable = tuple((exp_dir / m).resolve().relative_to(repo_root).as_posix() for m in exp.mutable)

    profile_name, why = detect_profile(device)
    if why:
        reasons["profile"] = why
    # Budget: flag > experiment.toml > constants profile.
    profile = profile_values(repo_root, profile_name)
    if budget is not None:
        budget_s, reasons["budget"], overridden = float(budget), "--budget", True
    elif exp.budget_seconds is not None:
        budget_s, reasons["budget"], overridden = exp.budget_seconds, "experiment.toml budget_seconds", True
    elif "TIME_BUDGET" in profile:
        budget_s, reasons["budget"] = float(profile["TIME_BUDGET"]), f"constants.py, {profile_name} profile"
        overridden = False
    else:
        budget_s, reasons["budget"], overridden = FALLBACK_TIME_BUDGET, "default (no constants.py)", False
    base_budget = float(profile.get("TIME_BUDGET", FALLBACK_TIME_BUDGET))
    if timeout is not None:
        timeout_s, reasons["timeout"] = float(timeout), "--timeout"
    elif exp.timeout_seconds is not None:
        timeout_s, reasons["timeout"] = exp.timeout_seconds, "experiment.toml timeout_seconds"
    else:
        base_timeout = float(profile.get("TIMEOUT", FALLBACK_TIMEOUT))
        # A budget longer than the profile's scales the hard kill with it, so long runs are not killed.
        timeout_s = base_timeout * max(1.0, budget_s / base_budget)
        reasons["timeout"] = "constants.py TIMEOUT" if "TIMEOUT" in profile else "default"

    # Dataset: flag > experiment.toml > climbmix if prepared > arithmetic.
    if dataset is not None:
        ds, reasons["dataset"] = dataset, "--dataset"
    elif exp.dataset is not None:
        ds, reasons["dataset"] = exp.dataset, "experiment.toml dataset"
    else:
        ds, why = detect_dataset(cache_root)
        reasons["dataset"] = f"auto: {why}"
    if not (ds in ("arithmetic", "climbmix", "none") or (ds.startswith("text:") and len(ds) > 5)):
        raise ConfigError(f"--dataset {ds!r}: expected arithmetic, climbmix or text:PATH")

    # Agent: flag, or auto from the environment.
    if agent == "auto":
        from harness.agents import resolve_auto

        agent, why = resolve_auto(env)
        reasons["agent"] = f"auto: {why}"
    agent = _check_agent(agent, cwd)

    return Settings(
        tag=tag,
        repo_root=repo_root,
        experiment_dir=exp_dir,
        experiment_name=exp.name,
        mutable=mutable,
        run=exp.run,
        metric=exp.metric,
        direction=exp.direction,
        budget=budget_s,
        budget_overridden=overridden,
        timeout=timeout_s,
        device=device,
        profile=profile_name,
        dataset=ds,
        cache_root=cache_root,
        agent=agent,
        model=model,
        max_experiments=max_experiments,
        max_cost=max_cost,
        resume=resume,
        gpus=gpu_list,
        worker=worker,
        reasons=reasons,
        judge=_check_judge(judge, baseline_runs),
        baseline_runs=baseline_runs,
        verify_metric=exp.verify_metric,
    )


def _check_judge(judge: str, baseline_runs: int | None) -> str:
    from harness.night.judge import JUDGES

    if judge not in JUDGES:
        raise ConfigError(f"--judge {judge!r}: expected one of {', '.join(JUDGES)}")
    if baseline_runs is not None and baseline_runs < 1:
        raise ConfigError(f"--baseline-runs must be at least 1, got {baseline_runs}")
    return judge


def _check_agent(agent: str, cwd: Path) -> str:
    from harness.agents import AGENT_NAMES

    if agent.startswith("replay:"):
        raw = agent[len("replay:") :]
        if not raw:
            raise ConfigError("--agent replay:FILE needs a file, e.g. --agent replay:replies.jsonl")
        path = Path(raw).expanduser()
        path = (path if path.is_absolute() else cwd / path).resolve()
        if not path.is_file():
            raise ConfigError(f"--agent replay: file {path} does not exist")
        return f"replay:{path}"
    if agent not in AGENT_NAMES:
        raise ConfigError(f"--agent {agent!r}: expected auto, {', '.join(AGENT_NAMES)} or replay:FILE")
    return agent


def ensure_dataset(settings: Settings) -> str | None:
    """Make sure the dataset is usable: arithmetic is built on the spot, others must be prepared.

    Returns a line to print when something was built, None otherwise. Raises DataError naming
    the `autoresearch prepare` command to run.
    """
    if settings.dataset == "none":
        return None
    try:
        from prepare.datasets import check_ready, prepare_dataset
    except ImportError as exc:
        raise DataError(f"prepare/ cannot be imported ({exc}); reinstall with `pip install -e .`") from exc
    try:
        check_ready(settings.dataset, settings.cache_root)
        return None
    except Exception as exc:  # noqa: BLE001 - prepare's DataError or friends; re-raised below for non-arithmetic
        if settings.dataset != "arithmetic":
            cmd = f"autoresearch prepare --dataset {settings.dataset}"
            if settings.reasons.get("cache") != "default":
                cmd += f" --cache-dir {settings.cache_root}"
            raise DataError(
                f"dataset {settings.dataset} is not ready in {settings.cache_root}: {exc}. Run `{cmd}` first."
            ) from exc
    prepare_dataset("arithmetic", settings.cache_root)
    return f"prepared the arithmetic dataset in {settings.cache_root}"
