"""What a person can set for `autoresearch run`: the one table of flags and AUTORESEARCH_* variables.

Each `Option` names a `harness.settings.Settings` field, its command-line flag and/or its
environment variable, how its text is parsed (a ValueError says why text is bad; `Option.read`
turns it into a ConfigError naming the flag or variable), its help and how `describe()` shows it.
`OPTIONS` drives the argparse of `run` (whose `--help` lists the variables), `resolve()`,
`Settings.describe()` and the argv of the `--gpus` workers, so a new knob is one entry here and
one field of `Settings`; its default is that field's default.

A person's defaults (agent, model, max cost, judge, the knobs) can live in a config file,
`autoresearch.toml` at the repository root or in the user's config folder (`config_files`);
its keys are the flags without their leading dashes (`max-cost = 20`) and the variables without their prefix
(`llm-timeout = 300`). Precedence: flag > experiment.toml > config file > variable > default.

The names other layers accept are data here (`AGENTS`, `JUDGES`), so settings need not import
the agents or the night to check them; a test checks that their registries agree.
"""

from __future__ import annotations

import datetime
import json
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

import platformdirs

from harness.errors import ConfigError

DEVICES = ("cuda", "mlx", "cpu")
AGENTS = ("claude", "openai", "search")  # what --agent accepts besides auto and replay:FILE
JUDGES = ("noise", "strict")
SANDBOX_MODES = ("auto", "on", "off")
DATASETS = ("arithmetic", "climbmix", "none")  # and text:PATH
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
T = TypeVar("T")
CONFIG_NAME = "autoresearch.toml"


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


def _fraction(raw: str) -> float:
    return _float(raw, lambda v: 0 <= v < 1, "must be a fraction from 0 (off) to below 1")


def _path(raw: str) -> Path:
    return Path(raw).expanduser().resolve()


def check_dataset(raw: str) -> str:
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


def _clock(raw: str) -> float:
    """HH:MM -> the epoch seconds of its next occurrence (today, or tomorrow if it has passed)."""
    # Seconds are allowed (and ignored) for a config file's TOML local time, `until = 06:30:00`.
    match = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)(:[0-5]\d)?", raw.strip())
    if match is None:
        raise ValueError("expected a local time HH:MM, e.g. 06:30")
    now = datetime.datetime.now().astimezone()
    at = now.replace(hour=int(match.group(1)), minute=int(match.group(2)), second=0, microsecond=0)
    if at <= now:
        at += datetime.timedelta(days=1)
    return at.timestamp()


def _until_shown(value: float | None) -> str:
    if value is None:
        return ""
    at = datetime.datetime.fromtimestamp(value).astimezone()
    hours = (value - datetime.datetime.now().timestamp()) / 3600
    return f"{at:%Y-%m-%d %H:%M %Z} (in {hours:.1f} h)"


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

    @property
    def key(self) -> str | None:
        """Its key in a config file (`max-cost`, `llm-timeout`); None for what only a flag sets."""
        if self.switch or self.required or self.hidden:
            return None  # --tag, --resume and the worker's flag belong to one command line
        if self.flag:
            return self.flag[2:]
        return self.env.removeprefix("AUTORESEARCH_").lower().replace("_", "-") if self.env else None

    def read(
        self, given: Mapping[str, object], env: Mapping[str, str], config: Config | None = None
    ) -> tuple[T | None, str]:
        """(value, where it came from): the flag, else the config file, else the variable, else (None, "")."""
        raw, source = given.get(self.dest), self.flag or ""
        key = self.key
        if raw is None and config is not None and key is not None and key in config.values:
            raw, source = config.values[key], str(config.source[key])
            if isinstance(raw, dict):  # a TOML table (prices) reads like the inline JSON of the variable
                raw = json.dumps(raw)
        if raw is None and self.env and env.get(self.env, "").strip():
            raw, source = env[self.env].strip(), self.env
        if raw is None or raw is False:
            return None, ""
        if raw is True:  # a switch given on the command line
            return self.parse(""), source
        text = str(raw)
        if source == self.flag:
            where = f"{self.flag} {text!r}"
        elif source == self.env:
            where = f"{self.env}={text!r}"
        else:
            where = f"{source}: {self.key} = {text!r}"
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
    Option("dataset", check_dataset, "arithmetic, climbmix or text:PATH (default: climbmix if prepared)",
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
    Option("until", _clock, "stop before a run that cannot finish by this local time (HH:MM), judged by the "
           "measured duration of the runs", flag="--until", metavar="HH:MM", show=_until_shown),
    Option("plateau", _whole(1), "stop after N attempts in a row without a keep", flag="--plateau",
           metavar="N", show=lambda v: "off" if v is None else f"{v} attempts without a keep"),
    Option("reflect_every", _whole(0), "every N attempts the LLM rewrites results/<tag>/notes.md from the "
           "history (0: never)", flag="--reflect-every", env="AUTORESEARCH_REFLECT_EVERY", metavar="N",
           show=lambda v: "off" if v == 0 else f"every {v} attempts (LLM agents)"),
    Option("resume", lambda _: True, "continue an existing tag", flag="--resume", switch=True),
    Option("gpus", _gpus, "one worker per GPU, e.g. 0,1,2,3 (tags <tag>-gpu<i>)", flag="--gpus",
           metavar="LIST", show=lambda v: ",".join(map(str, v))),
    Option("cache_root", _path, "cache root (default: ~/.cache/autoresearch)", flag="--cache-dir",
           env="AUTORESEARCH_CACHE", metavar="DIR"),
    Option("judge", _text, "noise: keep only gains that stand out from run-to-run noise (default); "
           "strict: any gain", flag="--judge", choices=JUDGES),
    Option("baseline_runs", _whole(1), "runs of the baseline (default: noise 3, or the profile's BASELINE_RUNS, e.g. 1 on cpu; strict 1)",
           flag="--baseline-runs", metavar="N", show=lambda v: "the judge's default" if v is None else str(v)),
    Option("prune", _fraction, "abort a candidate's run once its loss is this fraction behind the best's at "
           "the same budget share (a discard, reason pruned; 0: never; default 0.05)", flag="--prune",
           env="AUTORESEARCH_PRUNE", metavar="FRACTION", show=lambda v: "off" if v == 0 else f"{v:g}"),
    Option("warmup", _text, "a discarded warm-up run before the baseline, so no noise sample is a cold "
           "run (default auto: on for cuda and mlx, off for cpu)", flag="--warmup", env="AUTORESEARCH_WARMUP",
           choices=SANDBOX_MODES),
    Option("sandbox", _text, "run each experiment in a bubblewrap sandbox: auto (when it works here), on "
           "(refuse to start without it), off (default: auto)", flag="--sandbox", env="AUTORESEARCH_SANDBOX",
           choices=SANDBOX_MODES),
    Option("ray", _text, "one worker per GPU of the Ray cluster at ADDRESS (auto: the cluster this host "
           "belongs to); code moves through the git remote origin", flag="--ray", metavar="ADDRESS|auto"),
    Option("worker", _text, "set by the --gpus or --ray driver for its workers", flag="--worker", hidden=True),
    Option("family", _text, "set by the --gpus or --ray driver: the tag whose shared ledger the worker joins",
           flag="--family", hidden=True),
    Option("coordinator", _text, "set by the --ray driver: the Ray cluster whose coordinator actor holds the "
           "family's ledger (empty: the family's files, --gpus)", flag="--coordinator", hidden=True),
    # The LLM agents' knobs: the defaults suit a night; tests and unusual providers change them.
    Option("llm_timeout", _seconds, "seconds one LLM call may take", env="AUTORESEARCH_LLM_TIMEOUT",
           show=_seconds_shown),
    Option("llm_preflight", _seconds, "seconds the start waits for an LLM endpoint that does not answer "
           "before it gives up (exit 2)", env="AUTORESEARCH_LLM_PREFLIGHT", show=_seconds_shown),
    Option("llm_max_tokens", _whole(1), "the longest reply asked of the LLM, in tokens",
           env="AUTORESEARCH_LLM_MAX_TOKENS"),
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
    Option("sweep_trials", _whole(1), "runs of a sweep request that names no Trials",
           env="AUTORESEARCH_SWEEP_TRIALS"),
    Option("pipeline_depth", _depth, "LLM proposals in flight while a run goes on: auto or N (0: off)",
           env="AUTORESEARCH_PIPELINE_DEPTH", show=lambda v: "auto" if v is None else str(v)),
)  # fmt: skip


# --- the config file ---------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """The keys of the config files that apply, merged (the repository's over the user's)."""

    values: Mapping[str, object]
    source: Mapping[str, Path]  # key -> the file it came from


def config_files(repo_root: Path | None) -> list[Path]:
    """Where config files are looked for, weakest first: the user's config folder, then the repository."""
    places = [Path(platformdirs.user_config_dir("autoresearch")) / CONFIG_NAME]
    if repo_root is not None:
        places.append(repo_root / CONFIG_NAME)
    return places


def load_config(repo_root: Path | None) -> Config:
    """Read the config files that exist; an unknown key or a file that does not parse is a ConfigError."""
    keys = {opt.key for opt in OPTIONS if opt.key}
    values: dict[str, object] = {}
    source: dict[str, Path] = {}
    for path in config_files(repo_root):
        if not path.is_file():
            continue
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path} does not parse: {exc}") from None
        for key, value in data.items():
            name = key.replace("_", "-")
            if name not in keys:
                raise ConfigError(f"{path}: unknown key {key!r}; known keys: {', '.join(sorted(keys))}")
            values[name], source[name] = value, path
    return Config(values, source)
