"""Settings: experiment.toml validation, precedence of flags/toml/env/profile, auto-detection with reasons."""

from __future__ import annotations

import dataclasses
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from harness import options
from harness import settings as config
from harness.detect import detect_device, profile_values
from harness.errors import ConfigError
from harness.experiment import load_experiment
from tests.conftest import Toy


def resolve(cwd: Path, env: dict[str, str] | None = None, **kw: object) -> config.Settings:
    kw.setdefault("device", "cpu")
    return config.resolve(tag="t", cwd=cwd, env=env if env is not None else {}, **kw)


def write_exp(root: Path, toml: str, name: str = "e") -> Path:
    exp = root / "experiments" / name
    exp.mkdir(parents=True, exist_ok=True)
    (exp / "train.py").write_text("X = 1\n")
    (exp / "experiment.toml").write_text(toml)
    return exp


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('mutable = ["train.py"]\nrun = "python train.py"\nbudgett = 5\n', "unknown key 'budgett'"),
        ('mutable = ["train.py"]\nrun = 5\n', "key 'run' must be a str"),
        (
            'mutable = ["train.py"]\nrun = "x"\nbudget_seconds = "5"\n',
            "key 'budget_seconds' must be a int or float",
        ),
        ('mutable = ["train.py"]\nrun = "x"\ntimeout_seconds = true\n', "key 'timeout_seconds'"),
        (
            'mutable = ["train.py"]\nrun = "x"\ntimeout_seconds = nan\n',
            "key 'timeout_seconds' must be positive",
        ),
        (
            'mutable = ["train.py"]\nrun = "x"\nbudget_seconds = inf\n',
            "key 'budget_seconds' must be positive",
        ),
        ('mutable = ["train.py"]\nrun = "x"\ndirection = "up"\n', "key 'direction'"),
        ('mutable = ["missing.py"]\nrun = "x"\n', "'missing.py' does not exist"),
        ('mutable = ["../escape.py"]\nrun = "x"\n', "outside the experiment folder"),
        ('run = "x"\n', "missing required key 'mutable'"),
        ('mutable = ["train.py"\n', "not valid TOML"),
    ],
)
def test_experiment_toml_errors_name_the_key(tmp_path: Path, toml: str, needle: str) -> None:
    exp = write_exp(tmp_path, toml)
    with pytest.raises(ConfigError) as err:
        load_experiment(exp)
    assert needle in str(err.value)
    assert str(exp / "experiment.toml") in str(err.value) or "experiment.toml" in str(err.value)


def test_settings_from_the_toy(toy_experiment: Toy) -> None:
    s = resolve(toy_experiment.repo, agent="search")
    assert s.repo_root == toy_experiment.repo
    assert s.experiment_name == "toy" and s.experiment_rel == "experiments/toy"
    assert s.mutable == ("experiments/toy/train.py",)
    assert (s.metric, s.direction, s.run) == ("val_bpb", "minimize", "python train.py")
    assert s.timeout == 30 and s.reasons["timeout"] == "experiment.toml timeout_seconds"
    assert s.budget == 10 and s.reasons["budget"] == "experiment.toml budget_seconds"
    assert s.dataset == "none"
    assert s.paths.tsv == toy_experiment.repo / "results" / "t.tsv"
    with pytest.raises(AttributeError):
        s.tag = "other"  # type: ignore[misc]


def test_budget_precedence_flag_over_toml_over_profile(project_repo: Path) -> None:
    exp = write_exp(project_repo, 'mutable = ["train.py"]\nrun = "python train.py"\n', "plain")
    s = resolve(project_repo, experiment=str(exp), agent="search")
    # The cpu profile: a 20 s budget (a first result within two minutes), killed 120 s later.
    assert s.budget == 20 and s.reasons["budget"] == "constants.py, cpu profile"
    assert s.timeout == 140 and "TIMEOUT_ALLOWANCE" in s.reasons["timeout"]
    assert s.baseline_runs == 1 and s.reasons["baseline_runs"] == "constants.py, cpu profile"
    (exp / "experiment.toml").write_text(
        'mutable = ["train.py"]\nrun = "python train.py"\nbudget_seconds = 42\n'
    )
    s = resolve(project_repo, experiment=str(exp), agent="search")
    assert s.budget == 42 and s.reasons["budget"] == "experiment.toml budget_seconds"
    s = resolve(project_repo, experiment=str(exp), agent="search", budget=5.0)
    assert s.budget == 5 and s.reasons["budget"] == "--budget"
    # The hard kill follows the budget: the budget plus the profile's allowance (120 s on cpu).
    assert s.timeout == 125
    s = resolve(project_repo, experiment=str(exp), agent="search", budget=900.0)
    assert s.timeout == 1020
    cuda = profile_values(project_repo, "cuda")  # a GPU's profile: 300 s, killed 300 s later, 3 baseline runs
    assert (cuda["TIME_BUDGET"], cuda["TIMEOUT_ALLOWANCE"], cuda["BASELINE_RUNS"]) == (300, 300, 3)
    s = resolve(project_repo, experiment=str(exp), agent="search", budget=900.0, timeout="901")
    assert s.timeout == 901 and s.reasons["timeout"] == "--timeout"


def test_experiment_by_name_or_path(project_repo: Path, tmp_path: Path) -> None:
    s = resolve(project_repo / "experiments", experiment="gpt", agent="search")
    assert s.experiment_dir == project_repo / "experiments" / "gpt"
    s = resolve(tmp_path, experiment=str(project_repo / "experiments" / "gpt"), agent="search")
    assert s.repo_root == project_repo
    assert s.mutable == ("experiments/gpt/train.py",)


def test_cache_root_precedence(toy_experiment: Toy, tmp_path: Path) -> None:
    env = {"AUTORESEARCH_CACHE": str(tmp_path / "envcache")}
    assert resolve(toy_experiment.repo, env, agent="search").cache_root == tmp_path / "envcache"
    s = resolve(toy_experiment.repo, env, agent="search", cache_dir=str(tmp_path / "flag"))
    assert s.cache_root == tmp_path / "flag" and s.reasons["cache_root"] == "--cache-dir"
    assert (
        resolve(toy_experiment.repo, {}, agent="search").cache_root == Path.home() / ".cache" / "autoresearch"
    )


def test_agent_auto_says_which_and_why(toy_experiment: Toy) -> None:
    repo = toy_experiment.repo
    s = resolve(repo, {"ANTHROPIC_API_KEY": "k", "OPENAI_API_KEY": "k"})
    assert s.agent == "claude" and "ANTHROPIC_API_KEY" in s.reasons["agent"]
    s = resolve(repo, {"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"})
    assert s.agent == "openai" and "OPENAI_BASE_URL" in s.reasons["agent"]
    s = resolve(repo, {})
    assert s.agent == "search" and s.reasons["agent"].startswith("auto: no ANTHROPIC_API_KEY")
    text = "\n".join(s.describe())
    assert "agent:" in text and "(auto: no ANTHROPIC_API_KEY" in text
    assert "k" not in [line.split()[-1] for line in resolve(repo, {"ANTHROPIC_API_KEY": "k"}).describe()]


def test_dataset_default_is_arithmetic_when_climbmix_is_not_ready(project_repo: Path, tmp_path: Path) -> None:
    s = resolve(project_repo, {"AUTORESEARCH_CACHE": str(tmp_path / "empty")}, agent="search")
    assert s.dataset == "arithmetic"
    assert s.reasons["dataset"].startswith("auto: climbmix is not prepared")
    s = resolve(project_repo, {}, agent="search", dataset="text:/tmp/corpus.txt")
    assert s.dataset == "text:/tmp/corpus.txt" and s.reasons["dataset"] == "--dataset"
    with pytest.raises(ConfigError, match="--dataset 'wiki'"):
        resolve(project_repo, {}, agent="search", dataset="wiki")


def test_device_auto_probe_and_gpus(toy_experiment: Toy) -> None:
    device, why = detect_device({"PATH": "/usr/bin:/bin"})
    assert device in options.DEVICES and why
    s = resolve(toy_experiment.repo, {}, agent="search", device="auto", gpus="0,2")
    assert s.gpus == (0, 2) and s.device == "cuda" and s.reasons["device"] == "--gpus given"
    for bad in ("1,1", "a,b", "-1", ","):
        with pytest.raises(ConfigError, match=f"--gpus '{bad}': expected distinct"):
            resolve(toy_experiment.repo, {}, agent="search", gpus=bad)


def test_replay_path_is_made_absolute(toy_experiment: Toy) -> None:
    path = toy_experiment.replay_file([])
    s = resolve(
        path.parent, agent="replay:replies.jsonl", experiment=str(toy_experiment.repo / "experiments/toy")
    )
    assert s.agent == f"replay:{path}"


@pytest.mark.parametrize(
    ("flag", "value"),
    [("budget", float("nan")), ("budget", float("inf")), ("timeout", float("nan")), ("timeout", float("inf")),
     ("max_cost", float("nan"))],
)  # fmt: skip
def test_non_finite_numbers_are_refused(toy_experiment: Toy, flag: str, value: float) -> None:
    """NaN slips past `x <= 0`; a NaN or infinite --timeout would switch the hard kill off."""
    with pytest.raises(ConfigError, match=f"--{flag.replace('_', '-')}"):
        resolve(toy_experiment.repo, agent="search", **{flag: value})


def test_a_mutable_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    exp = write_exp(tmp_path, 'mutable = ["train.py"]\nrun = "python train.py"\n')
    (exp / "train.py").write_bytes(b"# caf\xe9 (latin-1)\nX = 1\n")
    with pytest.raises(ConfigError, match="'train.py' is not UTF-8 text"):
        load_experiment(exp)


def test_budget_moves_the_kill_timeout_of_the_gpt_experiment(project_repo: Path) -> None:
    """The shipped experiment.toml once pinned timeout_seconds = 600: `--budget 900` was killed at 600 s."""
    s = resolve(project_repo, experiment="gpt", agent="search", budget=900.0)
    assert s.budget == 900 and s.timeout > 900
    s = resolve(project_repo, experiment="gpt-mlx", agent="search", budget=900.0)
    assert s.budget == 900 and s.timeout > 900


def test_settings_import_nothing_above_them(toy_experiment: Toy) -> None:
    """Settings sit below agents, night, integrity and review: resolving must not import them."""
    code = (
        "import sys\n"
        "from harness import settings\n"
        "s = settings.resolve(tag='t', device='cpu', agent='auto', judge='strict')\n"
        "above = ('harness.agents', 'harness.night', 'harness.integrity', 'harness.review', 'harness.commands')\n"
        "print(sorted(m for m in sys.modules if m.startswith(above)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=toy_experiment.repo, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_timeout_not_above_the_budget_is_refused(project_repo: Path) -> None:
    with pytest.raises(ConfigError) as err:
        resolve(project_repo, agent="search", budget="300", timeout="100")
    assert "kill timeout 100 s (--timeout) is not above the training budget 300 s (--budget)" in str(
        err.value
    )
    with pytest.raises(ConfigError, match="is not above"):
        resolve(project_repo, agent="search", budget="300", timeout="300")
    exp = write_exp(project_repo, 'mutable = ["train.py"]\nrun = "python train.py"\ntimeout_seconds = 15\n')
    with pytest.raises(ConfigError) as err:
        resolve(project_repo, experiment=str(exp), agent="search")
    assert "15 s (experiment.toml timeout_seconds)" in str(err.value)
    assert "20 s (constants.py, cpu profile)" in str(err.value)
    assert resolve(project_repo, experiment=str(exp), agent="search", budget="10").timeout == 15


KNOBS = {
    "AUTORESEARCH_LLM_TIMEOUT": "30",
    "AUTORESEARCH_LLM_MAX_TOKENS": "4000",
    "AUTORESEARCH_RETRY_BASE": "0.01",
    "AUTORESEARCH_RETRY_CAP": "0.5",
    "AUTORESEARCH_RETRY_PAUSE_AFTER": "1",
    "AUTORESEARCH_RETRY_MAX_ATTEMPTS": "4",
    "AUTORESEARCH_PRICES": '{"my-model": [1, 2], "gpt-5": {"input": 9, "output": 9}}',
    "AUTORESEARCH_PIPELINE_DEPTH": "0",
}


def test_knobs_come_from_the_environment_and_are_printed(toy_experiment: Toy) -> None:
    s = resolve(toy_experiment.repo, KNOBS, agent="search")
    assert (s.llm_timeout, s.llm_max_tokens) == (30.0, 4000)
    assert (s.retry_base, s.retry_cap, s.retry_pause_after, s.retry_max_attempts) == (0.01, 0.5, 1.0, 4)
    assert s.prices == {"my-model": (1.0, 2.0), "gpt-5": (9.0, 9.0)}
    assert s.pipeline_depth == 0
    lines = s.describe()
    assert "retry_base:          0.01 s  (AUTORESEARCH_RETRY_BASE)" in lines
    assert (
        "prices:              built-in table, overridden for my-model, gpt-5  (AUTORESEARCH_PRICES)" in lines
    )
    assert "pipeline_depth:      0  (AUTORESEARCH_PIPELINE_DEPTH)" in lines
    default = resolve(toy_experiment.repo, {"AUTORESEARCH_PIPELINE_DEPTH": "auto"}, agent="search")
    assert default.pipeline_depth is None and default.retry_max_attempts is None and default.prices == {}
    assert default.llm_timeout == 600 and default.retry_base == 2.0
    shown = default.describe()
    assert "pipeline_depth:      auto" in shown and "retry_max_attempts:  unlimited" in shown


def test_prices_from_a_file(toy_experiment: Toy, tmp_path: Path) -> None:
    toml = tmp_path / "prices.toml"
    toml.write_text('[prices]\n"local-coder" = [0.1, 0.2]\n')
    s = resolve(toy_experiment.repo, {"AUTORESEARCH_PRICES": str(toml)}, agent="search")
    assert s.prices == {"local-coder": (0.1, 0.2)}
    js = tmp_path / "prices.json"
    js.write_text('{"m": [3, 4]}')
    assert resolve(toy_experiment.repo, {"AUTORESEARCH_PRICES": str(js)}, agent="search").prices == {
        "m": (3, 4)
    }


@pytest.mark.parametrize(
    ("name", "raw", "why"),
    [
        ("AUTORESEARCH_RETRY_BASE", "fast", "must be a positive number of seconds"),
        ("AUTORESEARCH_RETRY_CAP", "-1", "must be a positive number of seconds"),
        ("AUTORESEARCH_LLM_TIMEOUT", "inf", "must be a positive number of seconds"),
        ("AUTORESEARCH_RETRY_MAX_ATTEMPTS", "nan", "must be a whole number, 1 or more"),
        ("AUTORESEARCH_RETRY_MAX_ATTEMPTS", "0", "must be a whole number, 1 or more"),
        ("AUTORESEARCH_LLM_MAX_TOKENS", "inf", "must be a whole number, 1 or more"),
        ("AUTORESEARCH_PIPELINE_DEPTH", "many", "expected 'auto' or a whole number"),
        ("AUTORESEARCH_PIPELINE_DEPTH", "-1", "expected 'auto' or a whole number"),
        ("AUTORESEARCH_PRICES", "{not json", "not valid JSON"),
        ("AUTORESEARCH_PRICES", '{"m": [1]}', "must be [input, output]"),
        ("AUTORESEARCH_PRICES", '{"m": [-1, 2]}', "must be [input, output]"),
        ("AUTORESEARCH_PRICES", "/no/such/prices.toml", "no such file"),
    ],
)
def test_a_bad_knob_is_refused_naming_its_variable(
    toy_experiment: Toy, name: str, raw: str, why: str
) -> None:
    """Also when the agent would not use it: a typo must not wait for the night that needs it."""
    with pytest.raises(ConfigError) as err:
        resolve(toy_experiment.repo, {name: raw}, agent="search")
    assert str(err.value).startswith(f"{name}={raw!r}: ") and why in str(err.value)


def test_the_registries_accept_exactly_the_names_settings_accept() -> None:
    from harness import experiment
    from harness.agents import REGISTRY, agent_class
    from harness.agents.llm import CallOptions
    from harness.agents.retry import RetryPolicy
    from harness.night.judge import JUDGES, make_judge

    assert set(REGISTRY) == {*options.AGENTS, "replay"}
    assert all(hasattr(agent_class(name), "from_settings") for name in REGISTRY)
    assert set(JUDGES) == set(options.JUDGES)
    for name in options.JUDGES:
        make_judge(name, "minimize")
    for module in experiment.EVALUATORS.values():  # every evaluator name runs a prepare module that exists
        assert importlib.util.find_spec(module) is not None
    # The LLM knobs' defaults are the library's own.
    defaults = {f.name: f.default for f in dataclasses.fields(config.Settings)}
    policy, call = RetryPolicy(), CallOptions()
    assert (policy.base, policy.cap, policy.pause_after, policy.max_attempts) == (
        defaults["retry_base"], defaults["retry_cap"], defaults["retry_pause_after"], defaults["retry_max_attempts"]
    )  # fmt: skip
    assert (call.timeout, call.max_tokens) == (defaults["llm_timeout"], defaults["llm_max_tokens"])


def test_every_option_is_a_settings_field_and_resolve_refuses_strangers(toy_experiment: Toy) -> None:
    fields = {f.name for f in dataclasses.fields(config.Settings)} | {"experiment"}
    assert {opt.field for opt in options.OPTIONS} <= fields
    assert len({opt.dest for opt in options.OPTIONS}) == len(options.OPTIONS)
    with pytest.raises(TypeError, match="budgett"):
        resolve(toy_experiment.repo, agent="search", budgett="5")


# --- the config file -------------------------------------------------------------------------


def test_config_file_defaults_and_precedence(project_repo: Path, tmp_path: Path) -> None:
    """autoresearch.toml: the repository's over the user's; flag > experiment.toml > file > env."""
    user = tmp_path / "config" / "autoresearch"  # XDG_CONFIG_HOME of the clean_env fixture
    user.mkdir(parents=True)
    (user / "autoresearch.toml").write_text('judge = "strict"\nmax-cost = 9\nmodel = "from-user"\n')
    (project_repo / "autoresearch.toml").write_text(
        'agent = "search"\nmodel = "from-repo"\nllm_timeout = 30\nbudget = 7\n[prices]\n"my-model" = [1, 2]\n'
    )
    s = resolve(project_repo, {"AUTORESEARCH_LLM_TIMEOUT": "99", "AUTORESEARCH_RETRY_BASE": "0.5"})
    assert (s.agent, s.model, s.judge, s.max_cost) == ("search", "from-repo", "strict", 9.0)
    assert (
        s.llm_timeout == 30 and s.retry_base == 0.5
    )  # the file beats the variable, the variable the default
    assert s.prices == {"my-model": (1.0, 2.0)} and s.budget == 7
    assert s.reasons["model"] == str(project_repo / "autoresearch.toml")
    assert s.reasons["judge"] == str(user / "autoresearch.toml")
    assert f"strict  ({user / 'autoresearch.toml'})" in "\n".join(s.describe())
    assert resolve(project_repo, model="from-flag", budget="3").model == "from-flag"
    assert resolve(project_repo, budget="3").reasons["budget"] == "--budget"
    # experiment.toml is more specific than a person's defaults: only a flag overrides it.
    exp = write_exp(project_repo, 'mutable = ["train.py"]\nrun = "python train.py"\nbudget_seconds = 42\n')
    assert resolve(project_repo, experiment=str(exp)).budget == 42


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('agnet = "claude"\n', "unknown key 'agnet'"),
        ("tag = 'x'\n", "unknown key 'tag'"),
        ("max-cost = -1\n", "max-cost = '-1': must be a number of US dollars"),
        ("judge = 'lenient'\n", "expected one of noise, strict"),
        ("agent = [\n", "does not parse"),
    ],
)
def test_config_file_bad_input_names_file_and_key(project_repo: Path, text: str, needle: str) -> None:
    (project_repo / "autoresearch.toml").write_text(text)
    with pytest.raises(ConfigError) as err:
        resolve(project_repo)
    assert needle in str(err.value) and "autoresearch.toml" in str(err.value)


def test_run_help_lists_every_knob_and_the_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.commands.main import main
    from harness.options import OPTIONS

    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    assert "autoresearch.toml" in out and "flag > experiment.toml > config file" in out
    for opt in OPTIONS:
        if not opt.hidden:
            assert (opt.flag or opt.env) in out, opt
