"""prepare's errors: every one says what is wrong and the command that fixes it.

`DataError` subclasses `harness.errors.DataError` when the harness is importable (it is a
tiny, dependency-free module), so the CLI maps it to exit code 2 like every other bad input.
Standalone (prepare copied without the harness) it falls back to a plain Exception.
"""

from __future__ import annotations

try:
    from harness.errors import DataError as _Base
except ImportError:  # prepare used without the harness package

    class _Base(Exception):  # type: ignore[no-redef]
        exit_code = 2


class DataError(_Base):
    """A dataset is missing, incomplete, corrupt, or does not match what the run expects."""


class DownloadError(DataError):
    """A shard could not be fetched after all retries (host unreachable, 404, 5xx, truncated)."""
