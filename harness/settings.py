"""One typed, frozen `Settings` object from the command line, experiment.toml, the environment and the machine.

`OPTIONS` is the one table of what a person can set for `autoresearch run`: each entry names a
Settings field, its command-line flag and/or its `AUTORESEARCH_*` environment variable, how its
text is parsed, its default and its help. The table drives the argparse of `run` (whose `--help`
lists the variables), `resolve()`, `Settings.describe()` and the argv of the `--gpus` workers, so
a new knob is one entry here and one field of `Settings`.

Precedence for every value: command-line flag > experiment.toml > environment variable > the
device profile of constants.py > built-in default. Values that are detected rather than given
(device, dataset, agent, budget, timeout) carry the reason they were chosen in `Settings.reasons`,
as does every value that came from a flag or a variable, and `describe()` prints them all at the
start of a night, so a person reading its log knows why it ran on the CPU with the search agent.

Settings sit below the agents, the night, integrity and review, and import none of them: the
names those accept (`AGENTS`, `JUDGES`, `harness.experiment.VERIFIERS`) are data here, and a test
checks that the registries agree. Nothing here changes anything on disk.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from harness.detect import (
    detect_agent,
    detect_dataset,
    detect_device,
    detect_profile,
    find_experiment,
    find_repo_root,
    known_experiments,
    profile_values,
)
from harness.errors import ConfigError, DataError, RepoError
from harness.experiment import load_experiment

__all__ = ["OPTIONS", "Option", "Settings", "ensure_dataset", "find_repo_root", "resolve"]

DEVICES = ("cuda", "mlx", "cpu")
AGENTS = ("claude", "openai", "search")  # what --agent accepts besides auto and replay:FILE
JUDGES = ("noise", "strict")
DATASETS = ("arithmetic", "climbmix", "none")  # and text:PATH
DEFAULT_EXPERIMENT = "gpt"
# Used only when the repository's constants.py does not say (a bare experiment repo, e.g. a kernel
# benchmark): the training budget, and the seconds a run gets beyond it for start-up and evaluation.
FALLBACK_TIME_BUDGET = 300.0
FALLBACK_TIMEOUT_ALLOWANCE = 300.0
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

T = TypeVar("T")


# --- parsers: text from a flag or a variable -> a typed value, or ValueError(why) -------------


def _text(raw: str) -> str:
    return raw


def _tag(raw: str) -> str:
    if not TAG_RE.match(raw):
        raise ValueError("use letters, digits, '.', '_' or '-' (at most 64, not starting with '.' or '-')")
    return raw


def _float(raw: str, ok: Callable[[float], bool], why: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(why) from None
    if not ok(value):  # NaN fails every comparison: a NaN timeout would switch the hard kill off
        raise ValueError(why)
    return value


def _seconds(raw: str) -> float:
    return _float(raw, lambda v: 0 < v < math.inf, "must be a positive number of seconds")


def _dollars(raw: str) -> float:
    return _float(raw, lambda v: 0 <= v < math.inf, "must be a number of US dollars, 0 or more")


def _whole(low: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            value = low - 1
        if value < low:
            raise ValueError(f"must be a whole number, {low} or more")
        return value

    return parse


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def _dataset(raw: str) -> str:
    if raw not in DATASETS and not (raw.startswith("text:") and len(raw) > 5):
        raise ValueError("expected arithmetic, climbmix or text:PATH")
    return raw


def _gpus(raw: str) -> tuple[int, ...]:
    try:
        gpus = tuple(int(p) for p in raw.split(",") if p.strip() != "")
    except ValueError:
        gpus = ()
    if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
        raise ValueError("expected distinct GPU indices separated by commas, e.g. --gpus 0,1")
    return gpus


def _depth(raw: str) -> int | None:
    if raw.lower() == "auto":
        return None
    try:
        return _whole(0)(raw)
    except ValueError:
        raise ValueError("expected 'auto' or a whole number (0 turns pipelining off)") from None


def _prices(raw: str) -> dict[str, tuple[float, float]]:
    """Model (prefix) -> (input, output) USD per million tokens, from inline JSON or a .json/.toml file."""
    data: Any
    if raw.startswith("{"):
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not valid JSON ({exc}); example: '{{\"model\": [3, 15]}}'") from None
    else:
        path = Path(raw).expanduser()
        if not path.is_file():
            raise ValueError("no such file; give inline JSON or a .json/.toml file")
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
        except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"file {path} does not parse: {exc}") from None
        if isinstance(data, dict) and isinstance(data.get("prices"), dict):
            data = data["prices"]
    if not isinstance(data, dict):
        raise ValueError("must map model names to [input, output] USD per million tokens")
    out: dict[str, tuple[float, float]] = {}
    for model, value in data.items():
        pair = (value.get("input"), value.get("output")) if isinstance(value, dict) else value
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf for v in pair
        ):
            raise ValueError(
                f"price of {model!r} must be [input, output] USD per million tokens, got {value!r}"
            )
        out[str(model)] = (float(pair[0]), float(pair[1]))
    return out


# --- the table ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Option(Generic[T]):
    """One thing a person can set: a Settings field, given by a flag and/or an environment variable."""

    field: str  # the Settings attribute it sets (and, without a flag, the key of `resolve`)
    parse: Callable[[str], T]  # text -> value; ValueError(why) for bad text
    help: str
    flag: str | None = None  # "--budget"; None: only the environment sets it
    env: str | None = None  # "AUTORESEARCH_CACHE"; read when the flag is not given
    metavar: str | None = None
    choices: tuple[str, ...] = ()
    switch: bool = False  # a flag without a value (--resume)
    required: bool = False
    hidden: bool = False  # internal (the worker's own flag): not in --help or describe()
    show: Callable[[Any], str] = str  # the value as describe() prints it; "" leaves the line out

    @property
    def dest(self) -> str:
        """The argparse destination and the keyword of `resolve` for this option."""
        return self.flag[2:].replace("-", "_") if self.flag else self.field

    def read(self, given: Mapping[str, object], env: Mapping[str, str]) -> tuple[T | None, str]:
        """(value, where it came from): the flag, else the variable, else (None, "")."""
        raw, source = given.get(self.dest), self.flag or ""
        if raw is None and self.env and env.get(self.env, "").strip():
            raw, source = env[self.env].strip(), self.env
        if raw is None or raw is False:
            return None, ""
        if raw is True:  # a switch given on the command line
            return self.parse(""), source
        text = str(raw)
        where = f"{self.flag} {text!r}" if source == self.flag else f"{self.env}={text!r}"
        if self.choices and text not in self.choices:
            raise ConfigError(f"{where}: expected one of {', '.join(self.choices)}")
        try:
            return self.parse(text), source
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _seconds_shown(value: float) -> str:
    return f"{value:g} s"


OPTIONS: tuple[Option[Any], ...] = (
    Option("tag", _tag, "name of this night: branch autoresearch/<tag>, results/<tag>.tsv", flag="--tag",
           required=True),
    Option("experiment", _text, "a name under experiments/ or a path to a folder with experiment.toml",
           flag="--experiment"),
    Option("dataset", _dataset, "arithmetic, climbmix or text:PATH (default: climbmix if prepared)",
           flag="--dataset"),
    Option("device", _text, "where runs train (default: auto)", flag="--device", choices=("auto", *DEVICES)),
    Option("agent", _text, f"auto, {', '.join(AGENTS)} or replay:FILE (default: auto)", flag="--agent"),
    Option("model", _text, "the LLM to ask (default: the agent's own)", flag="--model",
           show=lambda v: v or "(agent default)"),
    Option("budget", _seconds, "training seconds per run (default: constants.py; recorded)", flag="--budget",
           metavar="SECONDS", show=_seconds_shown),
    Option("timeout", _seconds, "hard kill of a run after this long (default: the budget plus constants.py's "
           "TIMEOUT_ALLOWANCE); must be above the budget", flag="--timeout", metavar="SECONDS",
           show=_seconds_shown),
    Option("max_experiments", _whole(0), "stop after N attempts past the baseline", flag="--max-experiments",
           metavar="N", show=lambda v: "unlimited" if v is None else str(v)),
    Option("max_cost", _dollars, "stop once the LLM calls cost this much", flag="--max-cost", metavar="USD",
           show=lambda v: "unlimited" if v is None else f"${v:g}"),
    Option("resume", lambda _: True, "continue an existing tag", flag="--resume", switch=True),
    Option("gpus", _gpus, "one worker per GPU, e.g. 0,1,2,3 (tags <tag>-gpu<i>)", flag="--gpus",
           metavar="LIST", show=lambda v: ",".join(map(str, v))),
    Option("cache_root", _path, "cache root (default: ~/.cache/autoresearch)", flag="--cache-dir",
           env="AUTORESEARCH_CACHE", metavar="DIR"),
    Option("judge", _text, "noise: keep only gains that stand out from run-to-run noise (default); "
           "strict: any gain", flag="--judge", choices=JUDGES),
    Option("baseline_runs", _whole(1), "runs of the baseline (default: noise 3, strict 1)",
           flag="--baseline-runs", metavar="N", show=lambda v: "the judge's default" if v is None else str(v)),
    Option("worker", _text, "set by the --gpus supervisor for its workers", flag="--worker",
           hidden=True),
    # The LLM agents' knobs: the defaults suit a night; tests and unusual providers change them.
    Option("llm_timeout", _seconds, "seconds one LLM call may take", env="AUTORESEARCH_LLM_TIMEOUT",
           show=_seconds_shown),
    Option("llm_max_tokens", _whole(1), "the longest reply asked of the LLM, in tokens",
           env="AUTORESEARCH_LLM_MAX_TOKENS", ),
    Option("retry_base", _seconds, "first wait after a failed LLM call; doubles per retry",
           env="AUTORESEARCH_RETRY_BASE", show=_seconds_shown),
    Option("retry_cap", _seconds, "longest wait between LLM retries (the probe interval in an outage)",
           env="AUTORESEARCH_RETRY_CAP", show=_seconds_shown),
    Option("retry_pause_after", _seconds, "seconds of failing LLM calls before the night shows an outage",
           env="AUTORESEARCH_RETRY_PAUSE_AFTER", show=_seconds_shown),
    Option("retry_max_attempts", _whole(1), "give an LLM call up after N attempts",
           env="AUTORESEARCH_RETRY_MAX_ATTEMPTS", show=lambda v: "unlimited" if v is None else str(v)),
    Option("prices", _prices, "LLM prices, model -> [input, output] USD per million tokens, as inline JSON "
           "or a .json/.toml file; they override the built-in table", env="AUTORESEARCH_PRICES",
           show=lambda v: "built-in table" + (f", overridden for {', '.join(v)}" if v else "")),
    Option("pipeline_depth", _depth, "LLM proposals in flight while a run goes on: auto or N (0: off)",
           env="AUTORESEARCH_PIPELINE_DEPTH", show=lambda v: "auto" if v is None else str(v)),
)  # fmt: skip


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
    resume: bool = False
    gpus: tuple[int, ...] = ()
    worker: str = ""
    judge: str = "noise"  # "noise" (NoiseAwareJudge) or "strict" (StrictJudge)
    baseline_runs: int | None = None  # None: the judge's default (noise 3, strict 1)
    verify_metric: str | None = None  # experiment.toml verify_metric (metric provenance)
    llm_timeout: float = 600.0
    llm_max_tokens: int = 16_000
    retry_base: float = 2.0
    retry_cap: float = 300.0
    retry_pause_after: float = 180.0
    retry_max_attempts: int | None = None  # None: retry retryable errors forever
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)  # over the built-in table
    pipeline_depth: int | None = None  # None: adapt to the measured times; 0: no pipelining
    reasons: Mapping[str, str] = field(default_factory=dict)  # field -> why it has its value

    @property
    def experiment(self) -> str:
        return f"{self.experiment_name} ({self.experiment_rel})"

    @property
    def experiment_rel(self) -> str:
        """The experiment folder relative to the repo root (the same inside the tag's worktree)."""
        return self.experiment_dir.relative_to(self.repo_root).as_posix()

    @property
    def results_dir(self) -> Path:
        return self.repo_root / "results"

    @property
    def tsv_path(self) -> Path:
        return self.results_dir / f"{self.tag}.tsv"

    @property
    def tag_dir(self) -> Path:
        return self.results_dir / self.tag

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
                    ("verify_metric", self.verify_metric or "off"),
                ]
            elif opt.field == "device":
                shown.append(("profile", self.profile))
        lines = []
        for key, value in shown:
            if value:
                why = self.reasons.get(key)
                lines.append(f"{key + ':':<20} {value}" + (f"  ({why})" if why else ""))
        return lines


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
    for opt in OPTIONS:  # what was not given keeps the default of its Settings field
        value, source = opt.read(given, env)
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
    exp_dir, repo_root = find_experiment(spec, cwd)
    exp = load_experiment(exp_dir)
    if not exp_dir.is_relative_to(repo_root):
        raise RepoError(f"{exp_dir} is not inside the git repository {repo_root}")

    budget, timeout = _budget_and_timeout(
        values.get("budget"), values.get("timeout"), exp.budget_seconds, exp.timeout_seconds,
        profile_values(repo_root, profile), profile, reasons,
    )  # fmt: skip

    # Dataset: flag > experiment.toml > climbmix if prepared > arithmetic.
    dataset = values.get("dataset")
    if dataset is None and exp.dataset is not None:
        dataset, reasons["dataset"] = exp.dataset, "experiment.toml dataset"
        try:
            _dataset(dataset)
        except ValueError as exc:
            raise ConfigError(f"{exp_dir / 'experiment.toml'}: key 'dataset' {dataset!r}: {exc}") from None
    elif dataset is None:
        dataset, why = detect_dataset(values["cache_root"])
        reasons["dataset"] = f"auto: {why}"

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
        verify_metric=exp.verify_metric,
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
    """Budget: flag > experiment.toml > constants.py > default. Timeout: flag > experiment.toml >
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
