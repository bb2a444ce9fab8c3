"""harness.integrity.evaluation: how the harness starts the evaluator and reads what it said."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from harness.errors import ConfigError
from harness.experiment import load_experiment
from harness.integrity import evaluation
from harness.integrity.evaluation import read_outcome


def test_the_result_marker_agrees_with_prepare() -> None:
    from prepare import verdict

    assert evaluation.RESULT_MARKER == verdict.RESULT_MARKER


def test_a_result_line_is_the_metric_and_its_keys_go_to_the_summary() -> None:
    lines = [
        "---",
        "val_bpb: 0.5",  # what people read; the harness reads the marker line only
        '@@autoresearch evaluation {"val_bpb": 0.987654, "eval_tokens": 32768, "seconds": 2.5, "probes": 4, "max_probe_diff": 0.0}',
    ]
    out = read_outcome(lines, 0, None)
    assert out.value == 0.987654 and out.reason is None
    assert out.summary == {
        "eval_tokens": 32768.0,
        "eval_seconds": 2.5,
        "causal_probes": 4.0,
        "causal_max_diff": 0.0,
    }


@pytest.mark.parametrize(
    ("lines", "code", "kill", "reason"),
    [
        (
            ['@@autoresearch evaluation {"reason": "non-causal: the loss at position 3 ..."}'],
            1,
            None,
            "non-causal: ",
        ),
        (
            ['@@autoresearch evaluation {"reason": "refused program: operator x"}'],
            1,
            None,
            "refused program: ",
        ),
        (["Traceback ...", "MemoryError"], 1, None, "evaluation failed: exit code 1, last line: MemoryError"),
        (['@@autoresearch evaluation {"val_bpb": NaN}'], 0, None, "evaluation failed"),
        (['@@autoresearch evaluation {"val_bpb": 0.9}'], 1, None, "evaluation failed: exit code 1"),
        (['@@autoresearch evaluation {"val_bpb": 0.9}'], None, "timeout", "evaluation failed: timeout"),
        ([], 0, None, "evaluation failed: exit code 0, last line: no output"),
    ],
)
def test_anything_but_a_clean_result_is_a_crash_reason(
    lines: list[str], code: int | None, kill: str | None, reason: str
) -> None:
    out = read_outcome(lines, code, kill)
    assert out.value is None and out.reason is not None and out.reason.startswith(reason)


def test_a_printed_metric_is_refused_only_when_printed() -> None:
    assert evaluation.printed_metric({"training_seconds": 3.0}, "val_bpb") is None
    assert evaluation.printed_metric(None, "val_bpb") is None
    reason = evaluation.printed_metric({"val_bpb": 0.1}, "val_bpb")
    assert reason is not None and reason.startswith("unverified metric: the train run printed val_bpb itself")


def test_the_evaluator_runs_from_a_staged_copy_without_bytecode(tmp_path: Path) -> None:
    worktree = tmp_path / "wt"
    (worktree / "prepare" / "__pycache__").mkdir(parents=True)
    (worktree / "prepare" / "__init__.py").write_text("")
    (worktree / "prepare" / "__pycache__" / "evaluate.cpython-311.pyc").write_bytes(b"poisoned")
    (worktree / "constants.py").write_text("X = 1\n")
    (worktree / "torch.py").write_text("raise SystemExit('shadowed')\n")  # dropped next to the package
    code = evaluation.stage(worktree, tmp_path / "code")
    assert sorted(p.name for p in code.iterdir()) == ["constants.py", "prepare"]
    assert not (code / "prepare" / "__pycache__").exists()
    argv = shlex.split(evaluation.command("bpb", tmp_path / "hand-off", python="/usr/bin/python3"))
    assert argv[:7] == ["/usr/bin/python3", "-E", "-s", "-B", "-u", "-m", "prepare.evaluate_program"]
    assert argv[7] == str(tmp_path / "hand-off")


def test_the_evaluator_gets_few_variables_and_no_secrets() -> None:
    base = {"PATH": "/usr/bin", "LANG": "C.UTF-8", "CUDA_VISIBLE_DEVICES": "0", "ANTHROPIC_API_KEY": "sk-x",
            "GITHUB_PAT": "ghp_x", "PYTHONPATH": "/evil", "AUTORESEARCH_PRICES": "x"}  # fmt: skip
    run_env = {"AUTORESEARCH_DEVICE": "cpu", "AUTORESEARCH_DATASET": "arithmetic", "AUTORESEARCH_CACHE": "/c",
               "AUTORESEARCH_HAND_OFF": "/h", "AUTORESEARCH_TIME_BUDGET": "300"}  # fmt: skip
    env = evaluation.environment(base, run_env)
    assert env == {"PATH": "/usr/bin", "LANG": "C.UTF-8", "CUDA_VISIBLE_DEVICES": "0",
                   "AUTORESEARCH_DEVICE": "cpu", "AUTORESEARCH_DATASET": "arithmetic", "AUTORESEARCH_CACHE": "/c"}  # fmt: skip


def _toml(tmp_path: Path, text: str) -> Path:
    (tmp_path / "train.py").write_text("print(1)\n")
    (tmp_path / "experiment.toml").write_text('mutable = ["train.py"]\nrun = "python train.py"\n' + text)
    return tmp_path


def test_experiment_toml_names_the_evaluator(tmp_path: Path) -> None:
    assert load_experiment(_toml(tmp_path, '[integrity]\nevaluator = "bpb"\n')).evaluator == "bpb"
    assert load_experiment(_toml(tmp_path, "")).evaluator is None
    with pytest.raises(ConfigError, match="'integrity.evaluator' must be one of bpb"):
        load_experiment(_toml(tmp_path, '[integrity]\nevaluator = "accuracy"\n'))
    with pytest.raises(ConfigError, match="needs a dataset to evaluate on"):
        load_experiment(_toml(tmp_path, 'dataset = "none"\n[integrity]\nevaluator = "bpb"\n'))
    with pytest.raises(ConfigError, match=r"'verify_metric' is gone.*\[integrity\] evaluator"):
        load_experiment(_toml(tmp_path, 'verify_metric = "evaluate_bpb"\n'))
    arith = load_experiment(_toml(tmp_path, 'dataset = "arithmetic"\n[integrity]\nevaluator = "arith"\n'))
    assert arith.evaluator == "arith" and evaluation.module("arith") == "prepare.evaluate_arith"
    with pytest.raises(ConfigError, match='evaluator\' = "arith" needs dataset = "arithmetic"'):
        load_experiment(_toml(tmp_path, 'dataset = "climbmix"\n[integrity]\nevaluator = "arith"\n'))
    with pytest.raises(ConfigError, match='needs dataset = "arithmetic"'):
        load_experiment(_toml(tmp_path, '[integrity]\nevaluator = "arith"\n'))


def test_the_metric_read_is_the_experiments_and_the_other_numbers_are_summary_keys() -> None:
    line = (
        '@@autoresearch evaluation {"accuracy": 0.75, "accuracy_long": 0.5, "problems": 32, "seconds": 1.5}'
    )
    out = read_outcome([line], 0, None, "accuracy")
    assert out.value == 0.75 and out.reason is None
    assert out.summary == {"accuracy_long": 0.5, "problems": 32.0, "eval_seconds": 1.5}
    missing = read_outcome([line], 0, None, "val_bpb")  # the line lacks the experiment's metric
    assert (
        missing.value is None
        and missing.reason is not None
        and missing.reason.startswith("evaluation failed")
    )
