"""The attempt in flight (`results/<tag>/pending.json`), the tag lock, and what --resume does.

Resume protocol: before a run, pending.json records {n, commit, parent,
description, reply}. After the run the loop appends the row, then keeps or reverts, then
deletes pending.json. A harness killed at any instant (kill -9 included) therefore leaves
one of three states, and `recover` finishes each:

  no pending.json                  nothing was in flight: continue after the last row
  pending, its row already written the harness died between the row and keep/revert: redo that
  pending, no row                  the run was interrupted: kill a leftover child process group,
                                   log the attempt as a crash with reason `interrupted` (it is
                                   not re-run: the agent proposes afresh)

pending.json is written atomically (tmp file, fsync, rename), so it is either absent or whole.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from harness.errors import DataError, RepoError
from harness.store.atomic import fsync_dir, write_atomic


@dataclass(frozen=True)
class Pending:
    """One attempt between `ratchet.commit` and the end of keep/revert."""

    n: int
    commit: str  # full sha
    parent: str  # full sha of the best commit it was made on
    description: str
    reply: str
    agent: str = ""
    model: str = ""


def write_pending(path: Path, pending: Pending) -> None:
    write_atomic(path, json.dumps(asdict(pending), indent=1))


def read_pending(path: Path) -> Pending | None:
    if not path.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return Pending(**data)
    except (ValueError, TypeError) as exc:
        raise DataError(
            f"{path} is corrupt ({exc}); it records the attempt in flight when the harness stopped. "
            "Delete it to resume without that attempt."
        ) from exc


def clear_pending(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)  # the unlink must survive a power cut too


# --- one harness per tag ---------------------------------------------------------------------


class TagLock:
    """An exclusive flock on `results/<tag>/lock`; the kernel drops it when the process dies."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: IO[str] | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held open for the whole night
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            tag = self.path.parent.name
            raise RepoError(
                f"tag {tag!r} is already being run by another harness (pid {holder}); "
                "wait for it, stop it (Ctrl-C), or pick another --tag"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> TagLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(path: Path) -> int | None:
    """The pid holding the tag lock right now, or None. Does not keep the lock."""
    if not path.exists():
        return None
    with open(path, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            text = fh.read().strip()
            return int(text) if text.isdigit() else -1
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


@contextlib.contextmanager
def holding(path: Path) -> Iterator[TagLock]:
    lock = TagLock(path)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()
