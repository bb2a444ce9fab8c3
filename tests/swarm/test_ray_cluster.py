"""`run --ray`: a real local Ray cluster (a head and two worker nodes on this host, each with one
GPU as a custom resource on the CPU), three workers, a git remote, the toy experiment, a worker
node killed while it runs an attempt. The cluster is stopped by the test, also when it fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PROJECT, Toy, git

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

TAG = "fam"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """`ray start --head` and worker nodes on loopback, each `ray start` in its own process group,
    so that killing a group kills exactly that node (its raylet, its actors, their children)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.temp = tempfile.mkdtemp(prefix="arr", dir="/tmp")  # short: Ray's socket paths have a limit
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.groups: list[int] = []

    def _start(self, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [shutil.which("ray") or "ray", "start", "--node-ip-address=127.0.0.1", "--num-cpus=1",
             "--num-gpus=1", "--disable-usage-stats", *args],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        self.groups.append(proc.pid)
        return proc

    def start(self, workers: int) -> None:
        head = self._start(
            "--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.temp}"
        )
        self._check(head)
        for _ in range(workers):  # one after the other: together they overload a small machine
            self._check(self._start(f"--address={self.address}"))

    def _check(self, proc: subprocess.Popen[bytes]) -> None:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err.decode()[-2000:]

    def kill_node(self, index: int) -> None:
        """SIGKILL every process of worker node `index` (0: the first after the head)."""
        os.killpg(self.groups[1 + index], signal.SIGKILL)

    def stop(self) -> None:
        for pgid in self.groups:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        shutil.rmtree(self.temp, ignore_errors=True)


@pytest.fixture
def cluster(toy_experiment: Toy) -> Iterator[Cluster]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(PROJECT), os.environ.get("PYTHONPATH", "")]),
        RAY_USAGE_STATS_ENABLED="0",
        # A killed node is declared dead in a few seconds, not half a minute.
        RAY_health_check_initial_delay_ms="1000",
        RAY_health_check_period_ms="1000",
        RAY_health_check_timeout_ms="2000",
        RAY_health_check_failure_threshold="3",
    )
    c = Cluster(env)
    try:
        c.start(workers=2)
        yield c
    finally:
        c.stop()


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


def test_a_night_on_a_ray_cluster_survives_a_lost_node(
    toy_experiment: Toy, cluster: Cluster, tmp_path: Path
) -> None:
    toy = toy_experiment
    # Every run takes a second or so, so that a node can be killed while its worker runs one.
    toy.train.write_text(
        toy.train.read_text().replace('MODE = "ok"', 'MODE = "slow"').replace("SLEEP = 0.0", "SLEEP = 1.2")
    )
    git(toy.repo, "commit", "-qam", "slow toy")
    remote = tmp_path / "origin.git"
    git(tmp_path, "init", "-q", "--bare", str(remote))
    git(toy.repo, "remote", "add", "origin", str(remote))
    # Every worker replays the same replies: each change may run on one worker only.
    replies = [toy.reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")]
    replies += [toy.reply(f"steps {k}", "STEPS = 4", f"STEPS = {k}") for k in range(5, 13)]
    path = toy.replay_file(replies)
    driver = subprocess.Popen(
        [sys.executable, "-m", "harness.commands.main", "run", "--tag", TAG, "--ray", cluster.address,
         "--agent", f"replay:{path}", "--device", "cpu", "--judge", "strict", "--baseline-runs", "1"],
        cwd=toy.repo, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    family = toy.repo / "results" / f"{TAG}.tsv"
    inflight = toy.repo / "results" / TAG / "inflight.json"
    try:
        # Kill the first worker node once every worker is past its baseline and running an attempt.
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            try:
                running = json.loads(inflight.read_text())
            except (FileNotFoundError, ValueError):
                running = {}
            if len(running) == 3 and all(int(j["n"]) >= 1 for j in running.values()):
                break
            time.sleep(0.1)
        else:
            pytest.fail(
                "the workers never all ran an attempt: " + (driver.stdout.read() if driver.stdout else "")
            )
        cluster.kill_node(0)
        rows_at_kill = len(_rows(family))
        out, _ = driver.communicate(timeout=150)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 1, out[-4000:]  # the lost worker's exit; the others ended normally
    rows = _rows(family)
    workers = {r["worker"] for r in rows}
    assert workers == {"w0", "w1", "w2"}, out[-4000:]
    # No row lost or duplicated: one row per (worker, attempt), numbered without gaps per worker.
    for w in workers:
        numbers = [int(r["n"]) for r in rows if r["worker"] == w]
        assert sorted(numbers) == list(range(len(numbers))), (w, numbers)
    # The lost worker: its attempt in flight is a crash `interrupted`, and it has no row after it.
    lost = [w for w in workers if any(r["reason"] == "interrupted" for r in rows if r["worker"] == w)]
    assert len(lost) == 1, out[-4000:]
    assert [r for r in rows if r["worker"] == lost[0]][-1]["reason"] == "interrupted"
    assert f"[{lost[0]}] lost" in out
    # The night went on: the other workers wrote rows after the node died.
    assert len(rows) > rows_at_kill + 1
    # No change ran on two workers: every change that was run (a commit) ran once in the family;
    # the change the lost worker was running was released with it, so another worker may run it.
    ran = [r["description"] for r in rows if r["commit"] != "0000000" and r["reason"] != "interrupted"]
    ran = [d for d in ran if d != "baseline"]
    ran = [d for d in ran if not d.startswith("adopt ")]
    assert len(ran) == len(set(ran)), ran
    assert any(r["reason"].startswith("duplicate of #") for r in rows)
    # The family's best reached the workers that did not find it: adopted, confirmed, kept.
    finder = next(r["worker"] for r in rows if r["description"] == "lower")
    adopted = [r for r in rows if r["description"].startswith(f"adopt {finder} #") and r["worker"] != lost[0]]
    assert adopted and all(r["status"] == "keep" and r["val_bpb"] == "0.900000" for r in adopted), out[-4000:]
    # Kept commits travel through the remote, on each worker's branch.
    assert git(remote, "log", "-1", "--format=%s", f"autoresearch/{TAG}-{finder}") == "lower"
    for r in adopted:
        assert git(remote, "log", "-1", "--format=%s", f"autoresearch/{TAG}-{r['worker']}").startswith(
            "adopt "
        )
    assert json.loads(inflight.read_text()) == {}
    # --resume resumes the family on the two GPUs left: every worker continues its own tag (nothing
    # left to propose here), and the merged ledger keeps every row once.
    empty = toy.replay_file([], "empty.jsonl")
    resumed = subprocess.run(
        [sys.executable, "-m", "harness.commands.main", "run", "--tag", TAG, "--ray", cluster.address,
         "--agent", f"replay:{empty}", "--device", "cpu", "--judge", "strict", "--baseline-runs", "1", "--resume"],
        cwd=toy.repo, env=cluster.env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-2000:]
    assert "2 workers on the Ray cluster" in resumed.stdout
    assert "resuming fam-w0" in resumed.stdout and "resuming fam-w1" in resumed.stdout
    after = _rows(family)
    assert after[: len(rows)] == rows
    pairs = [(r["worker"], r["n"]) for r in after]
    assert len(pairs) == len(set(pairs))
