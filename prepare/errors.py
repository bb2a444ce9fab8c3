"""prepare's errors: every one says what is wrong and the command that fixes it.

    DataError        a dataset is missing, incomplete, corrupt or does not match the run
    └── DownloadError  a shard could not be fetched after all retries

prepare stands alone (it never imports the harness), so these are plain exceptions. Both
command lines treat them as bad input: `python -m prepare` and `autoresearch` (which
recognises this class next to its own errors) print the message on one line and exit with
`exit_code`.
"""

from __future__ import annotations


class DataError(Exception):
    """A dataset is missing, incomplete, corrupt, or does not match what the run expects."""

    exit_code = 2


class DownloadError(DataError):
    """A shard could not be fetched after all retries (host unreachable, 404, 5xx, truncated)."""
