"""The loop end to end: real git repos, real child processes, the real CLI (main(argv) and a subprocess)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.commands.main import main
from tests.conftest import PROJECT, Toy, git


def run_cli(*args: str) -> int:
    return main(["run", "--device", "cpu", *args])


def test_replay_keep_discard_crash_and_bad_edit(toy_experiment: Toy) -> None:
    toy = toy_experiment
    before_head = git(toy.repo, "rev-parse", "HEAD")
    before_file = toy.train.read_text()
    replies = [
        toy.reply("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        toy.reply("raise the constant", "VAL_BPB = 0.900000", "VAL_BPB = 0.950000"),
        toy.reply("raise an exception", 'MODE = "ok"', 'MODE = "raise"'),
        toy.reply("search text that is not there", "NOT_IN_THE_FILE = 1", "NOT_IN_THE_FILE = 2"),
        toy.reply("lower it again", "VAL_BPB = 0.900000", "VAL_BPB = 0.800000"),
    ]
    path = toy.replay_file(replies)
    assert run_cli("--tag", "t1", "--agent", f"replay:{path}") == 0

    rows = toy.tsv("t1")
    assert [r["status"] for r in rows] == ["keep", "keep", "discard", "crash", "crash", "keep"]
    assert [r["description"] for r in rows][:2] == ["baseline", "lower the constant"]
    assert [r["val_bpb"] for r in rows] == [
        "1.000000",
        "0.900000",
        "0.950000",
        "0.000000",
        "0.000000",
        "0.800000",
    ]
    assert rows[3]["reason"].startswith("exception: ValueError: toy failure on purpose")
    assert rows[3]["memory_gb"] == "0.0" and rows[1]["memory_gb"] == "2.0"
    assert rows[4]["reason"] == "bad edit" and rows[4]["commit"] == "0000000"
    assert [r["n"] for r in rows] == ["0", "1", "2", "3", "4", "5"]
    assert all(r["agent"] == "replay" for r in rows)
    assert rows[1]["budget_s"] and rows[1]["runs"] == "0.900000"

    # The branch holds only the kept commits, its head is the best, in the harness's worktree.
    log = git(toy.repo, "log", "--format=%s", "autoresearch/t1").splitlines()
    assert log == ["lower it again", "lower the constant", "initial"]
    short = git(toy.repo, "rev-parse", "--short=7", "autoresearch/t1")
    assert rows[-1]["commit"] == short
    # The person's checkout is untouched.
    assert git(toy.repo, "rev-parse", "HEAD") == before_head
    assert toy.train.read_text() == before_file
    assert git(toy.repo, "status", "--porcelain") == ""
    assert not (toy.repo / "results" / "t1" / "pending.json").exists()
    assert (toy.repo / "results" / "t1" / "runs" / "3.log").read_text().count("toy failure on purpose") >= 1


def test_empty_replay_file_runs_the_baseline_alone(toy_experiment: Toy) -> None:
    path = toy_experiment.replay_file([])
    assert run_cli("--tag", "empty", "--agent", f"replay:{path}") == 0
    rows = toy_experiment.tsv("empty")
    assert [(r["description"], r["status"]) for r in rows] == [("baseline", "keep")]


def test_crash_reasons_and_budget_reach_the_child(toy_experiment: Toy) -> None:
    toy = toy_experiment
    replies = [
        toy.reply("hang", 'MODE = "ok"', 'MODE = "hang"'),
        toy.reply("nan loss", 'MODE = "ok"', 'MODE = "nan"'),
        toy.reply("no summary", 'MODE = "ok"', 'MODE = "nometric"'),
        toy.reply("syntax", 'MODE = "ok"', 'MODE = ("ok"'),  # refused before it runs: a bad edit
    ]
    path = toy.replay_file(replies)
    assert run_cli("--tag", "crashes", "--agent", f"replay:{path}", "--timeout", "4", "--budget", "3") == 0
    rows = toy.tsv("crashes")
    assert [r["status"] for r in rows] == ["keep", "crash", "crash", "crash", "crash"]
    assert rows[1]["reason"] == "timeout"
    assert rows[2]["reason"] == "nan"
    assert rows[3]["reason"] == "no metric"
    assert rows[4]["reason"] == "bad edit" and rows[4]["commit"] == "0000000"
    assert rows[0]["budget_s"] == "3"
    # Every crash was reset away: the branch is still the initial commit.
    assert git(toy.repo, "rev-parse", "autoresearch/crashes") == git(toy.repo, "rev-parse", "HEAD")


def test_search_agent_max_experiments_on_the_toy(toy_experiment: Toy) -> None:
    assert run_cli("--tag", "s1", "--agent", "search", "--max-experiments", "3") == 0
    rows = toy_experiment.tsv("s1")
    assert len(rows) == 4 and rows[0]["description"] == "baseline"
    assert all(r["description"].startswith("search: ") for r in rows[1:])
    assert all(r["agent"] == "search" for r in rows)
    # --max-experiments counts attempts of the tag: resuming with the same limit adds nothing.
    assert run_cli("--tag", "s1", "--agent", "search", "--max-experiments", "3", "--resume") == 0
    assert len(toy_experiment.tsv("s1")) == 4


def test_ctrl_c_logs_the_attempt_in_flight_and_exits_130(toy_experiment: Toy, no_sandbox: None) -> None:
    toy = toy_experiment
    # Two blocks: MODE "slow" and a long SLEEP, so the run sleeps mid-way.
    reply = (
        f'Description: slow run\n{toy.rel}\n<<<<<<< SEARCH\nMODE = "ok"\n=======\nMODE = "slow"\n>>>>>>> REPLACE\n'
        f"{toy.rel}\n<<<<<<< SEARCH\nSLEEP = 0.0\n=======\nSLEEP = 60.0\n>>>>>>> REPLACE\n"
    )
    path = toy.replay_file([reply])
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.commands.main", "run", "--device", "cpu", "--tag", "intr", "--agent", f"replay:{path}"],
        cwd=toy.repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    log = toy.repo / "results" / "intr" / "runs" / "1.log"
    _wait_for(lambda: log.exists() and "step 00001" in log.read_text(), proc)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    rows = toy.tsv("intr")
    assert [(r["status"], r["reason"]) for r in rows] == [("keep", ""), ("crash", "interrupted")]
    assert rows[1]["description"] == "slow run"
    assert git(toy.repo, "rev-parse", "autoresearch/intr") == git(toy.repo, "rev-parse", "HEAD")
    started = [ln for ln in log.read_text().splitlines() if ln.startswith("started pid=")]
    pid = int(started[0].split("=")[1])
    assert not _alive(pid)


def _wait_for(cond, proc: subprocess.Popen[str], timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(
                f"harness exited early ({proc.returncode}): {proc.stdout.read() if proc.stdout else ''}"
            )
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the run to start")
        time.sleep(0.1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except OSError:
        return False


def test_plain_progress_lines_when_not_a_tty(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    path = toy_experiment.replay_file([])
    assert run_cli("--tag", "plain", "--agent", f"replay:{path}") == 0
    out = capsys.readouterr().out
    assert "agent:" in out and "replay" in out  # the settings, printed at start
    assert "#0 start: baseline" in out
    assert "#0 " in out and "keep" in out and "baseline" in out
    assert "done: the replay agent has nothing more to propose" in out


@pytest.mark.slow
@pytest.mark.timeout(600)  # the subprocess timeout below is the hang guard
def test_real_default_experiment_with_search_ends_by_itself(project_repo: Path) -> None:
    if not (PROJECT / "experiments" / "gpt" / "train.py").exists():
        pytest.skip("experiments/gpt/train.py does not exist yet (the gpt engineer writes it)")
    try:
        import prepare.datasets  # noqa: F401
    except ImportError:
        pytest.skip("prepare.datasets does not exist yet (the prepare engineer writes it)")
    # the timeout is a hang guard: four runs, each with its evaluator, on a loaded 2-core machine
    out = subprocess.run(
        [sys.executable, "-m", "harness.commands.main", "run", "--tag", "smoke", "--max-experiments", "3", "--budget", "5"],
        cwd=project_repo, capture_output=True, text=True, timeout=480,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "auto: no ANTHROPIC_API_KEY" in out.stdout  # agent auto -> search, and why
    lines = (project_repo / "results" / "smoke.tsv").read_text().splitlines()
    assert lines[0].startswith("commit\tval_bpb\tmemory_gb\tstatus\tdescription")
    rows = [ln.split("\t") for ln in lines[1:]]
    assert len(rows) == 4 and rows[0][4] == "baseline" and rows[0][3] == "keep"
    assert float(rows[0][1]) > 0


def test_gpus_runs_one_worker_per_gpu_with_its_own_tag(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = toy_experiment
    path = toy.replay_file([toy.reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")])
    # --device cpu keeps the workers on the CPU here; on a GPU box each sees only its CUDA_VISIBLE_DEVICES.
    assert run_cli("--tag", "multi", "--gpus", "0,1", "--agent", f"replay:{path}") == 0
    out = capsys.readouterr().out
    assert "[gpu0]" in out and "[gpu1]" in out
    # The workers share one novelty registry: the same change runs on one GPU only; the other
    # worker's row names the attempt of the worker that ran it.
    rows = {gpu: toy.tsv(f"multi-gpu{gpu}") for gpu in (0, 1)}
    ran = next(
        gpu for gpu in (0, 1) if rows[gpu][1]["status"] == "keep" and rows[gpu][1]["description"] == "lower"
    )
    other = 1 - ran
    assert [r["status"] for r in rows[ran]] == ["keep", "keep"]
    assert [r["status"] for r in rows[other]][:2] == ["keep", "discard"]
    # The repeat waited for the other worker's result: its row names that attempt and carries it.
    assert rows[other][1]["reason"] == f"duplicate of #1 of multi-gpu{ran}"
    assert rows[other][1]["val_bpb"] == "0.900000" and rows[other][1]["commit"] == "0000000"
    # The kept result reached the other worker: it adopted the family's best and its own judge kept it.
    adopted = rows[other][2]
    assert adopted["description"] == f"adopt gpu{ran} #1: lower" and adopted["agent"] == "adopt"
    assert adopted["status"] == "keep" and adopted["val_bpb"] == "0.900000" and len(rows[other]) == 3
    for gpu in (0, 1):
        assert {r["worker"] for r in rows[gpu]} == {f"gpu{gpu}"}
    assert git(toy.repo, "log", "-1", "--format=%s", f"autoresearch/multi-gpu{ran}") == "lower"
    assert (
        git(toy.repo, "log", "-1", "--format=%s", f"autoresearch/multi-gpu{other}")
        == f"adopt gpu{ran} #1: lower"
    )
    # The family's merged ledger holds every worker's rows, each once, with its worker.
    merged = toy.tsv("multi")
    assert sorted((r["worker"], r["n"], r["description"]) for r in merged) == sorted(
        (r["worker"], r["n"], r["description"]) for gpu in (0, 1) for r in rows[gpu]
    )
    assert (toy.repo / "results" / "multi" / "novelty.jsonl").is_file()
    assert json.loads((toy.repo / "results" / "multi" / "inflight.json").read_text()) == {}


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("compile('x = (', 'gen.py', 'exec')", "syntax error"),
        ("import sys; print('x'); sys.exit(3)", "exception: exit code 3, last line: x"),
        ("raise KeyError('k')", "exception: KeyError: 'k'"),
        ("print('FAIL')\nraise SystemExit(1)", "nan"),
        ("print('---'); print('val_bpb: nan')", "nan"),
        ("print('---'); print('other: 1.0')", "no metric"),
        ("print('---'); print('val_bpb: 0.5')", None),
    ],
)
def test_crash_reason_of_real_child_processes(tmp_path: Path, code: str, reason: str | None) -> None:
    from harness.night.measure import crash_reason
    from harness.night.metrics import read_summary
    from harness.night.runner import run as run_command

    (tmp_path / "t.py").write_text(code + "\n")
    log = tmp_path / "t.log"
    result = run_command(f"{sys.executable} t.py", tmp_path, dict(os.environ), log, timeout=60)
    assert crash_reason(result, read_summary(log), "val_bpb") == reason


def test_the_run_environment(toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = toy_experiment
    exp = toy.repo / "experiments" / "envprobe"
    exp.mkdir()
    (exp / "experiment.toml").write_text(
        'mutable = ["train.py"]\nrun = "python train.py"\ndataset = "arithmetic"\n'
    )
    (exp / "train.py").write_text(
        "import json, os\n"
        "print(json.dumps({'cwd': os.getcwd(), 'env': dict(os.environ)}))\n"
        "print('---')\nprint('val_bpb: 1.0')\n"
    )
    git(toy.repo, "add", "-A")
    git(toy.repo, "commit", "-q", "-m", "envprobe")
    monkeypatch.setenv("SOME_API_KEY", "sk-secret")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    path = toy.replay_file([])
    assert (
        run_cli("--tag", "env", "--experiment", "envprobe", "--agent", f"replay:{path}", "--budget", "7") == 0
    )
    line = (toy.repo / "results" / "env" / "runs" / "0.log").read_text().splitlines()[0]
    seen = json.loads(line)
    env, worktree = seen["env"], toy.repo / ".autoresearch" / "worktrees" / "env"
    assert Path(seen["cwd"]) == worktree / "experiments" / "envprobe"
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(worktree)
    assert env["AUTORESEARCH_TIME_BUDGET"] == "7" and env["AUTORESEARCH_DEVICE"] == "cpu"
    assert env["AUTORESEARCH_DATASET"] == "arithmetic" and env["PYTHONUNBUFFERED"] == "1"
    assert env["AUTORESEARCH_CACHE"] == os.environ["AUTORESEARCH_CACHE"]
    assert env["AUTORESEARCH_HAND_OFF"].startswith(str(toy.repo / "results" / "env" / "scratch"))
    assert "SOME_API_KEY" not in env and "ANTHROPIC_BASE_URL" not in env
    assert "sk-secret" not in line


def test_rich_view_shows_progress_loss_best_and_rows() -> None:
    import io

    from harness.night.live import PlainView, RichView, make_view
    from harness.store.ledger import Row

    stream = io.StringIO()
    view = RichView(stream)
    view.start(3, "halve the batch", 300.0)
    view.line("step 00012 (41.5%) | loss: 2.345678 | dt: 312ms")
    view.message("a message above the panel")
    view.finish(Row("abc1234", 0.9123, 40.0, "keep", "halve the batch", {}), 0.9123)
    view.close()
    out = stream.getvalue()
    for needle in (
        "#3",
        "halve the batch",
        "a message above the panel",
        "abc1234",
        "0.912300",
        "best 0.912300",
    ):
        assert needle in out, out
    assert isinstance(make_view(io.StringIO()), PlainView)  # not a terminal: plain lines


def test_a_warm_up_run_precedes_the_baseline_and_is_no_sample(toy_experiment: Toy) -> None:
    """--warmup on: one discarded run (runs/0.warmup.log) before the baseline's noise samples."""
    toy = toy_experiment
    path = toy.replay_file([])
    assert run_cli("--tag", "w", "--agent", f"replay:{path}", "--warmup", "on", "--baseline-runs", "2") == 0
    runs = toy.repo / "results" / "w" / "runs"
    assert (runs / "0.warmup.log").is_file() and "val_bpb" in (runs / "0.warmup.log").read_text()
    rows = toy.tsv("w")
    assert len(rows) == 1 and rows[0]["description"] == "baseline"
    assert len(rows[0]["runs"].split(",")) == 2  # the warm-up is not among them
    assert sorted(p.name for p in runs.glob("*.log")) == ["0.log", "0.r1.log", "0.warmup.log"]


def test_no_warm_up_run_on_the_cpu_by_default(toy_experiment: Toy) -> None:
    path = toy_experiment.replay_file([])
    assert run_cli("--tag", "nw", "--agent", f"replay:{path}") == 0
    assert not (toy_experiment.repo / "results" / "nw" / "runs" / "0.warmup.log").exists()


def test_rich_view_says_what_it_waits_for_and_shows_the_history_after_a_resume() -> None:
    import io

    from rich.console import Console

    from harness.night.live import RichView
    from harness.store.ledger import Row

    def screen(view: RichView) -> str:
        console = Console(file=io.StringIO(), width=120)
        console.print(view._render())
        return console.file.getvalue()  # type: ignore[attr-defined]

    view = RichView(io.StringIO())
    view.history([Row("abc1234", 0.91, 1.0, "keep", "halve the batch", {}),
                  Row("def5678", 0.95, 1.0, "discard", "wider model", {})], 0.91)  # fmt: skip
    shown = screen(view)
    assert "best 0.910000" in shown and "abc1234" in shown and "wider model" in shown
    view.start(0, "baseline (run 2 of 3)", 20.0)
    view.line("step 00040 (100.0%) | loss: 2.3")
    assert "baseline (run 2 of 3)" in screen(view) and "100.0%" in screen(view)
    view.finish(Row("abc1234", 0.9, 1.0, "keep", "baseline", {}), 0.9)
    view.waiting("waiting for the model (claude-sonnet-5-5)")
    shown = screen(view)
    assert "waiting for the model (claude-sonnet-5-5)" in shown
    assert "100.0%" not in shown and "#0" not in shown  # not the last run's finished bar
    view.close()


def test_plain_view_numbers_the_baseline_runs(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    path = toy_experiment.replay_file([])
    assert (
        main(["run", "--device", "cpu", "--tag", "b3", "--agent", f"replay:{path}", "--baseline-runs", "3"])
        == 0
    )
    out = capsys.readouterr().out
    for k in (1, 2, 3):
        assert f"#0 start: baseline (run {k} of 3)" in out, out
