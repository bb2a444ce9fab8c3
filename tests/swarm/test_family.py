"""A tag family's shared ledger, and `--gpus` through it: merged rows, the family best, a lost
worker, `--resume` of the family, and `status`/`report` of the merged ledger."""

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
from harness.store.family import Coordinator, family_best
from harness.store.ledger import Row
from tests.conftest import Toy, git


def _row(n: int, status: str, metric: float, description: str = "d") -> Row:
    return Row("abc1234", metric, 1.0, status, description, {"n": str(n), "agent": "search"})


def test_the_merged_ledger_has_one_row_per_worker_attempt(tmp_path: Path) -> None:
    # Two objects on one folder, as two worker processes have.
    a = Coordinator(tmp_path, "fam", "val_bpb", "minimize")
    b = Coordinator(tmp_path, "fam", "val_bpb", "minimize")
    assert a.logged("gpu0", _row(0, "keep", 1.0, "baseline"))
    assert b.logged("gpu1", _row(0, "keep", 1.1, "baseline"))
    assert not b.logged("gpu0", _row(0, "keep", 1.0, "baseline"))  # a resent row is written once
    a.started("gpu0", {"n": 1, "description": "lower", "commit": "f" * 40, "agent": "search"})
    assert a.logged("gpu0", _row(1, "keep", 0.8, "lower"))
    assert b.running() == {}  # its row cleared the attempt in flight
    best = b.best()
    assert best is not None and (best.worker, best.n, best.metric) == ("gpu0", 1, 0.8)
    rows = a.rows_of("gpu0")
    assert [(r.extra["n"], r.extra["worker"]) for r in rows] == [("0", "gpu0"), ("1", "gpu0")]


def test_a_lost_worker_gets_its_attempt_logged_interrupted_once(tmp_path: Path) -> None:
    c = Coordinator(tmp_path, "fam", "val_bpb", "minimize")
    assert c.lost("gpu0") is None and not (tmp_path / "results").exists()  # never started: nothing made
    c.logged("gpu1", _row(0, "keep", 1.0, "baseline"))
    assert c.claim("gpu1", "k" * 20, "lower") is None
    c.started(
        "gpu1", {"n": 1, "description": "lower", "commit": "e" * 40, "agent": "claude", "cost_usd": 0.5}
    )
    row = c.lost("gpu1")
    assert row is not None and row.status == "crash" and row.extra["reason"] == "interrupted"
    assert (row.commit, row.description, row.extra["n"], row.extra["worker"]) == (
        "eeeeeee",
        "lower",
        "1",
        "gpu1",
    )
    assert c.lost("gpu1") is None  # settled once
    assert c.lookup("gpu0", "k" * 20) is None  # its claim was released: another worker may run it
    assert [r.extra["n"] for r in c.rows_of("gpu1")] == ["0", "1"]
    # its harness outlived its node by a moment and still sends a row: nothing after `interrupted`
    assert c.logged("gpu1", _row(2, "discard", 0.0, "a refused repeat")) is False
    assert [r.extra["n"] for r in c.rows_of("gpu1")] == ["0", "1"]
    # ... or starts its next attempt: nothing stays in flight for it, and it claims nothing
    assert c.claim("gpu1", "m" * 20, "later") is None
    c.started("gpu1", {"n": 2, "description": "later", "commit": "d" * 40, "agent": "claude"})
    assert c.running() == {} and c.lookup("gpu0", "m" * 20) is None


def test_the_family_best_is_the_best_of_each_workers_last_keep() -> None:
    rows = [
        Row("a", 1.0, 0, "keep", "baseline", {"n": "0", "worker": "w0"}),
        Row("b", 0.7, 0, "keep", "lucky", {"n": "1", "worker": "w0"}),
        Row("c", 0.9, 0, "keep", "baseline", {"n": "0", "worker": "w1"}),
        Row("d", 0.8, 0, "keep", "later", {"n": "2", "worker": "w0"}),  # w0's best is now 0.8
        Row("e", 0.5, 0, "discard", "worse", {"n": "1", "worker": "w1"}),
    ]
    best = family_best(rows, "minimize")
    assert best is not None and best.label() == "w0 #2" and best.commit == "d"
    assert family_best(rows, "maximize").label() == "w1 #0"  # type: ignore[union-attr]
    assert family_best(rows[4:], "minimize") is None


def _run(*args: str) -> int:
    return main(["run", "--device", "cpu", "--judge", "strict", "--baseline-runs", "1", *args])


@pytest.mark.slow
def test_gpus_resume_continues_every_worker_and_the_merged_ledger(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = toy_experiment
    first = toy.replay_file([toy.reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")], "a.jsonl")
    assert _run("--tag", "fam", "--gpus", "0,1", "--agent", f"replay:{first}") == 0
    # Starting it again is refused: it exists (one line, exit 2).
    capsys.readouterr()
    assert _run("--tag", "fam", "--gpus", "0,1", "--agent", f"replay:{first}") == 2
    assert "--resume" in capsys.readouterr().err
    before = toy.tsv("fam")
    # A resumed replay agent skips as many replies as its worker has attempts: gpu0 starts at
    # `steps 5`, gpu1 (a duplicate and an adoption behind it) at `steps 6`.
    more = [toy.reply(f"steps {k}", "STEPS = 4", f"STEPS = {k}") for k in (4, 5, 6, 7)]
    assert (
        _run(
            "--tag",
            "fam",
            "--gpus",
            "0,1",
            "--agent",
            f"replay:{toy.replay_file(more, 'b.jsonl')}",
            "--resume",
        )
        == 0
    )
    rows = toy.tsv("fam")
    assert rows[: len(before)] == before
    for w in ("gpu0", "gpu1"):
        own = toy.tsv(f"fam-{w}")
        assert [(r["n"], r["description"]) for r in rows if r["worker"] == w] == [
            (r["n"], r["description"]) for r in own
        ]
        assert [int(r["n"]) for r in own] == list(range(len(own)))
    ran = [
        r["description"] for r in rows if r["commit"] != "0000000" and r["description"].startswith("steps")
    ]
    assert sorted(ran) == ["steps 5", "steps 6", "steps 7"]  # each new change ran once in the family
    assert main(["status", "--tag", "fam"]) == 0
    out = capsys.readouterr().out
    assert "family of 2 workers" in out and "the family's best is gpu" in out
    assert "gpu0" in out and "gpu1" in out and "not running" in out
    assert main(["report", "--tag", "fam", "--out", str(toy.repo.parent / "rep")]) == 0
    assert "gpu0, gpu1" in capsys.readouterr().out
    # compare: the family's ref stands for its workers' branches, each with its own results.
    assert main(["compare", "autoresearch/fam", "--json", "--no-diff"]) == 0
    sides = json.loads(capsys.readouterr().out)["refs"]
    assert sorted(side["ref"] for side in sides) == ["autoresearch/fam-gpu0", "autoresearch/fam-gpu1"]
    assert all(side["experiments"] >= 3 and side["results_source"].endswith(".tsv") for side in sides)


@pytest.mark.slow
def test_a_killed_gpu_worker_is_logged_interrupted_and_the_other_goes_on(toy_experiment: Toy) -> None:
    toy = toy_experiment
    slow = toy.train.read_text().replace('MODE = "ok"', 'MODE = "slow"').replace("SLEEP = 0.0", "SLEEP = 1.5")
    toy.train.write_text(slow)
    git(toy.repo, "commit", "-qam", "slow toy")
    replies = [toy.reply(f"steps {k}", "STEPS = 4", f"STEPS = {k}") for k in range(5, 11)]
    path = toy.replay_file(replies)
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness.commands.main", "run", "--tag", "fam", "--gpus", "0,1", "--device", "cpu",
         "--judge", "strict", "--baseline-runs", "1", "--agent", f"replay:{path}"],
        cwd=toy.repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])),
    )  # fmt: skip
    inflight = toy.repo / "results" / "fam" / "inflight.json"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                job = json.loads(inflight.read_text()).get("gpu1")
            except (FileNotFoundError, ValueError):
                job = None
            if job and int(job["n"]) >= 1:
                break
            time.sleep(0.05)
        else:
            pytest.fail("gpu1 never ran an attempt")
        pid = int((toy.repo / "results" / "fam-gpu1" / "lock.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)  # no chance to log anything itself
        out, _ = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 128 + signal.SIGKILL, out[-3000:]  # the worst exit: the killed worker
    rows = toy.tsv("fam")
    lost = [r for r in rows if r["worker"] == "gpu1"]
    assert lost[-1]["reason"] == "interrupted" and int(lost[-1]["n"]) == int(job["n"]), out[-3000:]
    assert f"attempt #{job['n']} in flight: logged interrupted" in out
    others = [r for r in rows if r["worker"] == "gpu0"]
    assert [int(r["n"]) for r in others] == list(range(len(others)))
    # No change ran twice (the one gpu1 was running when it died was released: it may run on gpu0).
    ran = [r["description"] for r in rows if r["commit"] != "0000000" and r["reason"] != "interrupted"]
    ran = [d for d in ran if d != "baseline"]
    assert len(ran) == len(set(ran))
    # gpu0 went on to the end of its replies after gpu1 died.
    assert any(r["description"] == "steps 10" for r in others), out[-3000:]


def test_family_flags_refused_as_bad_input_with_nothing_written(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = toy_experiment
    path = toy.replay_file([])
    before = sorted(p.relative_to(toy.repo) for p in toy.repo.rglob("*") if ".git" not in p.parts)
    assert _run("--tag", "fam", "--gpus", "0", "--ray", "auto", "--agent", f"replay:{path}") == 2
    assert "exclude each other" in capsys.readouterr().err
    pytest.importorskip("ray")
    # Ray moves code through the remote `origin`: without one, nothing starts.
    assert _run("--tag", "fam", "--ray", "auto", "--agent", f"replay:{path}") == 2
    err = capsys.readouterr().err
    assert "git remote add origin" in err and err.count("\n") == 1
    assert sorted(p.relative_to(toy.repo) for p in toy.repo.rglob("*") if ".git" not in p.parts) == before
