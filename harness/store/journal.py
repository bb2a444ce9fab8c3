"""The attempt in flight (`results/<tag>/pending.json`), the tag lock, and what --resume does.

Resume protocol: before a run, pending.json records the attempt (n, commit, parent,
description, reply, agent, model, tokens, cost). After the run the loop records in it the
row it is about to write (`row`), appends that row, then keeps or reverts, then deletes
pending.json. A harness killed at any instant (kill -9 included) therefore leaves one of four
states, and the loop's recovery finishes each:

  no pending.json                  nothing was in flight: continue after the last row
  pending, its row already written the harness died between the row and keep/revert: redo that
  pending with a row, not written  the harness died between deciding and appending: append it
  pending, no row                  the run was interrupted: kill a leftover child process group,
                                   log the attempt as a crash with reason `interrupted` (it is
                                   not re-run: the agent proposes afresh)

pending.json is written atomically, so it is either absent or whole; it is read through its
schema (`harness.store.schema.Pending`), and must name the attempt after the last row (or the
last row itself): anything else is damage, reported with the command that clears it.

One harness per tag: `TagLock` holds `results/<tag>/lock` for the whole night and writes its
pid next to it (`lock.pid`), so `lock_holder` can say who is running.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import filelock

from harness.credentials import redact
from harness.errors import DataError, RepoError
from harness.store.atomic import file_lock, fsync_dir, write_atomic
from harness.store.paths import TagPaths
from harness.store.schema import REPLY_LIMIT, Pending, read_count, read_json, require_file_or_absent


def write_pending(path: Path, record: Mapping[str, Any]) -> None:
    """Record the attempt in flight (its text fields with the harness's secrets redacted)."""
    write_atomic(path, redact(json.dumps(dict(record), indent=1)))


def pending_fix(path: Path) -> str:
    return (
        f"it records the attempt in flight when the harness stopped; remove it (rm {path}) and run "
        "again with --resume to go on without that attempt"
    )


def read_pending(path: Path) -> Pending | None:
    """The attempt in flight, or None; DataError naming what is wrong when the file is damaged."""
    return read_json(path, Pending, fix=pending_fix(path), limit=2 * REPLY_LIMIT)


def check_pending(path: Path, pending: Pending | None, next_n: int) -> None:
    """The attempt in flight must be the ledger's next one (`next_n`) or its last one (row
    written, keep or revert not yet done); DataError otherwise."""
    if pending is not None and pending.n not in (next_n, next_n - 1):
        raise DataError(
            f"{path}: records attempt #{pending.n}, but the results' next attempt is #{next_n}; "
            f"{pending_fix(path)}"
        )


def clear_pending(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)  # the unlink must survive a power cut too


# --- one harness per tag ---------------------------------------------------------------------


class TagLock:
    """The tag's lock, held from `acquire` to `release` (or for a `with` block)."""

    def __init__(self, paths: TagPaths) -> None:
        self.paths = paths
        self._lock: filelock.FileLock | None = None

    def acquire(self, *, claim: bool = True) -> None:
        """Take the lock (RepoError when another harness has it); with `claim`, also write our pid."""
        for path in (self.paths.dir, self.paths.results):
            if path.exists() and not path.is_dir():
                raise DataError(
                    f"{path}: a file sits where the harness keeps a folder; move it away (mv {path} {path}.bak) "
                    "and run the same command again"
                )
        for path in (self.paths.lock, self.paths.lock_owner):
            require_file_or_absent(path, f"remove it (rm -r {path}) and run the same command again")
        self._lock = file_lock(self.paths.lock, wait=False)  # creates the tag's folder
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = lock_holder(self.paths)
            raise RepoError(
                f"tag {self.paths.tag!r} is already being run by another harness (pid {holder or 'unknown'}); "
                "wait for it, stop it (Ctrl-C), or pick another --tag"
            ) from None
        if claim:
            self.claim()

    def claim(self) -> None:
        """Write our pid next to the lock (once the state was read and found sound: a refused
        start changes nothing on disk)."""
        write_atomic(self.paths.lock_owner, f"{os.getpid()}\n")

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> TagLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(paths: TagPaths) -> int | None:
    """The pid holding the tag lock right now (-1 when unknown), or None. Takes nothing it keeps."""
    if not paths.lock.is_file():
        return None
    probe = file_lock(paths.lock, wait=False)
    try:
        probe.acquire()
    except filelock.Timeout:
        try:
            pid = read_count(paths.lock_owner, fix="")
        except DataError:
            pid = None  # damaged: whoever holds the lock rewrites it; only the number is unknown
        return pid if pid else -1
    except OSError:
        return -1
    probe.release()
    return None
