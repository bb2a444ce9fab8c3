"""Every process a run starts is gone when the run ends, also without a sandbox.

The runner starts each run in a session of its own and kills its process group, which catches
the usual (a shell's children, dataloader workers). A process can leave the group (``setsid``,
a double fork), close its pipes so the harness sees the run end, and outlive its parent; on its
own the group kill misses it. Two things find it anyway:

* the harness is a child subreaper (Linux ``prctl(PR_SET_CHILD_SUBREAPER)``, set by
  `become_subreaper` before the first run): a process whose parent exits is re-parented to
  the harness instead of init, so everything a run started stays a descendant of the harness
  for as long as the harness lives. `sweep` ends a run by killing every descendant of the
  harness that is outside the harness's own session and born since the run started (a run
  starts in a new session and no process can move into another existing session, so this
  never touches what the harness itself started, git for instance), then reaps them.
* each run carries a cookie in its environment (`COOKIE`, a random token the runner records
  in the pid file): after a harness was killed -9, its orphans belong to init, and
  `kill_cookie` finds the ones that kept their environment (``--resume`` calls it).

Not contained: on other systems than Linux there is no subreaper, so an orphan that also
scrubbed its environment escapes; a process running as another user (setuid) cannot be
killed. The integrity sandbox's own process namespace contains both.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import time

import psutil

COOKIE = "AUTORESEARCH_RUN_ID"
_PR_SET_CHILD_SUBREAPER = 36
_subreaper: bool | None = None


def become_subreaper() -> bool:
    """Make this process the subreaper of its descendants (Linux); whether it is one."""
    global _subreaper
    if _subreaper is None:
        _subreaper = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                _subreaper = libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            except (OSError, AttributeError):
                _subreaper = False
    return _subreaper


def strays(since: float) -> list[psutil.Process]:
    """Descendants of this process outside its session, born at or after `since` (a psutil
    create_time: the run leader's, so both come from the same clock)."""
    me = psutil.Process()
    try:
        own_session = os.getsid(0)
        children = me.children(recursive=True)
    except (psutil.Error, OSError):
        return []
    found = []
    for p in children:
        try:
            if (
                os.getsid(p.pid) != own_session
                and p.create_time() >= since - 0.02
                and p.status() != psutil.STATUS_ZOMBIE  # already dead: only reaped
            ):
                found.append(p)
        except (psutil.Error, OSError):
            continue  # gone already, or a zombie whose session cannot be read: reaped below
    return found


def sweep(since: float, grace: float = 1.0) -> int:
    """Kill every process a run started since `since` that is still around; how many there were."""
    procs = strays(since)
    if procs:
        _terminate(procs, grace)
    _reap()
    return len(procs)


def kill_cookie(cookie: str, grace: float = 1.0) -> int:
    """Kill every process of this user whose environment carries `cookie`; how many there were."""
    if not cookie:
        return 0
    me, uid = os.getpid(), os.getuid()
    procs = []
    for p in psutil.process_iter(["uids"]):
        try:
            if p.pid == me or p.info["uids"] is None or p.info["uids"].real != uid:
                continue
            if p.environ().get(COOKIE) == cookie:
                procs.append(p)
        except (psutil.Error, OSError):
            continue
    if procs:
        _terminate(procs, grace)
    _reap()
    return len(procs)


def _terminate(procs: list[psutil.Process], grace: float) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for p in procs:
            with contextlib.suppress(psutil.Error, OSError):
                p.send_signal(sig)
        end = time.monotonic() + (grace if sig == signal.SIGTERM else 5.0)
        while time.monotonic() < end:
            _reap()
            procs = [p for p in procs if _running(p)]
            if not procs:
                return
            time.sleep(0.05)


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _reap() -> None:
    """Collect the exit status of children re-parented to us that have ended (no zombies pile up).

    Only processes outside this process's session are reaped: a child the harness started
    itself (git, a worker) is waited for by whoever started it."""
    try:
        children = psutil.Process().children()
        own_session = os.getsid(0)
    except (psutil.Error, OSError):
        return
    for p in children:
        try:
            if p.status() != psutil.STATUS_ZOMBIE:
                continue
            session = _session(p.pid)
        except psutil.Error:
            continue
        if session is None or session == own_session:
            continue
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p.pid, os.WNOHANG)


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None
