"""Resume: a harness killed at any instant, started again with --resume, loses no row and duplicates none."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from support.sandboxing import needs_sandbox

from harness.commands.main import main
from harness.store.journal import TagLock
from harness.store.paths import TagPaths
from tests.conftest import Toy, git


def _slow_reply(toy: Toy, description: str) -> str:
    return (
        f'Description: {description}\n{toy.rel}\n<<<<<<< SEARCH\nMODE = "ok"\n=======\nMODE = "slow"\n>>>>>>> REPLACE\n'
        f"{toy.rel}\n<<<<<<< SEARCH\nSLEEP = 0.0\n=======\nSLEEP = 120.0\n>>>>>>> REPLACE\n"
    )


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except (ProcessLookupError, OSError):
        return False


def test_kill_9_during_a_run_then_resume(toy_experiment: Toy, no_sandbox: None) -> None:
    toy = toy_experiment
    replies = [
        toy.reply("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        _slow_reply(toy, "a slow run that gets killed"),
        toy.reply("lower it again", "VAL_BPB = 0.900000", "VAL_BPB = 0.700000"),
        toy.reply("raise it", "VAL_BPB = 0.700000", "VAL_BPB = 0.750000"),
    ]
    path = toy.replay_file(replies)
    cmd = [
        sys.executable,
        "-m",
        "harness.commands.main",
        "run",
        "--device",
        "cpu",
        "--tag",
        "k9",
        "--agent",
        f"replay:{path}",
    ]
    proc = subprocess.Popen(cmd, cwd=toy.repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = toy.repo / "results" / "k9" / "runs" / "2.log"
    deadline = time.monotonic() + 90
    while not (log.exists() and "step 00001" in log.read_text()):
        assert proc.poll() is None, "the harness ended before the slow run"
        assert time.monotonic() < deadline, "the slow run did not start"
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    child = int(
        next(ln for ln in log.read_text().splitlines() if ln.startswith("started pid=")).split("=")[1]
    )
    assert _alive(child), "the run should outlive a kill -9'ed harness (its own process group)"
    assert (toy.repo / "results" / "k9" / "pending.json").exists()

    assert main(["run", "--device", "cpu", "--tag", "k9", "--agent", f"replay:{path}", "--resume"]) == 0
    deadline = time.monotonic() + 15
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "resume must kill the run left over by the killed harness"

    rows = toy.tsv("k9")
    assert [r["n"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert [r["status"] for r in rows] == ["keep", "keep", "crash", "keep", "discard"]
    assert rows[2]["reason"] == "interrupted" and rows[2]["description"] == "a slow run that gets killed"
    assert [r["description"] for r in rows][3:] == ["lower it again", "raise it"]
    assert len({r["description"] for r in rows}) == len(rows)  # every reply exactly once
    # Branch head = best = the last keep; only kept commits on it.
    assert git(toy.repo, "rev-parse", "--short=7", "autoresearch/k9") == rows[3]["commit"]
    assert git(toy.repo, "log", "--format=%s", "autoresearch/k9").splitlines() == [
        "lower it again", "lower the constant", "initial",
    ]  # fmt: skip
    assert not (toy.repo / "results" / "k9" / "pending.json").exists()
    assert git(toy.repo, "status", "--porcelain") == ""


@needs_sandbox
def test_a_sandboxed_run_dies_with_a_kill_9ed_harness(toy_experiment: Toy) -> None:
    """With the sandbox, nothing is left for --resume to kill: bwrap's --die-with-parent ends the
    run (and its PID namespace, so everything it started) with the harness."""
    toy = toy_experiment
    path = toy.replay_file([_slow_reply(toy, "a slow run that gets killed")])
    cmd = [sys.executable, "-m", "harness.commands.main", "run", "--device", "cpu", "--tag", "s9",
           "--agent", f"replay:{path}", "--sandbox", "on"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=toy.repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = toy.repo / "results" / "s9" / "runs" / "1.log"
    deadline = time.monotonic() + 90
    while not (log.exists() and "step 00001" in log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, "the slow run did not start"
        time.sleep(0.1)
    exp_dir = str(toy.repo / ".autoresearch" / "worktrees" / "s9" / "experiments" / "toy")

    def runs() -> list[int]:  # host processes working in the run's folder
        found = []
        for p in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                if p.cwd() == exp_dir:
                    found.append(p.pid)
        return found

    assert runs(), "the run should be visible from the host while it runs"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while runs() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runs() == [], "the sandboxed run outlived its harness"
    assert main(["run", "--device", "cpu", "--tag", "s9", "--agent", f"replay:{path}", "--resume"]) == 0
    assert [(r["status"], r["reason"]) for r in toy.tsv("s9")] == [("keep", ""), ("crash", "interrupted")]


def test_resume_when_the_row_was_written_but_not_the_reset(toy_experiment: Toy) -> None:
    """Killed between `results.append` and `ratchet.revert`: the row stands, the reset is redone."""
    toy = toy_experiment
    replies = [
        toy.reply("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        toy.reply("raise it", "VAL_BPB = 0.900000", "VAL_BPB = 0.950000"),
    ]
    path = toy.replay_file(replies)
    args = ["run", "--device", "cpu", "--tag", "half", "--agent", f"replay:{path}"]
    assert main(args) == 0
    rows = toy.tsv("half")
    assert rows[2]["status"] == "discard"
    # Recreate the state of that instant: pending.json for attempt 2 and its edit still in the worktree.
    worktree = toy.repo / ".autoresearch" / "worktrees" / "half"
    wt_file = worktree / toy.rel
    best_text = wt_file.read_text()
    wt_file.write_text(best_text.replace("VAL_BPB = 0.900000", "VAL_BPB = 0.950000"))
    pending = {"n": 2, "commit": "", "parent": "", "description": "raise it", "reply": replies[1]}
    (toy.repo / "results" / "half" / "pending.json").write_text(json.dumps(pending))

    assert main([*args, "--resume"]) == 0
    assert toy.tsv("half") == rows  # no duplicate, nothing new (the replies are used up)
    assert wt_file.read_text() == best_text
    assert not (toy.repo / "results" / "half" / "pending.json").exists()


def test_a_second_harness_on_the_same_tag_is_refused(toy_experiment: Toy, capsys) -> None:  # type: ignore[no-untyped-def]
    toy = toy_experiment
    path = toy.replay_file([])
    assert main(["run", "--device", "cpu", "--tag", "busy", "--agent", f"replay:{path}"]) == 0
    before = (toy.repo / "results" / "busy.tsv").read_text()
    capsys.readouterr()
    with TagLock(TagPaths(toy.repo, "busy")):
        code = main(["run", "--device", "cpu", "--tag", "busy", "--agent", f"replay:{path}", "--resume"])
        err = capsys.readouterr().err
        assert code == 2
        assert "already being run by another harness" in err and f"pid {os.getpid()}" in err
        assert main(["status", "--tag", "busy"]) == 0
        assert f"running: yes (harness pid {os.getpid()})" in capsys.readouterr().out
    assert (toy.repo / "results" / "busy.tsv").read_text() == before
    assert main(["status", "--tag", "busy"]) == 0
    assert "running: no" in capsys.readouterr().out


def test_killed_before_the_branch_was_made_starts_afresh(toy_experiment: Toy, capsys) -> None:  # type: ignore[no-untyped-def]
    """kill -9 between taking the tag lock and creating the branch leaves only results/<tag>/lock:
    nothing was recorded, so a plain start (what --resume's message says to do) must work."""
    toy = toy_experiment
    path = toy.replay_file([])
    tag_dir = toy.repo / "results" / "early"
    tag_dir.mkdir(parents=True)
    (tag_dir / "lock").write_text("999999\n")
    args = ["run", "--device", "cpu", "--tag", "early", "--agent", f"replay:{path}"]
    assert main([*args, "--resume"]) == 2
    assert "without --resume" in capsys.readouterr().err
    assert main(args) == 0
    rows = toy.tsv("early")
    assert [r["description"] for r in rows] == ["baseline"] * len(rows) and rows[-1]["status"] == "keep"


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_closed_terminal_or_kill_logs_the_attempt_in_flight(
    toy_experiment: Toy, no_sandbox: None, sig: int
) -> None:
    """Closing the terminal (SIGHUP) or `kill` (SIGTERM) stops like Ctrl-C: the attempt in flight
    gets its row (`interrupted`), its run is killed, exit 130, and --resume goes on from there."""
    toy = toy_experiment
    path = toy.replay_file([_slow_reply(toy, "a slow run that gets hung up on")])
    cmd = [sys.executable, "-m", "harness.commands.main", "run", "--device", "cpu", "--tag", "hup",
           "--agent", f"replay:{path}"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=toy.repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = toy.repo / "results" / "hup" / "runs" / "1.log"
    deadline = time.monotonic() + 90
    while not (log.exists() and "step 00001" in log.read_text()):
        assert proc.poll() is None, "the harness ended before the slow run"
        assert time.monotonic() < deadline, "the slow run did not start"
        time.sleep(0.1)
    child = int(
        next(ln for ln in log.read_text().splitlines() if ln.startswith("started pid=")).split("=")[1]
    )
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert not _alive(child), "the run in flight must be killed with the harness"
    rows = toy.tsv("hup")
    assert [(r["n"], r["status"], r["reason"]) for r in rows] == [
        ("0", "keep", ""),
        ("1", "crash", "interrupted"),
    ]
    assert not (toy.repo / "results" / "hup" / "pending.json").exists()
    assert git(toy.repo, "status", "--porcelain") == ""


def test_crashed_baseline_fixed_on_the_persons_branch_is_picked_up_by_resume(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    """The crash message's advice works: commit the fix on your branch, run the command it names."""
    toy = toy_experiment
    toy.train.write_text(toy.train.read_text().replace('MODE = "ok"', 'MODE = "raise"'))
    git(toy.repo, "commit", "-qam", "a broken train file")
    path = toy.replay_file([])
    argv = ["run", "--device", "cpu", "--tag", "fix", "--agent", f"replay:{path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "the baseline run crashed (exception: ValueError: toy failure on purpose)" in err
    assert "commit the fix on your branch" in err
    assert "It ran with --device cpu: if the unmodified experiment runs without them" in err  # not --agent
    command = err.split("then run `", 1)[1].split("`", 1)[0]
    assert command == f"autoresearch run --tag fix --device cpu --agent replay:{path} --resume"

    toy.train.write_text(toy.train.read_text().replace('MODE = "raise"', 'MODE = "ok"'))
    git(toy.repo, "commit", "-qam", "fix the train file")
    assert main(command.split()[1:]) == 0
    out = capsys.readouterr().out
    assert "starting from your checkout" in out or "from your checkout's" in out
    rows = toy.tsv("fix")
    assert [(r["n"], r["status"], r["description"]) for r in rows] == [
        ("0", "crash", "baseline"), ("1", "keep", "baseline"),
    ]  # fmt: skip
    assert git(toy.repo, "rev-parse", "autoresearch/fix") == git(toy.repo, "rev-parse", "main")


def test_a_metric_renamed_after_a_crashed_baseline_does_not_block_resume(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = toy_experiment
    toml = toy.repo / "experiments" / "toy" / "experiment.toml"
    toml.write_text(toml.read_text().replace('metric = "val_bpb"', 'metric = "bpb"'))
    git(toy.repo, "commit", "-qam", "a metric the run never prints")
    argv = ["run", "--device", "cpu", "--tag", "ren", "--agent", f"replay:{toy.replay_file([])}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "(no metric)" in err
    assert "printed num_steps, peak_vram_mb, total_seconds, training_seconds, val_bpb but not 'bpb'" in err

    toml.write_text(toml.read_text().replace('metric = "bpb"', 'metric = "val_bpb"'))
    git(toy.repo, "commit", "-qam", "the metric the run prints")
    assert main([*argv, "--resume"]) == 0
    lines = (toy.repo / "results" / "ren.tsv").read_text().splitlines()
    assert lines[0].split("\t")[:2] == ["commit", "val_bpb"]
    assert [line.split("\t")[3] for line in lines[1:]] == ["crash", "keep"]
    # Once a row scored, another rename is refused with the command that works instead.
    toml.write_text(toml.read_text().replace('metric = "val_bpb"', 'metric = "bpb"'))
    git(toy.repo, "commit", "-qam", "rename again")
    assert main([*argv, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "measured 'val_bpb', but the experiment now reports 'bpb'" in err and "--tag ren-2" in err
