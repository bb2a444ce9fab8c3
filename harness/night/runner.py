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
  * with a `Sandbox` (harness.integrity.sandbox): everything else too. The command runs inside
    bubblewrap namespaces: a read-only view of what it needs, one writable scratch folder, no
    network, its own PID namespace. When the run ends, the runner checks that no process of
    that namespace is left (the kernel kills them when its first process exits; stragglers are
    SIGKILLed and counted in `RunResult.stragglers`).
  * without a sandbox, a process that left the group on purpose (``setsid``, a double fork into
    a new session) but kept its environment: every run carries a random AUTORESEARCH_RUN_ID, and
    processes that still carry it after the run are SIGKILLed (and counted as stragglers).
  * marker lines: a line starting with ``@@autoresearch <name>`` (prepare's dataloader prints
    ``first-batch``, the evaluation ``hand-off``) is timestamped on receipt by the harness's own
    clock (`RunResult.markers`), which is how the budget is measured outside the train file.

What is NOT contained without a sandbox:
  * a process that leaves the group and scrubs its environment (``env -i``) or asks another
    service to run it (a systemd-run unit): it is neither killed nor waited for.
  * GPU memory held by a process outside the group, files the child writes, network access.
  * the harness itself being kill -9'ed: the group keeps running; the pid file ``<log>.pid``
    (pgid + create time, so a reused pid is never hit) lets the next harness `kill_leftover()` it.
    (With the sandbox the run dies with the harness: bwrap's --die-with-parent.)

The processes themselves (groups, what is left after a run, the pid file) are
`harness.night.reaper`'s; this module streams, watches and decides when to kill.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import secrets
import selectors
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from harness.integrity.budget import Marker
from harness.integrity.sandbox import Sandbox
from harness.night.metrics import last_loss as parse_loss
from harness.night.metrics import progress_pct
from harness.night.reaper import (
    RUN_ID_ENV,
    close,
    end_of_run,
    kill_group,
    kill_leftover,
    pid_file,
    write_pid_file,
)

__all__ = ["Marker", "RunResult", "kill_leftover", "pid_file", "resolve_python", "run"]

# A progress line whose loss is above this is diverging; the run is killed (kill_reason "loss").
LOSS_LIMIT = 100.0
# A "line" without a newline longer than this is cut, so a child printing one endless line
# cannot exhaust the harness's memory.
MAX_LINE_BYTES = 1 << 20
# After the leader exits, how long to keep reading output held open by stray processes.
DRAIN_SECONDS = 2.0
_READ_CHUNK = 1 << 16
#: a line the harness timestamps on receipt: ``@@autoresearch <name> [<payload>]``
MARKER_PREFIX = b"@@autoresearch "
MAX_MARKERS = 64  # a run printing markers in a loop cannot grow the harness's memory
# `python`, `python3` or `python3.12` as the first word of a run command
_PYTHON = re.compile(r"^python(3(\.\d+)?)?(?=\s|$)")


@dataclass(frozen=True)
class RunResult:
    """How one run ended. ``exit_code`` is None when the harness killed it."""

    exit_code: int | None
    timed_out: bool
    kill_reason: str | None  # "timeout" | "over_budget" | "nan" | "loss" | "log_flood" | "pruned" | None
    wall_seconds: float
    log_path: Path
    last_loss: float | None
    markers: tuple[Marker, ...] = ()
    stragglers: int = 0  # processes of the run still alive after it ended (then killed)
    sandboxed: bool = False


def resolve_python(command: str) -> str:
    """The run command with a leading `python` replaced by the harness's own interpreter.

    A run must use the interpreter (and packages) the harness was installed with, not whatever
    `python` a person's PATH or a pyenv shim finds first (and a shim needs $HOME, which a
    sandboxed run does not see)."""
    stripped = command.lstrip()
    if not _PYTHON.match(stripped):
        return command
    return shlex.quote(sys.executable) + _PYTHON.sub("", stripped, count=1)


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
    sandbox: Sandbox | None = None,
    redact: Callable[[str], str] | None = None,
    deadline: Callable[[Sequence[Marker]], float | None] | None = None,
    prune: Callable[[float, float], bool] | None = None,
) -> RunResult:
    """Run ``command`` (a shell command line) in ``cwd`` and wait for it, at most ``timeout`` s.

    ``env`` is passed as is (build it with `harness.integrity.environment`), plus a fresh
    AUTORESEARCH_RUN_ID. With ``sandbox``, the command runs inside it (None: as the harness's
    user, with the whole filesystem). A leading ``python`` is the harness's interpreter
    (`resolve_python`). The log at ``log_path`` is created (parents included) and truncated;
    ``redact`` (when given) is applied to every line before it reaches the log and ``on_line``.
    ``on_line`` gets every line, without its terminator; ``\\r``-separated progress updates count
    as lines. ``deadline`` maps the markers seen so far to the time (seconds after the start)
    at which the run is over budget, or None; past it the run is killed (kill_reason
    "over_budget"). ``prune`` is asked with (budget share in percent, loss) of every progress
    line; when it answers True the run is killed (kill_reason "pruned"). KeyboardInterrupt (or an exception from ``on_line``) kills the run, notes it
    in the log and is re-raised.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    preexec = _limit_memory(memory_limit_bytes) if memory_limit_bytes else None
    command = resolve_python(command)
    run_id = secrets.token_hex(16)
    info_r = info_w = -1
    argv: str | list[str] = command
    if sandbox is not None:
        info_r, info_w = os.pipe()
        argv = sandbox.wrap(["/bin/sh", "-c", command], cwd=cwd, info_fd=info_w)
    start = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            proc = subprocess.Popen(
                argv,
                shell=sandbox is None,
                cwd=cwd,
                env={**env, RUN_ID_ENV: run_id},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=preexec,
                pass_fds=(info_w,) if sandbox is not None else (),
            )
        except OSError as exc:  # e.g. cwd missing: the run failed, the harness did not
            log.write(f"[autoresearch] could not start {command!r} in {cwd}: {exc}\n".encode())
            close(info_r, info_w)
            return RunResult(127, False, None, time.monotonic() - start, log_path, None)
        close(info_w)
        write_pid_file(log_path, proc.pid, command)
        stream = _Stream(log, max_log_bytes, on_line, start, redact, prune)
        try:
            kill_reason = _supervise(proc, stream, start + timeout, kill_grace, deadline)
        except BaseException:
            kill_group(proc.pid, kill_grace, proc)
            end_of_run(run_id, info_r)
            stream.marker("interrupted: the harness stopped; the run was killed")
            raise
        finally:
            assert proc.stdout is not None
            proc.stdout.close()
            with contextlib.suppress(OSError):
                pid_file(log_path).unlink()
        stragglers = end_of_run(run_id, info_r)
        if kill_reason == "timeout":
            stream.marker(f"killed (timeout): still running after {timeout:g} s")
        elif kill_reason == "over_budget":
            stream.marker("killed (over budget): past the training time the harness allows")
        elif kill_reason == "pruned":
            stream.marker(
                f"killed (pruned): loss {stream.last_loss} clearly behind the best's at the same budget share"
            )
        elif kill_reason in ("nan", "loss"):
            stream.marker(f"killed ({kill_reason}): loss {stream.last_loss} on a progress line")
        if stragglers:
            stream.marker(f"killed {stragglers} process(es) of the run still alive after it ended")
        exit_code = None if kill_reason else proc.returncode
    return RunResult(
        exit_code=exit_code,
        timed_out=kill_reason == "timeout",
        kill_reason=kill_reason,
        wall_seconds=time.monotonic() - start,
        log_path=log_path,
        last_loss=stream.last_loss,
        markers=tuple(stream.markers),
        stragglers=stragglers,
        sandboxed=sandbox is not None,
    )


# --- streaming -------------------------------------------------------------------------------


class _Stream:
    """Splits the child's bytes into lines, writes them to the log, watches the loss, times markers."""

    def __init__(
        self,
        log: BinaryIO,
        max_bytes: int,
        on_line: Callable[[str], None] | None,
        start: float = 0.0,
        redact: Callable[[str], str] | None = None,
        prune: Callable[[float, float], bool] | None = None,
    ) -> None:
        self.log = log
        self.prune = prune
        self.pruned = False
        self.max_bytes = max_bytes
        self.on_line = on_line
        self.start = start
        self.redact = redact
        self.markers: list[Marker] = []
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
        if body.startswith(MARKER_PREFIX) and len(self.markers) < MAX_MARKERS:
            name, _, payload = body[len(MARKER_PREFIX) :].decode("utf-8", "replace").strip().partition(" ")
            self.markers.append(Marker(time.monotonic() - self.start, name, payload.strip()))
        if self.redact is not None:
            body = self.redact(body.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
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
                if self.prune is not None and not self.pruned and math.isfinite(loss):
                    share = progress_pct(body.decode("utf-8", "replace"))
                    self.pruned = share is not None and self.prune(share, loss)
        if self.on_line is not None and body:
            self.on_line(body.decode("utf-8", "replace"))

    def marker(self, text: str) -> None:
        """One line from the harness itself; allowed past the cap. Best effort: when the disk
        is full, the OSError that got us here is the one worth reporting, not this one."""
        with contextlib.suppress(OSError):
            self.log.write(f"\n[autoresearch] {text}\n".encode())
            self.log.flush()


def _supervise(
    proc: subprocess.Popen[bytes],
    stream: _Stream,
    deadline: float,
    grace: float,
    budget: Callable[[Sequence[Marker]], float | None] | None = None,
) -> str | None:
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
            elif stream.pruned and proc.poll() is None:
                reason = "pruned"
            elif time.monotonic() >= deadline and proc.poll() is None:
                reason = "timeout"
            elif budget is not None and proc.poll() is None:
                limit = budget(stream.markers)
                if limit is not None and time.monotonic() - stream.start > limit:
                    reason = "over_budget"
            if reason is not None:
                kill_group(proc.pid, grace, proc)
                break
            if drain_until is None and proc.poll() is not None:
                # The leader is done; anything left in its group is a stray. Kill it so the pipe
                # closes, and read what is still buffered for a short while.
                kill_group(proc.pid, 0.5, proc)
                drain_until = time.monotonic() + DRAIN_SECONDS
    finally:
        sel.close()
    if reason is None:
        stream.feed(b"", eof=True)
    proc.wait()
    return reason


def _limit_memory(limit: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return apply
