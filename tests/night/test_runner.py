"""The runner on real child processes: exits, crashes, hangs, NaNs, floods, grandchildren."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from harness.night.runner import RunResult, kill_leftover, pid_file, run

PY = sys.executable


def script(tmp_path: Path, body: str, name: str = "train.py") -> str:
    """Write a child script into the experiment folder; return the command that runs it."""
    (tmp_path / name).write_text(textwrap.dedent(body))
    return f"{PY} {name}"


def go(tmp_path: Path, command: str, **kw: object) -> RunResult:
    kw.setdefault("timeout", 60.0)
    env = dict(os.environ)
    return run(command, tmp_path, env, tmp_path / "runs" / "0.log", **kw)  # type: ignore[arg-type]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_for(path: Path, seconds: float = 30.0) -> None:
    end = time.monotonic() + seconds
    while not path.exists() or not path.read_text().strip():
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


SPAWN_GRANDCHILD = """
    import subprocess, sys, time, pathlib
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    pathlib.Path("grandchild.pid").write_text(str(g.pid))
    print("spawned", g.pid, flush=True)
    time.sleep(300)
"""


def test_success_streams_lines_to_log_and_callback(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        """
        import os, sys
        print("cwd", os.getcwd())
        for i in range(5):
            print(f"step {i:05d} ({i*20:.1f}%) | loss: {3.0 - i/10:.6f} | dt: 1ms")
        print("warning on stderr", file=sys.stderr)
        print("---")
        print("val_bpb:          0.997900")
        """,
    )
    lines: list[str] = []
    res = go(tmp_path, cmd, on_line=lines.append)
    assert res.exit_code == 0 and res.kill_reason is None and not res.timed_out
    assert res.last_loss == pytest.approx(2.6)
    assert lines[0] == f"cwd {tmp_path}"
    assert "warning on stderr" in lines and lines[-1] == "val_bpb:          0.997900"
    log = res.log_path.read_text()
    assert log.splitlines() == lines
    assert not pid_file(res.log_path).exists()
    assert res.wall_seconds >= 0


def test_carriage_return_progress_lines_are_lines(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        """
        import sys
        for i in range(3):
            print(f"\\rstep {i:05d} ({i*30.0:.1f}%) | loss: {5.0 - i:.6f} |", end="", flush=True)
        print()
        print("---\\r\\nval_bpb: 1.0")
        """,
    )
    lines: list[str] = []
    res = go(tmp_path, cmd, on_line=lines.append)
    assert [ln for ln in lines if "loss:" in ln] == [
        f"step {i:05d} ({i * 30.0:.1f}%) | loss: {5.0 - i:.6f} |" for i in range(3)
    ]
    assert "---" in lines and lines[-1] == "val_bpb: 1.0"
    assert res.last_loss == pytest.approx(3.0)
    # the log is byte-identical to what the child printed
    assert res.log_path.read_bytes().startswith(b"\rstep 00000 (0.0%)")


def test_crash_is_an_exit_code_not_an_exception(tmp_path: Path) -> None:
    cmd = script(tmp_path, "raise SystemExit('boom: bad config')\n")
    res = go(tmp_path, cmd)
    assert res.exit_code == 1 and res.kill_reason is None
    assert "boom: bad config" in res.log_path.read_text()


def test_unstartable_command_is_a_result(tmp_path: Path) -> None:
    res = go(tmp_path, "definitely-not-a-command-xyz")
    assert res.exit_code == 127
    missing = run("true", tmp_path / "nope", {}, tmp_path / "r.log", timeout=5)
    assert missing.exit_code == 127 and "could not start" in missing.log_path.read_text()


def test_timeout_kills_the_whole_group_grandchildren_included(tmp_path: Path) -> None:
    cmd = script(tmp_path, SPAWN_GRANDCHILD)
    res = go(tmp_path, cmd, timeout=3.0, kill_grace=2.0)
    assert res.timed_out and res.kill_reason == "timeout" and res.exit_code is None
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert gone(grandchild)
    assert 3.0 <= res.wall_seconds < 60
    log = res.log_path.read_text()
    assert "spawned" in log and "killed (timeout)" in log
    assert not pid_file(res.log_path).exists()


def test_sigterm_ignored_gets_sigkill(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        """
        import signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ignoring TERM", flush=True)
        while True:
            time.sleep(1)
        """,
    )
    res = go(tmp_path, cmd, timeout=2.0, kill_grace=0.5)
    assert res.kill_reason == "timeout" and res.exit_code is None


def test_leftover_members_are_killed_when_the_leader_exits(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        """
        import subprocess, sys, pathlib
        g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
        pathlib.Path("grandchild.pid").write_text(str(g.pid))
        print("---\\nval_bpb: 1.25", flush=True)
        """,
    )
    res = go(tmp_path, cmd, timeout=120.0)
    assert res.exit_code == 0 and res.kill_reason is None
    assert res.wall_seconds < 60  # did not wait for the stray's 300 s
    assert gone(int((tmp_path / "grandchild.pid").read_text()))


@pytest.mark.parametrize(("value", "reason"), [("nan", "nan"), ("inf", "nan"), ("123.5", "loss")])
def test_fast_fail_on_bad_loss(tmp_path: Path, value: str, reason: str) -> None:
    cmd = script(
        tmp_path,
        f"""
        import time
        for i in range(3):
            print(f"step {{i:05d}} (1.0%) | loss: 4.5 | dt: 1ms", flush=True)
        print("step 00003 (1.3%) | loss: {value} | dt: 1ms", flush=True)
        time.sleep(300)
        """,
    )
    res = go(tmp_path, cmd, timeout=120.0, kill_grace=1.0)
    assert res.kill_reason == reason and res.exit_code is None and not res.timed_out
    assert res.wall_seconds < 60
    assert res.last_loss is not None
    if reason == "nan":
        assert not math.isfinite(res.last_loss)
    else:
        assert res.last_loss == pytest.approx(123.5)
    assert f"killed ({reason})" in res.log_path.read_text()


def test_val_loss_above_100_is_not_a_progress_loss(tmp_path: Path) -> None:
    cmd = script(tmp_path, "print('val_loss: 250.0')\nprint('loss: 99.5')\n")
    res = go(tmp_path, cmd)
    assert res.kill_reason is None and res.exit_code == 0 and res.last_loss == 99.5


def test_log_flood_keeps_the_head_and_a_marker(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        """
        import sys
        print("HEAD: starting", flush=True)
        i = 0
        while True:
            sys.stdout.write(f"spam line {i} " + "x" * 80 + "\\n")
            i += 1
        """,
    )
    cap = 200_000
    res = go(tmp_path, cmd, max_log_bytes=cap, timeout=120.0)
    assert res.kill_reason == "log_flood" and res.exit_code is None
    data = res.log_path.read_bytes()
    lines = data.splitlines()
    assert lines[0] == b"HEAD: starting"
    assert b"killed (log_flood)" in lines[-1]
    body = data[: data.rindex(b"\n[autoresearch]")]
    assert len(body) <= cap
    assert len(data) <= cap + len(lines[-1]) + 2  # the cap plus one marker line
    assert res.wall_seconds < 60


def test_one_endless_line_is_cut_and_capped(tmp_path: Path) -> None:
    cmd = script(tmp_path, "import sys\nwhile True:\n    sys.stdout.write('y' * 65536)\n")
    res = go(tmp_path, cmd, max_log_bytes=3_000_000, timeout=120.0)
    assert res.kill_reason == "log_flood"
    assert res.log_path.stat().st_size <= 3_000_000 + 200


def test_memory_limit_stops_a_runaway_allocation(tmp_path: Path) -> None:
    cmd = script(
        tmp_path,
        """
        try:
            hog = bytearray(4 * 1024**3)
        except MemoryError:
            print("MemoryError caught", flush=True)
            raise
        print("allocated?!")
        """,
    )
    res = go(tmp_path, cmd, memory_limit_bytes=1024**3)
    assert res.exit_code not in (0, None)
    assert "MemoryError" in res.log_path.read_text()


def test_pid_file_exists_while_the_child_runs(tmp_path: Path) -> None:
    cmd = script(tmp_path, "import time\nprint('hello', flush=True)\ntime.sleep(0.5)\nprint('bye')\n")
    log = tmp_path / "runs" / "0.log"
    seen: list[dict[str, float]] = []

    def look(line: str) -> None:
        if line == "hello":
            seen.append(json.loads(pid_file(log).read_text()))

    res = go(tmp_path, cmd, on_line=look)
    assert res.exit_code == 0 and len(seen) == 1
    assert seen[0]["pgid"] > 0 and seen[0]["create_time"] > 0
    assert not pid_file(log).exists()


def test_keyboard_interrupt_kills_the_group_and_reraises(tmp_path: Path) -> None:
    cmd = script(tmp_path, SPAWN_GRANDCHILD)

    def interrupt(line: str) -> None:
        if line.startswith("spawned"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        go(tmp_path, cmd, on_line=interrupt, kill_grace=2.0)
    assert gone(int((tmp_path / "grandchild.pid").read_text()))
    log = tmp_path / "runs" / "0.log"
    assert "interrupted" in log.read_text()
    assert not pid_file(log).exists()


@pytest.mark.parametrize("leader_alive", [True, False])
def test_kill_leftover_after_the_harness_was_kill_9ed(tmp_path: Path, leader_alive: bool) -> None:
    (tmp_path / "train.py").write_text(textwrap.dedent(SPAWN_GRANDCHILD))
    log = tmp_path / "runs" / "7.log"
    harness = subprocess.Popen(
        [
            PY,
            "-c",
            "import os, sys, pathlib; from harness.night.runner import run; "
            f"run(sys.executable + ' train.py', pathlib.Path({str(tmp_path)!r}), dict(os.environ), "
            f"pathlib.Path({str(log)!r}), timeout=600)",
        ]
    )
    try:
        wait_for(tmp_path / "grandchild.pid")
        wait_for(pid_file(log))
        record = json.loads(pid_file(log).read_text())
        os.kill(harness.pid, signal.SIGKILL)
        harness.wait()
        grandchild = int((tmp_path / "grandchild.pid").read_text())
        assert not gone(grandchild) and not gone(record["pgid"])  # the group outlived its harness
        if not leader_alive:  # only the leader died: its orphans still carry the group id
            os.kill(record["pgid"], signal.SIGKILL)
            end = time.monotonic() + 30
            while not gone(record["pgid"]):
                assert time.monotonic() < end
                time.sleep(0.05)
            assert not gone(grandchild)
        assert kill_leftover(log) is True
        assert gone(grandchild) and gone(record["pgid"])
        assert not pid_file(log).exists()
        assert kill_leftover(log) is False  # nothing recorded any more
    finally:
        if harness.poll() is None:
            harness.kill()
        pgid = locals().get("record", {}).get("pgid")
        if pgid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


def test_kill_leftover_leaves_a_reused_pid_alone(tmp_path: Path) -> None:
    bystander = subprocess.Popen([PY, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        log = tmp_path / "0.log"
        real = psutil.Process(bystander.pid).create_time()
        pid_file(log).write_text(json.dumps({"pgid": bystander.pid, "create_time": real - 1000.0}))
        assert kill_leftover(log) is False
        assert bystander.poll() is None
        assert not pid_file(log).exists()
        pid_file(log).write_text("not json")
        assert kill_leftover(log) is False
    finally:
        bystander.kill()
        bystander.wait()
