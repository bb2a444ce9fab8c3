"""git's own lock files, left behind by a harness killed inside a git command.

git takes a lock on a file by creating ``<file>.lock`` and removes it when done. A process
killed in between (kill -9, a power cut) leaves the lock, and every later git write on that
file fails with "Unable to create '...index.lock': File exists", so a night could not be
resumed. `clear_stale_locks` (called by `Ratchet.open` on --resume, with the tag lock held, so
no other harness works on the tag) removes the ones nobody holds.

A lock is stale when no live process of this user has it open and it is still there a moment
later (git renames a finished lock away within microseconds of closing it). A lock that a live
process holds is git at work (the person's own command, another tag's harness sharing
packed-refs): it is waited for, and if it stays held the resume stops with the holder's pid.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from harness.errors import RepoError

WAIT_SECONDS = 10.0  # how long a lock held by a live process is waited for before giving up


def clear_stale_locks(common: Path, worktree: Path, tag: str, refs: Sequence[str] = ()) -> list[Path]:
    """Remove stale locks of a tag: its worktree's git folder (index.lock, HEAD.lock, ...), its
    `refs` (full names) and packed-refs; returns the removed paths.

    `common` is the repository's common git folder. RepoError when a lock stays held.
    """
    candidates = [common / f"{ref}.lock" for ref in refs] + [common / "packed-refs.lock"]
    gitdirs = {common / "worktrees" / tag}
    pointer = worktree / ".git"  # a worktree's .git is a file: "gitdir: <its folder>"
    with contextlib.suppress(OSError):
        text = pointer.read_text(errors="replace").strip() if pointer.is_file() else ""
        if text.startswith("gitdir:"):
            gitdirs.add(Path(text.removeprefix("gitdir:").strip()))
    for gitdir in gitdirs:
        if gitdir.is_dir():
            candidates += sorted(gitdir.glob("*.lock"))
    locks = [p for p in candidates if p.is_file()]
    if not locks:
        return []
    time.sleep(0.2)  # a lock git is about to rename away is gone by now
    removed = []
    for lock in locks:
        deadline = time.monotonic() + WAIT_SECONDS
        while lock.exists():
            holders = holders_of(lock)
            if not holders:
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()
                removed.append(lock)
                break
            if time.monotonic() >= deadline:
                who = ", ".join(f"pid {p.pid} ({' '.join(_cmdline(p))[:80]})" for p in holders[:3])
                raise RepoError(
                    f"git's lock {lock} is held by {who}; let it finish (or stop it), then run the same "
                    "command again with --resume"
                )
            time.sleep(0.2)
    return removed


def holders_of(path: Path) -> list[psutil.Process]:
    """Live processes of this user (other than this one) that have `path` open."""
    me, uid, found = os.getpid(), os.getuid(), []
    target = str(path)
    for p in psutil.process_iter(["uids"]):
        try:
            if p.pid == me or p.info["uids"] is None or p.info["uids"].real != uid:
                continue
            if any(f.path == target for f in p.open_files()):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


def _cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return ["?"]
