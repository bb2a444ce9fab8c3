"""One typed, frozen `Settings` object from the command line, experiment.toml, the environment and the machine.

`resolve()` takes what was given for the entries of `harness.options.OPTIONS` (flags as text;
the config file `autoresearch.toml` and the AUTORESEARCH_* variables are read here) and works
out the rest. Precedence for every value: command-line flag > experiment.toml > config file >
environment variable > the device profile of constants.py > built-in default (the default of
the Settings field). Values that are detected
rather than given (device, dataset, agent, budget, timeout) carry the reason they were chosen in
`Settings.reasons`, as does every value that came from a flag or a variable, and `describe()`
prints them all at the start of a night, so a person reading its log knows why it ran on the
CPU with the search agent.

experiment.toml follows the template in ARCHITECTURE.md; an unknown key or a value of the
wrong type raises ConfigError naming the key.

The kill timeout follows the budget: the budget plus constants.py's TIMEOUT_ALLOWANCE (start-up,
compilation, evaluation) unless `--timeout` or `timeout_seconds` sets it, and a timeout not
above the budget is refused. Settings sit below the agents, the night, integrity and review, and
import none of them. Nothing here changes anything on disk.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.detect import (
    check_device,
    detect_agent,
    detect_dataset,
    detect_device,
    detect_profile,
    find_experiment,
    known_experiments,
    profile_values,
)
from harness.errors import ConfigError, DataError, RepoError
from harness.experiment import load_experiment
from harness.options import AGENTS, OPTIONS, check_dataset, load_config
from harness.store.git import Repo
from harness.store.paths import TagPaths

__all__ = ["Settings", "default_of", "ensure_dataset", "resolve"]

DEFAULT_EXPERIMENT = "gpt"
# Used only when the repository's constants.py does not say (a bare experiment repo, e.g. a kernel
# benchmark): the training budget, and the seconds a run gets beyond it for start-up and evaluation.
FALLBACK_TIME_BUDGET = 300.0
FALLBACK_TIMEOUT_ALLOWANCE = 300.0
# The harness's own budget bounds (constants.py's BUDGET_TOLERANCE, WARMUP_ALLOWANCE, STARTUP_MAX),
# for repositories whose constants.py does not say.
FALLBACK_BUDGET_TOLERANCE = 0.02
FALLBACK_WARMUP_ALLOWANCE = 60.0
FALLBACK_STARTUP_MAX = 120.0


# --- the settings ------------------------------------------------------------------------


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
    budget: float  # training seconds (AUTORESEARCH_TIME_BUDGET of the run)
    timeout: float  # hard kill after this many wall seconds; always above the budget
    device: str
    profile: str  # the constants.py profile the run gets as AUTORESEARCH_DEVICE (usually == device)
    dataset: str  # "arithmetic", "climbmix", "text:PATH" or "none"
    cache_root: Path
    agent: str  # "claude", "openai", "search" or "replay:/abs/path"
    model: str | None = None
    max_experiments: int | None = None
    max_cost: float | None = None
    until: float | None = None  # epoch seconds: no run starts that cannot finish by then
    plateau: int | None = None  # stop after this many attempts in a row without a keep
    reflect_every: int = 10  # attempts between reflections on the notes (LLM agents); 0: never
    resume: bool = False
    gpus: tuple[int, ...] = ()
    ray: str = ""  # --ray ADDRESS|auto: the driver of a night on a Ray cluster
    worker: str = ""  # a worker of a family (--gpus, --ray): its name, e.g. gpu0
    family: str = ""  # the family tag a worker belongs to (its shared ledger: harness.store.family)
    coordinator: str = ""  # a Ray worker: the cluster address of the family's coordinator actor
    judge: str = "noise"  # "noise" (NoiseAwareJudge) or "strict" (StrictJudge)
    baseline_runs: int | None = None  # None: the judge's default (noise 3, strict 1)
    prune: float = 0.05  # --prune: abort a candidate this far (relative loss) behind the best; 0 off
    evaluator: str | None = None  # experiment.toml [integrity] evaluator: who computes the metric
    checks: str = "permissive"  # experiment.toml [integrity] checks: "strict" or "permissive"
    sandbox: str = "auto"  # --sandbox: auto | on | off (commands.run settles auto to on or off)
    network: bool = False  # experiment.toml [sandbox] network
    read: tuple[Path, ...] = ()  # experiment.toml [sandbox] read: extra read-only paths
    env_names: tuple[str, ...] = ()  # experiment.toml [sandbox] env: extra variables a run gets
    warmup: str = "auto"  # --warmup: a discarded warm-up run before the baseline (auto: cuda, mlx)
    budget_tolerance: float = FALLBACK_BUDGET_TOLERANCE  # share of the budget a run may overshoot
    warmup_allowance: float = FALLBACK_WARMUP_ALLOWANCE  # seconds of untimed warm-up inside training
    startup_max: float = FALLBACK_STARTUP_MAX  # seconds from the start to the first training batch
    llm_timeout: float = 600.0
    llm_preflight: float = 40.0
    llm_max_tokens: int = 16_000
    retry_base: float = 2.0
    retry_cap: float = 300.0
    retry_pause_after: float = 180.0
    retry_max_attempts: int | None = None  # None: retry retryable errors forever
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # over the built-in table
    pipeline_depth: int | None = None  # None: adapt to the measured times; 0: no pipelining
    sweep_trials: int = 6  # trials of a sweep request that names no Trials
    reasons: Mapping[str, str] = field(default_factory=dict)  # field -> why it has its value

    @property
    def experiment(self) -> str:
        """The experiment as `describe()` shows it: its name and its folder."""
        return f"{self.experiment_name} ({self.experiment_rel})"

    @property
    def experiment_rel(self) -> str:
        """The experiment folder relative to the repo root (the same inside the tag's worktree)."""
        return self.experiment_dir.relative_to(self.repo_root).as_posix()

    @property
    def paths(self) -> TagPaths:
        """Where this tag's files live (results, logs, journal, lock, queue, worktree)."""
        return TagPaths(self.repo_root, self.tag)

    @property
    def budget_bounds(self) -> str:
        """The harness's budget check, as describe() shows it."""
        return (
            f"training <= {self.budget:g} s + {100 * self.budget_tolerance:g}% + {self.warmup_allowance:g} s "
            f"warm-up; first batch within {self.startup_max:g} s"
        )

    @property
    def warmup_run(self) -> bool:
        """Whether the baseline is preceded by a discarded warm-up run."""
        return self.warmup == "on" or (self.warmup == "auto" and self.profile in ("cuda", "mlx"))

    def describe(self) -> list[str]:
        """Every resolved value, one `key: value (why)` line each, for the start of a night."""
        shown: list[tuple[str, str]] = []
        for opt in OPTIONS:
            if not opt.hidden:
                shown.append((opt.field, opt.show(getattr(self, opt.field))))
            if opt.field == "experiment":  # what experiment.toml said, next to it
                shown += [
                    ("repo", str(self.repo_root)),
                    ("mutable", ", ".join(self.mutable)),
                    ("run", self.run),
                    ("metric", f"{self.metric} ({self.direction})"),
                    ("evaluator", self.evaluator or "off: the metric the run prints"),
                    ("checks", self.checks),
                    ("network", "on" if self.network else "off"),
                    ("read", ", ".join(map(str, self.read))),
                    ("env_names", ", ".join(self.env_names)),
                ]
            elif opt.field == "device":
                shown.append(("profile", self.profile))
            elif opt.field == "budget":
                shown.append(("budget_bounds", self.budget_bounds))
        lines = []
        for key, value in shown:
            if value:
                why = self.reasons.get(key)
                lines.append(f"{key + ':':<20} {value}" + (f"  ({why})" if why else ""))
        return lines

    def given_flags(self) -> list[str]:
        """The flags of this night's command line (and their values), as a person would type them."""
        argv: list[str] = []
        for opt in OPTIONS:
            if opt.flag is None or opt.hidden or self.reasons.get(opt.field) != opt.flag:
                continue
            value = getattr(self, opt.field)
            if opt.field == "experiment":
                value = self.experiment_rel
            if value is True:
                argv.append(opt.flag)
            elif isinstance(value, tuple):
                argv += [opt.flag, ",".join(map(str, value))]
            else:
                argv += [opt.flag, f"{value:g}" if isinstance(value, float) else str(value)]
        return argv

    def command(self, *extra: str) -> str:
        """This night's `autoresearch run` command with `extra` flags, e.g. `command("--resume")`."""
        argv = ["autoresearch", "run", *self.given_flags()]
        if "--tag" not in argv:
            argv += ["--tag", self.tag]
        return shlex.join([*argv, *(e for e in extra if e not in argv)])


def default_of(name: str) -> Any:
    """The default of the Settings field `name` (what a night gets when nothing sets it)."""
    for f in dataclasses.fields(Settings):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            if f.default is not dataclasses.MISSING:
                return f.default
    raise KeyError(f"Settings has no field {name!r} with a default")


# --- the one entry point -----------------------------------------------------------------


def resolve(*, cwd: Path | None = None, env: Mapping[str, str] | None = None, **given: object) -> Settings:
    """Resolve what was given (`OPTIONS` by their `dest`, as text; None = not given) against
    experiment.toml, the environment and the machine. Bad input is a ConfigError naming it."""
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    known = {opt.dest: opt for opt in OPTIONS}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"resolve() got unknown settings: {', '.join(unknown)}")
    values: dict[str, Any] = {}
    reasons: dict[str, str] = {}
    try:
        config = load_config(Repo.find(cwd).root)
    except RepoError:
        config = load_config(None)
    for opt in OPTIONS:  # what was not given keeps the default of its Settings field
        value, source = opt.read(given, env, config)
        if value is not None:
            values[opt.field], reasons[opt.field] = value, source
    if "tag" not in values:
        raise ConfigError("--tag is required: the name of this night")
    if "cache_root" not in values:
        values["cache_root"], reasons["cache_root"] = Path.home() / ".cache" / "autoresearch", "default"

    # Device first: the default experiment depends on it.
    device = values.get("device", "auto")
    if device == "auto":
        if values.get("gpus"):
            device, reasons["device"] = "cuda", "--gpus given"
        else:
            device, why = detect_device(env)
            reasons["device"] = f"auto: {why}"
    elif not values.get("gpus"):  # --gpus workers each probe their own GPU
        check_device(device, env)
    profile, why = detect_profile(device)
    if why:
        reasons["profile"] = why

    spec = values.pop("experiment", None)
    if spec is None:
        spec = "gpt-mlx" if device == "mlx" else DEFAULT_EXPERIMENT
        reasons["experiment"] = f"default for device {device}"
        names = known_experiments(cwd)
        if spec not in names and len(names) == 1:
            spec, reasons["experiment"] = names[0], "the only experiment in experiments/"
        elif not names and _root_experiment(cwd) is not None:
            spec, reasons["experiment"] = str(_root_experiment(cwd)), "experiment.toml at the repository root"
    exp_dir, repo_root = find_experiment(spec, cwd)
    exp = load_experiment(exp_dir)
    if not exp_dir.is_relative_to(repo_root):
        raise RepoError(f"{exp_dir} is not inside the git repository {repo_root}")

    # experiment.toml is more specific than a person's config file: only a flag overrides it.
    for name, toml_value in (("budget", exp.budget_seconds), ("timeout", exp.timeout_seconds),
                             ("dataset", exp.dataset)):  # fmt: skip
        if toml_value is not None and name in values and reasons[name] != f"--{name}":
            del values[name], reasons[name]
    constants = profile_values(repo_root, profile)
    budget, timeout = _budget_and_timeout(
        values.get("budget"), values.get("timeout"), exp.budget_seconds, exp.timeout_seconds,
        constants, profile, reasons,
    )  # fmt: skip
    for field_name, key in (
        ("budget_tolerance", "BUDGET_TOLERANCE"),
        ("warmup_allowance", "WARMUP_ALLOWANCE"),
        ("startup_max", "STARTUP_MAX"),
    ):
        if isinstance(constants.get(key), int | float):
            values[field_name] = float(constants[key])
    reasons["budget_bounds"] = (
        f"constants.py, {profile} profile" if "WARMUP_ALLOWANCE" in constants else "default (no constants.py)"
    )

    # Dataset: flag > experiment.toml > config file > climbmix if prepared > arithmetic.
    dataset = values.get("dataset")
    if dataset is None and exp.dataset is not None:
        dataset, reasons["dataset"] = exp.dataset, "experiment.toml dataset"
        try:
            check_dataset(dataset)
        except ValueError as exc:
            raise ConfigError(f"{exp_dir / 'experiment.toml'}: key 'dataset' {dataset!r}: {exc}") from None
    elif dataset is None:
        dataset, why = detect_dataset(values["cache_root"])
        reasons["dataset"] = f"auto: {why}"

    runs = constants.get("BASELINE_RUNS")
    if "baseline_runs" not in values and isinstance(runs, int) and values.get("judge", "noise") == "noise":
        # The cpu profile runs its baseline once (a first result sooner); the noise judge then
        # measures its sigma by running an apparently better candidate a second time.
        values["baseline_runs"], reasons["baseline_runs"] = runs, f"constants.py, {profile} profile"
    agent = values.get("agent", "auto")
    if agent == "auto":
        agent, why = detect_agent(env)
        reasons["agent"] = f"auto: {why}"
    values.update(
        repo_root=repo_root,
        experiment_dir=exp_dir,
        experiment_name=exp.name,
        mutable=tuple((exp_dir / m).resolve().relative_to(repo_root).as_posix() for m in exp.mutable),
        run=exp.run,
        metric=exp.metric,
        direction=exp.direction,
        budget=budget,
        timeout=timeout,
        device=device,
        profile=profile,
        dataset=dataset,
        agent=_check_agent(agent, cwd),
        evaluator=exp.evaluator,
        checks=exp.checks,
        network=exp.network,
        read=exp.read,
        env_names=exp.env,
        reasons=reasons,
    )
    return Settings(**values)


def _budget_and_timeout(
    budget: float | None,
    timeout: float | None,
    toml_budget: float | None,
    toml_timeout: float | None,
    profile: Mapping[str, Any],
    profile_name: str,
    reasons: dict[str, str],
) -> tuple[float, float]:
    """Budget: flag or config file > experiment.toml > constants.py > default (the caller drops a
    config file's value where experiment.toml has one). Timeout: flag > experiment.toml >
    the budget plus the profile's allowance for start-up and evaluation, so it follows the budget."""
    if budget is None and toml_budget is not None:
        budget, reasons["budget"] = toml_budget, "experiment.toml budget_seconds"
    elif budget is None and "TIME_BUDGET" in profile:
        budget, reasons["budget"] = float(profile["TIME_BUDGET"]), f"constants.py, {profile_name} profile"
    elif budget is None:
        budget, reasons["budget"] = FALLBACK_TIME_BUDGET, "default (no constants.py)"
    if timeout is None and toml_timeout is not None:
        timeout, reasons["timeout"] = toml_timeout, "experiment.toml timeout_seconds"
    elif timeout is None:
        allowance = float(profile.get("TIMEOUT_ALLOWANCE", FALLBACK_TIMEOUT_ALLOWANCE))
        timeout = budget + allowance
        where = "constants.py TIMEOUT_ALLOWANCE" if "TIMEOUT_ALLOWANCE" in profile else "default allowance"
        reasons["timeout"] = f"budget + {allowance:g} s for start-up and evaluation, {where}"
    if not timeout > budget:
        raise ConfigError(
            f"the kill timeout {timeout:g} s ({reasons['timeout']}) is not above the training budget "
            f"{budget:g} s ({reasons['budget']}): a run needs time for start-up and evaluation on top; "
            "raise the timeout or lower the budget"
        )
    return budget, timeout


def _root_experiment(cwd: Path) -> Path | None:
    """The repository root when it is itself the experiment (a project of one's own)."""
    try:
        root = Repo.find(cwd).root
    except RepoError:
        return None
    return root if (root / "experiment.toml").is_file() else None


def _check_agent(agent: str, cwd: Path) -> str:
    if agent.startswith("replay:"):
        raw = agent[len("replay:") :]
        if not raw:
            raise ConfigError("--agent replay:FILE needs a file, e.g. --agent replay:replies.jsonl")
        path = Path(raw).expanduser()
        path = (path if path.is_absolute() else cwd / path).resolve()
        if not path.is_file():
            raise ConfigError(f"--agent replay: file {path} does not exist")
        return f"replay:{path}"
    if agent not in AGENTS:
        raise ConfigError(f"--agent {agent!r}: expected auto, {', '.join(AGENTS)} or replay:FILE")
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
            if settings.reasons.get("cache_root") != "default":
                cmd += f" --cache-dir {settings.cache_root}"
            raise DataError(
                f"dataset {settings.dataset} is not ready in {settings.cache_root}: {exc}. Run `{cmd}` first."
            ) from exc
    prepare_dataset("arithmetic", settings.cache_root)
    return f"prepared the arithmetic dataset in {settings.cache_root}"


def validation_files(settings: Settings) -> tuple[Path, ...]:
    """The dataset's validation shard(s): what a train run must not see when an evaluator computes
    the metric. Empty when there is no dataset or it is not prepared (the night checks that first)."""
    if settings.dataset == "none":
        return ()
    from prepare.datasets import check_ready

    try:
        return (check_ready(settings.dataset, settings.cache_root).val_file,)
    except Exception:  # noqa: BLE001 - prepare's DataError: ensure_dataset reports it at start
        return ()
