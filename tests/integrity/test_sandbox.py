"""The sandbox: real bubblewrap runs of real child processes through the runner.

Each test runs a small Python script inside `Sandbox.wrap` (via `runner.run(..., sandbox=)`) and
reads what it could see and do from its log. Skipped where `probe()` says no sandbox can be had.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from support.sandboxing import needs_sandbox

from harness.integrity.sandbox import Sandbox, _interpreter_paths, probe
from harness.night.runner import RunResult, resolve_python, run


def _layout(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A worktree with an experiment folder, a scratch folder, and a 'results' folder beside them."""
    worktree = tmp_path / "wt"
    (worktree / "exp").mkdir(parents=True)
    (worktree / "exp" / "data.txt").write_text("relative read works\n")
    scratch = tmp_path / "results" / "scratch"
    scratch.mkdir(parents=True)
    (tmp_path / "results" / "night.tsv").write_text("the ledger\n")
    return worktree, scratch, tmp_path / "results"


def _run(
    worktree: Path, script: str, sandbox: Sandbox | None, tmp_path: Path, timeout: float = 60
) -> RunResult:
    (worktree / "exp" / "probe.py").write_text(textwrap.dedent(script))
    home = str(tmp_path / "results" / "scratch")  # what the sandbox sets too
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONUNBUFFERED": "1",
        "HOME": home,
        "TMPDIR": home,
    }
    return run(
        "python probe.py", worktree / "exp", env, tmp_path / "run.log", timeout=timeout, sandbox=sandbox
    )


def _facts(tmp_path: Path) -> dict[str, object]:
    for line in (tmp_path / "run.log").read_text().splitlines():
        if line.startswith("FACTS "):
            return dict(json.loads(line[len("FACTS ") :]))
    raise AssertionError((tmp_path / "run.log").read_text())


SEE_AND_TOUCH = """
import json, os
facts = {"cwd": os.getcwd(), "home": os.environ["HOME"], "tmpdir": os.environ["TMPDIR"]}
facts["relative"] = open("data.txt").read().strip()
facts["root"] = sorted(os.listdir("/"))
facts["procs"] = len([p for p in os.listdir("/proc") if p.isdigit()])
for name, path in [("cwd_write", "out.txt"), ("ledger_read", LEDGER), ("ledger_write", LEDGER),
                   ("person_home", os.path.expanduser("~root/.bashrc"))]:
    try:
        if name.endswith("read") or name == "person_home":
            open(path).read()
        else:
            open(path, "a").write("x")
        facts[name] = "allowed"
    except OSError as exc:
        facts[name] = type(exc).__name__ + ": " + (exc.strerror or "")
open(os.path.join(os.environ["HOME"], "model.bin"), "w").write("weights")
facts["scratch_write"] = "allowed"
print("FACTS " + json.dumps(facts))
"""


@needs_sandbox
def test_the_run_sees_a_minimal_read_only_view(tmp_path: Path) -> None:
    worktree, scratch, results = _layout(tmp_path)
    script = SEE_AND_TOUCH.replace("LEDGER", repr(str(results / "night.tsv")))
    result = _run(worktree, script, Sandbox(scratch=scratch, read_only=(worktree,)), tmp_path)
    assert result.exit_code == 0 and result.sandboxed, (tmp_path / "run.log").read_text()
    facts = _facts(tmp_path)
    assert facts["cwd"] == str((worktree / "exp").resolve())
    assert facts["home"] == facts["tmpdir"] == str(scratch.resolve())
    assert facts["relative"] == "relative read works"
    # the system folders, and the top folder of each interpreter prefix bound read-only (a venv in a
    # checkout under /check, pyenv under /root)
    interpreter = {p.parts[1] for p in _interpreter_paths()}
    assert set(facts["root"]) <= {"bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "opt", "proc",
                                  "sbin", "tmp", "usr"} | interpreter  # fmt: skip
    assert facts["procs"] <= 4  # bwrap's init, the shell, python: nothing of the host
    assert "Read-only file system" in str(facts["cwd_write"])
    assert "No such file" in str(facts["ledger_read"]) and "No such file" in str(facts["person_home"])
    # a write next to the scratch folder lands in the sandbox's private tmpfs, never on the host
    assert facts["scratch_write"] == "allowed" and (scratch / "model.bin").read_text() == "weights"
    assert (results / "night.tsv").read_text() == "the ledger\n"
    assert not (worktree / "exp" / "out.txt").exists()


def test_without_a_sandbox_the_same_script_writes_everywhere(tmp_path: Path) -> None:
    """The control: the writes the sandbox refuses succeed without it."""
    worktree, _scratch, results = _layout(tmp_path)
    script = SEE_AND_TOUCH.replace("LEDGER", repr(str(results / "night.tsv")))
    result = _run(worktree, script, None, tmp_path)
    assert result.exit_code == 0 and not result.sandboxed
    facts = _facts(tmp_path)
    assert facts["cwd_write"] == facts["ledger_write"] == "allowed"
    assert (results / "night.tsv").read_text() == "the ledger\nx"


DAEMON = """
import os, sys, time
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() == 0:
        open(os.path.join(os.environ["HOME"], "daemon.pid"), "w").write(str(os.getpid()))
        time.sleep(600)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(0.3)
print("parent done")
"""


@needs_sandbox
def test_a_setsid_double_fork_daemon_dies_with_the_run(tmp_path: Path) -> None:
    worktree, scratch, _results = _layout(tmp_path)
    started = time.monotonic()
    result = _run(worktree, DAEMON, Sandbox(scratch=scratch, read_only=(worktree,)), tmp_path)
    assert result.exit_code == 0 and time.monotonic() - started < 30
    inner = int((scratch / "daemon.pid").read_text())  # its pid inside the namespace
    assert inner > 1
    # no `sleep`-ing python from this test is alive anywhere on the host
    leftovers = [
        p for p in psutil.process_iter(["cmdline"]) if "probe.py" in " ".join(p.info["cmdline"] or [])
    ]
    assert leftovers == []


def test_without_a_sandbox_a_daemon_that_keeps_its_environment_is_killed(tmp_path: Path) -> None:
    worktree, scratch, _results = _layout(tmp_path)
    result = _run(worktree, DAEMON, None, tmp_path)
    assert result.exit_code == 0
    assert result.stragglers == 1
    pid = int((scratch / "daemon.pid").read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the daemon outlived the run"
        time.sleep(0.05)


NETWORK = """
import socket, sys
s = socket.socket()
s.settimeout(3)
try:
    s.connect(("127.0.0.1", PORT))
    s.sendall(b"exfiltrated")
    print("CONNECTED")
except OSError as exc:
    print("BLOCKED", exc)
"""


def _listener() -> tuple[socket.socket, list[bytes]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    got: list[bytes] = []

    def serve() -> None:
        server.settimeout(10)
        try:
            conn, _ = server.accept()
            got.append(conn.recv(100))
            conn.close()
        except OSError:
            pass

    threading.Thread(target=serve, daemon=True).start()
    return server, got


@needs_sandbox
@pytest.mark.parametrize("network", [False, True])
def test_network_only_when_asked(tmp_path: Path, network: bool) -> None:
    worktree, scratch, _results = _layout(tmp_path)
    server, got = _listener()
    script = NETWORK.replace("PORT", str(server.getsockname()[1]))
    sandbox = Sandbox(scratch=scratch, read_only=(worktree,), network=network)
    _run(worktree, script, sandbox, tmp_path)
    log = (tmp_path / "run.log").read_text()
    server.close()
    if network:
        assert "CONNECTED" in log and got == [b"exfiltrated"]
    else:
        assert "BLOCKED" in log and got == []


@needs_sandbox
def test_hidden_paths_cannot_be_read_and_writable_paths_are_writable(tmp_path: Path) -> None:
    worktree, scratch, _results = _layout(tmp_path)
    cache = tmp_path / "cache"
    (cache / "val").mkdir(parents=True)
    (cache / "val" / "shard.parquet").write_text("validation rows")
    (cache / "val.bin").write_text("more validation rows")
    (cache / "train.bin").write_text("training rows")
    compile_cache = tmp_path / "compile"
    compile_cache.mkdir()
    script = f"""
import json, os
cache = {str(cache)!r}
facts = {{"train": open(os.path.join(cache, "train.bin")).read(),
         "val_dir": os.listdir(os.path.join(cache, "val"))}}
try:
    facts["val_file"] = open(os.path.join(cache, "val.bin")).read()
except OSError as exc:
    facts["val_file"] = exc.strerror
open(os.path.join({str(compile_cache)!r}, "kernel"), "w").write("compiled")
try:
    open(os.path.join(cache, "train.bin"), "w").write("poisoned")
    facts["poison"] = "allowed"
except OSError as exc:
    facts["poison"] = exc.strerror
print("FACTS " + json.dumps(facts))
"""
    sandbox = Sandbox(
        scratch=scratch,
        read_only=(worktree, cache),
        writable=(compile_cache,),
        hidden=(cache / "val", cache / "val.bin"),
    )
    result = _run(worktree, script, sandbox, tmp_path)
    assert result.exit_code == 0, (tmp_path / "run.log").read_text()
    facts = _facts(tmp_path)
    assert facts == {
        "train": "training rows",
        "val_dir": [],
        "val_file": "Permission denied",
        "poison": "Read-only file system",
    }
    assert (compile_cache / "kernel").read_text() == "compiled"
    assert (cache / "train.bin").read_text() == "training rows"


@needs_sandbox
def test_markers_are_timestamped_by_the_harness(tmp_path: Path) -> None:
    worktree, scratch, _results = _layout(tmp_path)
    script = """
import time
time.sleep(0.5)
print("@@autoresearch first-batch")
time.sleep(0.5)
print("@@autoresearch hand-off tokens=1024")
"""
    result = _run(worktree, script, Sandbox(scratch=scratch, read_only=(worktree,)), tmp_path)
    names = [(m.name, m.payload) for m in result.markers]
    assert names == [("first-batch", ""), ("hand-off", "tokens=1024")]
    first, hand_off = result.markers
    assert 0.4 < hand_off.seconds - first.seconds < 2.0
    assert first.seconds >= 0.4


def test_resolve_python_uses_the_harness_interpreter() -> None:
    exe = sys.executable
    assert resolve_python("python train.py") == f"{exe} train.py"
    assert resolve_python("  python3 -u train.py --x 1") == f"{exe} -u train.py --x 1"
    assert resolve_python("python3.11 train.py") == f"{exe} train.py"
    assert resolve_python("pythonic train.py") == "pythonic train.py"
    assert resolve_python("bash run.sh && python x.py") == "bash run.sh && python x.py"


def test_probe_says_why_not_without_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    ok, why = probe()
    assert not ok and "bubblewrap" in why and "not installed" in why
