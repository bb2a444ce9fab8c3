"""The attempt in flight (`results/<tag>/pending.json`), the tag lock, and what --resume does.

Resume protocol: before a run, pending.json records the attempt (n, commit, parent,
description, reply, agent, model, tokens, cost). After the run the loop appends the row,
then keeps or reverts, then deletes pending.json. A harness killed at any instant (kill -9
included) therefore leaves one of three states, and the loop's recovery finishes each:

  no pending.json                  nothing was in flight: continue after the last row
  pending, its row already written the harness died between the row and keep/revert: redo that
  pending, no row                  the run was interrupted: kill a leftover child process group,
                                   log the attempt as a crash with reason `interrupted` (it is
                                   not re-run: the agent proposes afresh)

pending.json is written atomically, so it is either absent or whole. What it holds is the
loop's business (`harness.night.attempt.Attempt`); here it is a JSON object.

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


def write_pending(path: Path, record: Mapping[str, Any]) -> None:
    """Record the attempt in flight (its text fields with the harness's secrets redacted)."""
    write_atomic(path, redact(json.dumps(dict(record), indent=1)))


def read_pending(path: Path) -> dict[str, Any] | None:
    """The attempt in flight, or None; DataError when the file is not a JSON object."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        data, why = None, str(exc)
    else:
        why = "not a JSON object"
    if not isinstance(data, dict):
        raise DataError(
            f"{path} is corrupt ({why}); it records the attempt in flight when the harness stopped. "
            "Delete it to resume without that attempt."
        )
    return data


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

    def acquire(self) -> None:
        self._lock = file_lock(self.paths.lock, wait=False)  # creates the tag's folder
        try:
            self._lock.acquire()
        except filelock.Timeout:
            holder = lock_holder(self.paths)
            raise RepoError(
                f"tag {self.paths.tag!r} is already being run by another harness (pid {holder or 'unknown'}); "
                "wait for it, stop it (Ctrl-C), or pick another --tag"
            ) from None
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
    if not paths.lock.exists():
        return None
    probe = file_lock(paths.lock, wait=False)
    try:
        probe.acquire()
    except filelock.Timeout:
        try:
            text = paths.lock_owner.read_text().strip()
        except OSError:
            text = ""
        return int(text) if text.isdigit() else -1
    probe.release()
    return None
