"""The processes of a run: its process group, what is left of it when it ends, and its pid file.

The runner starts every run in its own session (a process group of its own) and, with the
sandbox, in its own PID namespace. This module is what it uses to make sure nothing of a run
is alive when the guard looks at the protected files:

* `kill_group`: SIGTERM the group, wait, SIGKILL what is left (a leader's grandchildren are in
  its group: dataloader workers, compile workers).
* `end_of_run`: after the run, every process of its PID namespace (sandboxed) or every process
  still carrying its AUTORESEARCH_RUN_ID (without the sandbox: a daemon that left the group but
  kept its environment) is SIGKILLed and counted.
* the pid file ``<log>.pid`` (pgid + create time) lets the next harness `kill_leftover` a group
  that a harness killed with -9 left behind (without the sandbox: with it, bwrap's
  --die-with-parent ends the run with the harness).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil

from harness.store.atomic import write_atomic

RUN_ID_ENV = "AUTORESEARCH_RUN_ID"


def pid_file(log_path: Path) -> Path:
    """Where the running child's process group is recorded: ``<log>.pid``."""
    return log_path.with_name(log_path.name + ".pid")


def kill_leftover(log_path: Path) -> bool:
    """Kill the process group recorded in ``<log>.pid`` by a harness that died; True if any was.

    The group is only killed when its members are the ones recorded: the leader's create time
    must match, or, with the leader gone, the members must have been born after it (a pid can
    be reused; a live process group id cannot). The pid file is removed either way.
    """
    path = pid_file(log_path)
    try:
        record = json.loads(path.read_text())
        pgid = int(record["pgid"])
        created = float(record["create_time"])
    except (OSError, ValueError, KeyError, TypeError):
        with contextlib.suppress(OSError):
            path.unlink()
        return False
    members = _group_members(pgid)
    ours = [p for p in members if _created(p) >= created - 0.01]
    leader = next((p for p in members if p.pid == pgid), None)
    if leader is not None and abs(_created(leader) - created) > 0.01:
        ours = []  # the pgid now belongs to an unrelated process that reused the pid
    killed = False
    if ours:
        killed = True
        kill_group(pgid, 5.0, None)
    with contextlib.suppress(OSError):
        path.unlink()
    return killed


def close(*fds: int) -> None:
    for fd in fds:
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)


def end_of_run(run_id: str, info_fd: int) -> int:
    """Kill whatever of the run is still alive; returns how many processes that was.

    Sandboxed (``info_fd`` holds bwrap's info): every process of the run's PID namespace. The
    kernel kills them once the namespace's first process is gone; waiting for that, and
    SIGKILLing any that linger, makes "nothing of the run is alive" a checked fact before the
    guard looks at the protected files. Without a sandbox: every process that still carries the
    run's AUTORESEARCH_RUN_ID in its environment (a daemon that left the process group).
    """
    namespace: int | None = None
    if info_fd >= 0:
        try:
            os.set_blocking(info_fd, False)
            info = json.loads(os.read(info_fd, 1 << 16) or b"{}")
            namespace = int(info["pid-namespace"]) if "pid-namespace" in info else None
        except (OSError, ValueError, TypeError):
            namespace = None
        finally:
            close(info_fd)
    found: set[int] = set()
    deadline = time.monotonic() + 5.0
    while True:
        alive = _in_namespace(namespace) if namespace is not None else _carrying(run_id)
        if not alive:
            return len(found)
        found |= alive
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            return len(found)
        time.sleep(0.05)


def _in_namespace(namespace: int) -> set[int]:
    """Live (non-zombie) processes in the PID namespace with this inode."""
    pids = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/pid").st_ino == namespace and not _zombie(int(entry.name)):
                pids.add(int(entry.name))
        except OSError:
            continue
    return pids


def _carrying(run_id: str) -> set[int]:
    """Live processes (of any group) whose environment holds this run's id."""
    pids = set()
    me = os.getpid()
    for p in psutil.process_iter():
        if p.pid == me:
            continue
        try:
            if p.environ().get(RUN_ID_ENV) == run_id and p.status() != psutil.STATUS_ZOMBIE:
                pids.add(p.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def _zombie(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.Error:
        return True


# --- process groups --------------------------------------------------------------------------


def kill_group(pgid: int, grace: float, proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM the group, wait up to ``grace`` s for it to go, then SIGKILL what is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        except PermissionError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if proc is not None:
                proc.poll()  # reap the leader so it does not linger as a zombie
            if not _group_alive(pgid):
                return
            time.sleep(0.05)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5.0)


def _group_alive(pgid: int) -> bool:
    """True while any non-zombie process is in the group."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return any(p.status() != psutil.STATUS_ZOMBIE for p in _group_members(pgid) if _exists(p))


def _group_members(pgid: int) -> list[psutil.Process]:
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _exists(p: psutil.Process) -> bool:
    try:
        return p.is_running()
    except psutil.Error:
        return False


def _created(p: psutil.Process) -> float:
    try:
        return float(p.create_time())
    except psutil.Error:
        return -1.0


def write_pid_file(log_path: Path, pid: int, command: str) -> None:
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        created = time.time()
    write_atomic(pid_file(log_path), json.dumps({"pgid": pid, "create_time": created, "command": command}))
