"""Run one experiment as a child process group, stream its log, and kill it when it misbehaves.

`run()` starts the experiment's command (``python train.py``) through the shell in its own
session (so it leads a new process group), with cwd = the experiment folder, and streams its
stdout and stderr line by line into the log file and to an optional ``on_line`` callback.
It returns a `RunResult`; a crashing, hanging, NaN-ing or log-flooding child is a field of
that result, never an exception: the loop must go on after any run.

What is contained:
  * the whole process group: at the timeout, on a NaN/inf or > 100 loss, on a log flood, and
    when the harness is interrupted, the group gets SIGTERM, then SIGKILL after ``kill_grace``
    seconds; grandchildren (dataloader workers, compile workers) are in the group and go too.
    Members left behind by a leader that exited on its own are killed as well.
  * the log size: past ``max_log_bytes`` the log keeps its head plus one marker line.
  * optionally the address space (``memory_limit_bytes`` -> RLIMIT_AS in the child), for a
    runaway allocation on CPU. Do not use it with CUDA: the driver reserves huge virtual ranges.
  * secrets: `child_env()` builds an environment without API keys, tokens and passwords.

What is NOT contained:
  * a process that leaves the group on purpose (``setsid``, a double fork into a new session,
    a systemd-run unit): it is neither killed nor waited for (the log stops 2 s after the leader).
  * GPU memory held by a process outside the group, files the child writes, network access.
  * the harness itself being kill -9'ed: the group keeps running; the pid file ``<log>.pid``
    (pgid + create time, so a reused pid is never hit) lets the next harness `kill_leftover()` it.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import selectors
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import psutil

from harness.credentials import is_secret
from harness.night.metrics import last_loss as parse_loss
from harness.store.atomic import write_atomic

# A progress line whose loss is above this is diverging; the run is killed (kill_reason "loss").
LOSS_LIMIT = 100.0
# A "line" without a newline longer than this is cut, so a child printing one endless line
# cannot exhaust the harness's memory.
MAX_LINE_BYTES = 1 << 20
# After the leader exits, how long to keep reading output held open by stray processes.
DRAIN_SECONDS = 2.0
_READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class RunResult:
    """How one run ended. ``exit_code`` is None when the harness killed it."""

    exit_code: int | None
    timed_out: bool
    kill_reason: str | None  # "timeout" | "nan" | "loss" | "log_flood" | None
    wall_seconds: float
    log_path: Path
    last_loss: float | None


def child_env(base: Mapping[str, str], extra: Mapping[str, str]) -> dict[str, str]:
    """The experiment's environment: ``base`` overlaid with ``extra``, minus every secret.

    Secrets are names ending in _KEY, _TOKEN or _CREDENTIALS, names containing SECRET, PASSWORD
    or PASSWD, and anything starting with ANTHROPIC_ or OPENAI_ (base URLs included: the
    experiment has no business talking to the agent's provider). They are dropped from ``extra`` too.
    PYTHONUNBUFFERED=1 is set unless given, so lines reach the log as they are printed.
    """
    env = {k: v for k, v in base.items() if not is_secret(k)}
    env.update({k: v for k, v in extra.items() if not is_secret(k)})
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def resolve_python(command: str) -> str:
    """``command`` with a leading ``python``/``python3`` replaced by the harness's own interpreter.

    Under cron, systemd, pipx or an un-activated virtual environment, the ``python`` on PATH is
    missing or another interpreter without torch; the one running the harness has the project's
    packages. Any other command (``./bench.sh``, ``/opt/py/bin/python x.py``) is left alone.
    """
    head, sep, rest = command.lstrip().partition(" ")
    if head in ("python", "python3"):
        return shlex.quote(sys.executable) + sep + rest
    return command


def pid_file(log_path: Path) -> Path:
    """Where the running child's process group is recorded: ``<log>.pid``."""
    return log_path.with_name(log_path.name + ".pid")


def run(
    command: str,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    *,
    timeout: float,
    max_log_bytes: int = 50_000_000,
    on_line: Callable[[str], None] | None = None,
    memory_limit_bytes: int | None = None,
    kill_grace: float = 5.0,
) -> RunResult:
    """Run ``command`` (a shell command line) in ``cwd`` and wait for it, at most ``timeout`` s.

    ``env`` is passed as is (build it with `child_env`). The log at ``log_path`` is created
    (parents included) and truncated. ``on_line`` gets every line, without its terminator;
    ``\\r``-separated progress updates count as lines. KeyboardInterrupt (or an exception from
    ``on_line``) kills the group, notes it in the log and is re-raised.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec = _limit_memory(memory_limit_bytes) if memory_limit_bytes else None
    start = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                command,
                shell=True,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
            )
        except OSError as exc:  # e.g. cwd missing: the run failed, the harness did not
            log.write(f"[autoresearch] could not start {command!r} in {cwd}: {exc}\n".encode())
            return RunResult(127, False, None, time.monotonic() - start, log_path, None)
        _write_pid_file(log_path, proc.pid, command)
        stream = _Stream(log, max_log_bytes, on_line)
        try:
            kill_reason = _supervise(proc, stream, start + timeout, kill_grace)
        except BaseException:
            _kill_group(proc.pid, kill_grace, proc)
            stream.marker("interrupted: the harness stopped; the process group was killed")
            raise
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
            with contextlib.suppress(OSError):
                pid_file(log_path).unlink()
        if kill_reason == "timeout":
            stream.marker(f"killed (timeout): still running after {timeout:g} s")
        elif kill_reason in ("nan", "loss"):
            stream.marker(f"killed ({kill_reason}): loss {stream.last_loss} on a progress line")
        exit_code = None if kill_reason else proc.returncode
    return RunResult(
        exit_code=exit_code,
        timed_out=kill_reason == "timeout",
        kill_reason=kill_reason,
        wall_seconds=time.monotonic() - start,
        log_path=log_path,
        last_loss=stream.last_loss,
    )


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
        _kill_group(pgid, 5.0, None)
    with contextlib.suppress(OSError):
        path.unlink()
    return killed


# --- streaming -------------------------------------------------------------------------------


class _Stream:
    """Splits the child's bytes into lines, writes them to the log, watches the loss."""

    def __init__(self, log: BinaryIO, max_bytes: int, on_line: Callable[[str], None] | None) -> None:
        self.log = log
        self.max_bytes = max_bytes
        self.on_line = on_line
        self.written = 0
        self.flooded = False
        self.last_loss: float | None = None
        self.bad_loss: str | None = None  # "nan" | "loss" once seen
        self._buf = b""

    def feed(self, data: bytes, eof: bool = False) -> None:
        buf = self._buf + data
        start = 0
        n = len(buf)
        while start < n:
            i_n = buf.find(b"\n", start)
            i_r = buf.find(b"\r", start)
            cands = [i for i in (i_n, i_r) if i >= 0]
            if not cands:
                if n - start >= MAX_LINE_BYTES or eof:
                    self._line(buf[start:], b"")
                    start = n
                break
            end = min(cands)
            if buf[end : end + 1] == b"\r":
                if end + 1 == n and not eof:
                    break  # might be the first half of \r\n; wait for more
                term_end = end + 2 if buf[end + 1 : end + 2] == b"\n" else end + 1
            else:
                term_end = end + 1
            self._line(buf[start:end], buf[end:term_end])
            start = term_end
        self._buf = buf[start:]
        self.log.flush()

    def _line(self, body: bytes, term: bytes) -> None:
        if self.flooded:
            return
        raw = body + term
        if self.written + len(raw) > self.max_bytes:
            self.flooded = True
            self.marker(f"killed (log_flood): the log reached its cap of {self.max_bytes} bytes")
            return
        self.log.write(raw)
        self.written += len(raw)
        if b"loss:" in body:
            loss = parse_loss(body.decode("utf-8", "replace"))
            if loss is not None:
                self.last_loss = loss
                if self.bad_loss is None:
                    if not math.isfinite(loss):
                        self.bad_loss = "nan"
                    elif loss > LOSS_LIMIT:
                        self.bad_loss = "loss"
        if self.on_line is not None and body:
            self.on_line(body.decode("utf-8", "replace"))

    def marker(self, text: str) -> None:
        """One line from the harness itself; allowed past the cap. Best effort: when the disk
        is full, the OSError that got us here is the one worth reporting, not this one."""
        with contextlib.suppress(OSError):
            self.log.write(f"\n[autoresearch] {text}\n".encode())
            self.log.flush()


def _supervise(proc: subprocess.Popen[bytes], stream: _Stream, deadline: float, grace: float) -> str | None:
    """Pump output until the child is done or must be killed; returns the kill reason."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    drain_until: float | None = None
    reason: str | None = None
    try:
        while True:
            now = time.monotonic()
            if drain_until is not None and now >= drain_until:
                break  # a process outside the group still holds the pipe
            wait = min(0.2, max(0.0, deadline - now))
            if sel.select(timeout=wait):
                try:
                    data = os.read(fd, _READ_CHUNK)
                except BlockingIOError:
                    data = b""
                else:
                    if not data:
                        stream.feed(b"", eof=True)
                        break
                    stream.feed(data)
            if stream.flooded:
                reason = "log_flood"
            elif stream.bad_loss is not None:
                reason = stream.bad_loss
            elif time.monotonic() >= deadline and proc.poll() is None:
                reason = "timeout"
            if reason is not None:
                _kill_group(proc.pid, grace, proc)
                break
            if drain_until is None and proc.poll() is not None:
                # The leader is done; anything left in its group is a stray. Kill it so the pipe
                # closes, and read what is still buffered for a short while.
                _kill_group(proc.pid, 0.5, proc)
                drain_until = time.monotonic() + DRAIN_SECONDS
    finally:
        sel.close()
    if reason is None:
        stream.feed(b"", eof=True)
    proc.wait()
    return reason


# --- process groups --------------------------------------------------------------------------


def _kill_group(pgid: int, grace: float, proc: subprocess.Popen[bytes] | None) -> None:
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


def _write_pid_file(log_path: Path, pid: int, command: str) -> None:
    try:
        created = psutil.Process(pid).create_time()
    except psutil.Error:
        created = time.time()
    write_atomic(pid_file(log_path), json.dumps({"pgid": pid, "create_time": created, "command": command}))


def _limit_memory(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply
