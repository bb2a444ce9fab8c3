"""Durable small files: atomic writes, and the one lock between processes.

`write_atomic`: a reader (or a harness restarted after kill -9 or a power cut) sees the old
file or the whole new one, never a part: the bytes go to a temporary name in the same folder,
are fsynced, and one rename puts them in place; the folder is fsynced too, so the rename
itself survives. The new file keeps the permissions of the one it replaces (or gets `mode`).

`file_lock`: an exclusive lock on a lock file of its own (never on the data, which a lock
library may truncate), held through `filelock`; the kernel drops it when the holder dies.
The tag lock, the ledger's appends and the transplant queue all use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

import filelock


def write_atomic(path: Path, data: str | bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` (str is written as UTF-8) in one step.

    The permissions are `mode`, else those of the file being replaced, else the usual
    0o666 less the umask (a temporary file alone would be 0o600).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if mode is None:
        with contextlib.suppress(OSError):
            mode = stat.S_IMODE(os.stat(path).st_mode)
    name = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if mode is not None:
                os.fchmod(fh.fileno(), mode)
            os.fsync(fh.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Make a rename or unlink in `folder` durable (best effort: some filesystems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def file_lock(path: Path, *, wait: bool = True) -> filelock.FileLock:
    """An exclusive lock between processes on the lock file `path` (its folder is created).

    Use it as a context manager, or `acquire()` / `release()`. With `wait=False`, `acquire()`
    raises `filelock.Timeout` at once when another holder has it (another process, or another
    lock object of this one).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(path), timeout=-1 if wait else 0)
