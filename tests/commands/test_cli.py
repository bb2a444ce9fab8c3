"""The CLI on bad input: one clear message, exit 2, nothing changed. And `status`."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.commands.main import main
from harness.integrity import sandbox
from tests.conftest import TOY, Toy, git


def snapshot(repo: Path) -> tuple[str, str, str, bool, bool]:
    """Everything a failed start must leave alone."""
    return (
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        git(repo, "rev-parse", "HEAD"),
        git(repo, "for-each-ref", "--format=%(refname)"),
        (repo / "results").exists(),
        (repo / ".autoresearch").exists(),
    )


def fails(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    for needle in needles:
        assert needle in err, err
    return err


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--experiment", "nope"], ["unknown experiment 'nope'", "Known experiments: toy"]),
        (["--dataset", "climbmix"], ["climbmix", "autoresearch prepare --dataset climbmix"]),
        (["--budget", "-1"], ["--budget", "positive"]),
        (["--max-experiments", "-2"], ["--max-experiments"]),
        (["--gpus", "a,b"], ["--gpus 'a,b'", "e.g. --gpus 0,1"]),
        (["--agent", "gpt5"], ["--agent 'gpt5'", "replay:FILE"]),
        (["--agent", "replay:/no/such/file.jsonl"], ["does not exist"]),
        (["--device", "gpu"], ["invalid choice: 'gpu'"]),
        (["--frobnicate"], ["unrecognized arguments: --frobnicate"]),
        (["--resume"], ["no results to resume", "without --resume"]),
    ],
)
def test_bad_flags(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str], extra: list[str], needles: list[str]
) -> None:
    before = snapshot(toy_experiment.repo)
    fails(
        capsys,
        ["run", "--device", "cpu", "--tag", "x", *extra]
        if "--device" not in extra
        else ["run", "--tag", "x", *extra],
        *needles,
    )
    assert snapshot(toy_experiment.repo) == before


def test_bad_tag_name(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    fails(capsys, ["run", "--device", "cpu", "--tag", "../escape"], "--tag '../escape'")
    fails(capsys, ["run", "--device", "cpu"], "the following arguments are required: --tag")


def test_malformed_replay_file(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    path = toy_experiment.repo.parent / "bad.jsonl"
    path.write_text(json.dumps({"reply": "Description: ok"}) + "\n{not json\n")
    before = snapshot(toy_experiment.repo)
    fails(
        capsys,
        ["run", "--device", "cpu", "--tag", "x", "--agent", f"replay:{path}"],
        "line 2",
        "not valid JSON",
    )
    path.write_text(json.dumps({"text": "no reply key"}) + "\n")
    fails(capsys, ["run", "--device", "cpu", "--tag", "x", "--agent", f"replay:{path}"], "line 1", '"reply"')
    assert snapshot(toy_experiment.repo) == before


def test_not_a_git_repo(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "plain"
    shutil.copytree(TOY / "const", folder / "experiments" / "toy")
    monkeypatch.chdir(folder)
    fails(
        capsys,
        ["run", "--device", "cpu", "--tag", "x", "--experiment", "./experiments/toy"],
        "not inside a git repository",
        "git init",
    )
    assert sorted(p.name for p in folder.iterdir()) == ["experiments"]


def test_uncommitted_change_in_the_mutable_file(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    toy_experiment.train.write_text(toy_experiment.train.read_text() + "# local change\n")
    before = snapshot(toy_experiment.repo)
    err = fails(capsys, ["run", "--device", "cpu", "--tag", "x", "--agent", "search"])
    assert "train.py" in err
    assert snapshot(toy_experiment.repo) == before
    assert toy_experiment.train.read_text().endswith("# local change\n")


def test_existing_tag_without_resume(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    path = toy_experiment.replay_file([])
    assert main(["run", "--device", "cpu", "--tag", "done", "--agent", f"replay:{path}"]) == 0
    before = snapshot(toy_experiment.repo)
    tsv = (toy_experiment.repo / "results" / "done.tsv").read_text()
    fails(
        capsys,
        ["run", "--device", "cpu", "--tag", "done", "--agent", f"replay:{path}"],
        "already exists",
        "--resume",
    )
    assert snapshot(toy_experiment.repo) == before
    assert (toy_experiment.repo / "results" / "done.tsv").read_text() == tsv


def test_broken_experiment_toml(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    exp = toy_experiment.repo / "experiments" / "bad"
    exp.mkdir()
    (exp / "train.py").write_text("print('hi')\n")
    (exp / "experiment.toml").write_text('mutable = ["train.py"]\nrun = "python train.py"\nbudget = 5\n')
    fails(capsys, ["run", "--device", "cpu", "--tag", "x", "--experiment", "bad"], "unknown key 'budget'")
    (exp / "experiment.toml").write_text('mutable = "train.py"\nrun = "python train.py"\n')
    fails(
        capsys,
        ["run", "--device", "cpu", "--tag", "x", "--experiment", "bad"],
        "key 'mutable' must be a list",
    )


def test_status(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    toy = toy_experiment
    assert main(["status"]) == 0
    assert "no tags yet" in capsys.readouterr().out
    replies = [
        toy.reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.500000"),
        toy.reply("boom", 'MODE = "ok"', 'MODE = "raise"'),
    ]
    assert (
        main(["run", "--device", "cpu", "--tag", "st", "--agent", f"replay:{toy.replay_file(replies)}"]) == 0
    )
    capsys.readouterr()
    assert main(["status", "--tag", "st"]) == 0
    out = capsys.readouterr().out
    assert "tag st: 3 rows (2 keep, 0 discard, 1 crash)" in out
    assert "best: 0.500000" in out and "(lower)" in out
    assert "running: no" in out
    assert "exception: ValueError" in out
    assert main(["status"]) == 0
    assert "st" in capsys.readouterr().out
    fails(capsys, ["status", "--tag", "nope"], "no results for tag 'nope'", "known tags: st")


def test_subprocess_error_is_one_line_and_exit_2(toy_experiment: Toy) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harness.commands.main", "run", "--tag", "x", "--device", "cpu", "--experiment", "nope"],
        cwd=toy_experiment.repo, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(
        "autoresearch run: error: unknown experiment"
    )
    assert "Traceback" not in out.stderr


def test_help_lists_the_subcommands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("run", "status"):
        assert name in out
    assert main([]) == 2


@pytest.mark.parametrize(
    ("dataset", "message"),
    [
        ("bogus", "unknown dataset 'bogus'"),
        ("text:/nonexistent/corpus", "text dataset path /nonexistent/corpus does not exist"),
    ],
)
def test_bad_prepare_input_is_one_line_and_exit_2(tmp_path: Path, dataset: str, message: str) -> None:
    # prepare's DataError is prepare's own class (prepare never imports the harness); the
    # `autoresearch` command still treats it as bad input.
    cache = tmp_path / "cache"
    out = subprocess.run(
        [sys.executable, "-m", "harness", "prepare", "--dataset", dataset, "--cache-dir", str(cache)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and out.stderr.startswith(f"autoresearch prepare: error: {message}")
    assert "Traceback" not in out.stderr and out.stdout == ""
    assert not cache.exists()


def test_a_timeout_not_above_the_budget_is_refused_before_anything_runs(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(toy_experiment.repo)
    argv = ["run", "--device", "cpu", "--tag", "x", "--agent", "search", "--max-experiments", "1"]
    err = fails(capsys, [*argv, "--timeout", "100", "--budget", "300"], "--timeout", "budget")
    assert err.count("\n") == 1, err
    assert snapshot(toy_experiment.repo) == before


def test_a_gpu_worker_gets_every_flag_given_its_own_tag_and_cuda() -> None:
    from harness.commands.main import build_parser
    from harness.options import OPTIONS
    from harness.swarm.local import worker_argv

    parser, _ = build_parser()
    given = [
        "run", "--tag", "night", "--experiment", "gpt", "--dataset", "climbmix", "--agent", "claude",
        "--model", "m", "--budget", "900", "--timeout", "1300", "--max-experiments", "5", "--max-cost", "2.5",
        "--resume", "--gpus", "0,3", "--cache-dir", "/c", "--judge", "strict", "--baseline-runs", "2",
        "--until", "06:30", "--plateau", "7", "--reflect-every", "4",
        "--warmup", "on", "--sandbox", "off", "--prune", "0.1",
    ]  # fmt: skip
    hidden = {"--device", "--worker", "--family", "--coordinator", "--ray"}  # --ray: its own test
    assert {a for a in given if a.startswith("--")} | hidden == {opt.flag for opt in OPTIONS if opt.flag}, (
        "every flag of the table is exercised here"
    )
    args = parser.parse_args(given)
    argv = worker_argv(args, "gpu3", "night")
    assert argv[1:4] == ["-m", "harness.commands.main", "run"]
    worker = parser.parse_args(argv[3:])
    # The family the worker joins: its shared ledger is results/night.tsv and results/night/.
    own = {"tag": "night-gpu3", "worker": "gpu3", "gpus": None, "device": "cuda", "family": "night"}
    for opt in OPTIONS:
        if opt.flag:
            expected = own.get(opt.dest, getattr(args, opt.dest))
            assert getattr(worker, opt.dest) == expected, opt.flag
    # A device given explicitly is passed on as it is.
    assert "mlx" in worker_argv(parser.parse_args([*given, "--device", "mlx"]), "gpu0", "night")
    # A Ray worker also gets the address of its coordinator.
    ray_argv = worker_argv(parser.parse_args(given), "w1", "night", coordinator="127.0.0.1:5000")
    assert parser.parse_args(ray_argv[3:]).coordinator == "127.0.0.1:5000"


def test_run_help_lists_every_environment_knob(capsys: pytest.CaptureFixture[str]) -> None:
    from harness.options import OPTIONS

    assert main(["run", "--help"]) == 0
    out = capsys.readouterr().out
    for opt in OPTIONS:
        if opt.env:
            assert opt.env in out
        if opt.flag and not opt.hidden:
            assert opt.flag in out
    assert "--worker" not in out and "--family" not in out and "--coordinator" not in out
    assert "--ray ADDRESS|auto" in out


def test_sandbox_on_without_a_sandbox_refuses_to_start(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(toy_experiment.repo)
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed")  # a machine without bubblewrap
    err = fails(
        capsys, ["run", "--device", "cpu", "--tag", "x", "--sandbox", "on"], "--sandbox on", "bubblewrap"
    )
    assert len(err.strip().splitlines()) == 1
    assert snapshot(toy_experiment.repo) == before


@pytest.mark.parametrize(
    ("mode", "said"),
    [
        ("auto", "off (auto: bubblewrap (bwrap) is not installed"),
        ("off", "off (--sandbox off): runs see the whole filesystem"),
    ],
)
def test_a_night_without_the_sandbox_says_so_at_start(
    toy_experiment: Toy,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    said: str,
) -> None:
    if mode == "auto":
        monkeypatch.setattr(sandbox, "BWRAP", "bwrap-not-installed")
    replay = toy_experiment.replay_file([])
    assert (
        main(["run", "--device", "cpu", "--tag", "x", "--agent", f"replay:{replay}", "--sandbox", mode]) == 0
    )
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.strip().startswith("sandbox:"))
    assert said in line, line
    assert toy_experiment.tsv("x")[0]["status"] == "keep"  # today's guards: the night runs


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA GPU")
def test_device_cuda_without_a_gpu_exits_2_before_any_run(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--device cuda` on a CPU machine: one line, exit 2, no tag (no branch, results or worktree)."""
    before = snapshot(toy_experiment.repo)
    err = fails(capsys, ["run", "--device", "cuda", "--tag", "x"], "--device cuda, but torch")
    assert "torch sees no CUDA GPU" in err or "torch is not installed" in err
    assert "--device cpu" in err and len(err.strip().splitlines()) == 1
    assert snapshot(toy_experiment.repo) == before
