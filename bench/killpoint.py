"""Run `autoresearch` with one kill -9 armed at a chosen point of the night (for kill_campaign.py).

    python bench/killpoint.py PHASE CALL MODE DELAY -- run --tag T ...

PHASE names a function of the harness (`PHASES`); at its CALL-th call (1 = the first) the
process is killed with SIGKILL, `before` the call, `after` it, `during` it (a timer fires
DELAY seconds into the call), or `torn` (the ledger's row write: half the bytes reach the file,
then the kill). With `powercut` the whole process group of the harness dies at once (git
children included, like a power cut; the run, in its own session, survives as it would not,
and is the next harness's to kill). No production code knows about any of this: the functions
are wrapped here, before the harness's `main` runs.
"""

from __future__ import annotations

import functools
import importlib
import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

# phase -> (module, attribute path, a predicate on the call's arguments or None)
PHASES: dict[str, tuple[str, str, Callable[..., bool] | None]] = {
    "lock": ("harness.store.journal", "TagLock.claim", None),
    "proposal": ("harness.night.proposer", "Proposer.next", None),
    "commit": ("harness.store.git", "Ratchet.commit", None),
    "journal": ("harness.store.journal", "write_pending", None),
    "run": ("harness.night.runner", "run", None),
    "repeat": ("harness.night.measure", "Measurer.run", lambda self, n, k, **kw: k >= 1 and not kw.get("warmup")),
    "append": ("harness.store.ledger", "Ledger.append", None),
    "keep": ("harness.store.git", "Ratchet.keep", None),
    "revert": ("harness.store.git", "Ratchet.revert", None),
    "publish": ("harness.commands.run", "publish_if_upstream", None),
}
MODES = ("before", "after", "during", "torn")


def _die(powercut: bool) -> None:
    sys.stdout.flush()
    if powercut:
        os.killpg(os.getpgid(0), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def arm(phase: str, call: int, mode: str, delay: float, powercut: bool = False) -> None:
    """Wrap the phase's function so that its `call`-th matching call ends the process."""
    module_name, attr, match = PHASES[phase]
    module = importlib.import_module(module_name)
    owner: Any = module
    *path, name = attr.split(".")
    for part in path:
        owner = getattr(owner, part)
    original = getattr(owner, name)
    seen = 0

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        nonlocal seen
        if match is not None and not match(*args, **kwargs):
            return original(*args, **kwargs)
        seen += 1
        if seen != call:
            return original(*args, **kwargs)
        if mode == "before":
            _die(powercut)
        if mode == "during":
            timer = threading.Timer(delay, _die, args=(powercut,))
            timer.daemon = True
            timer.start()
        if mode == "torn":
            _tear_next_write(powercut)
        result = original(*args, **kwargs)
        if mode in ("after", "torn", "during"):
            _die(powercut)
        return result

    setattr(owner, name, wrapper)


def _tear_next_write(powercut: bool) -> None:
    """The next os.write of the ledger puts half its bytes in the file, then the process dies."""
    ledger = importlib.import_module("harness.store.ledger")
    real_write = os.write

    def half_write(fd: int, data: Any) -> int:
        view = memoryview(data)
        real_write(fd, view[: max(1, len(view) // 2)])
        os.fsync(fd)
        _die(powercut)
        return 0

    ledger.os = _OsProxy(half_write)  # type: ignore[attr-defined]


class _OsProxy:
    """The `os` module as the ledger sees it, with `write` replaced."""

    def __init__(self, write: Callable[[int, Any], int]) -> None:
        self.write = write

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)


def main(argv: list[str]) -> int:
    sep = argv.index("--")
    phase, call, mode, delay, *rest = argv[:sep]
    arm(phase, int(call), mode, float(delay), powercut="powercut" in rest)
    from harness.commands.main import main as harness_main

    return harness_main(argv[sep + 1 :])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
