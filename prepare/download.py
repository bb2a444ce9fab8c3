"""Fetch parquet shards over HTTP: parallel, retried with backoff, verified, resumable.

Each shard is streamed to a hidden temporary name in the destination folder, checked (the
byte count against Content-Length, then the whole file read as parquet) and only then renamed
to its final name, so a file under a final name is always complete. A shard already there is
verified and skipped; a corrupt one is deleted and fetched again.

Failures and what happens:
    connection refused / DNS / timeout, 5xx, 408, 429, truncated body, unreadable parquet
        -> retried `retries` times with exponential backoff, then DownloadError
    404 and other 4xx   -> DownloadError at once (retrying cannot help; check --base-url)
    disk full (ENOSPC)  -> DataError at once, temporary file removed
    Ctrl-C              -> workers stop at their next chunk, remove their temporary files,
                           and KeyboardInterrupt propagates; the next run resumes
Temporary files left by a process that was killed outright are removed at the next start.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import errno
import os
import random
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

from prepare import shards
from prepare.errors import DataError, DownloadError

CHUNK = 1 << 20
RETRYABLE_STATUS = {408, 425, 429}
Opener = Callable[[Path], BinaryIO]


class _Retry(Exception):
    """One attempt failed in a way another attempt may fix."""


class _Cancelled(Exception):
    pass


@dataclass
class DownloadReport:
    downloaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # were present but corrupt, fetched again
    bytes: int = 0


def _temp_path(dest: Path, name: str) -> Path:
    return dest / f".{name}.{os.getpid()}.{threading.get_ident()}.part"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_parts(dest: Path) -> list[Path]:
    """Remove temporary files whose process is gone (a prepare killed with kill -9)."""
    removed = []
    for part in dest.glob(".*.part"):
        bits = part.name.split(".")
        pid = int(bits[-3]) if len(bits) >= 4 and bits[-3].isdigit() else -1
        if pid != os.getpid() and not _pid_alive(pid):
            part.unlink(missing_ok=True)
            removed.append(part)
    return removed


def _default_opener(path: Path) -> BinaryIO:
    return open(path, "xb")


def _checked_base_url(base_url: str) -> str:
    """The base URL without a trailing slash; a malformed one is bad input, said before any download."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise DataError(
            f"--base-url {base_url!r} is not a valid URL ({exc}); expected e.g. https://host/path"
        ) from None
    if url.scheme not in ("http", "https") or not url.host:
        raise DataError(f"--base-url {base_url!r} must be an http:// or https:// URL with a host")
    return base_url.rstrip("/")


class Downloader:
    """Downloads `names` from `base_url` into `dest`; see the module docstring for the fault model."""

    def __init__(
        self,
        base_url: str,
        dest: Path,
        *,
        workers: int = 8,
        retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 30.0,
        opener: Opener = _default_opener,
        log: Callable[[str], None] = print,
    ) -> None:
        self.base_url = _checked_base_url(base_url)
        self.dest = Path(dest)
        self.workers = max(1, workers)
        self.retries = max(1, retries)
        self.backoff = backoff
        self.timeout = timeout
        self.opener = opener
        self.log = log
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._sockets: dict[int, socket.socket] = {}  # in-flight transfers, so Ctrl-C can cut them short

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def run(self, names: Sequence[str], *, progress: bool = True) -> DownloadReport:
        self.dest.mkdir(parents=True, exist_ok=True)
        clean_stale_parts(self.dest)
        report = DownloadReport()
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
        )
        with (
            Progress(*columns, disable=not progress) as bar,
            httpx.Client(
                timeout=httpx.Timeout(self.timeout, connect=min(self.timeout, 10.0)), follow_redirects=True
            ) as client,
        ):
            task = bar.add_task("shards", total=len(names))

            def on_bytes(n: int) -> None:
                bar.update(
                    task,
                    completed=len(report.downloaded) + len(report.skipped),
                    description=f"shards ({report.bytes / 1e6:.0f} MB)",
                )

            with cf.ThreadPoolExecutor(self.workers, thread_name_prefix="download") as pool:
                futures = {pool.submit(self._one, client, name, report, on_bytes): name for name in names}
                try:
                    pending = set(futures)
                    while pending:  # wait in short slices so Ctrl-C reaches the main thread
                        done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_EXCEPTION)
                        for fut in done:
                            exc = fut.exception()
                            if exc is not None:
                                raise exc
                            bar.advance(task)
                except BaseException:
                    self._abort(futures)
                    raise
        return report

    def _abort(self, futures: dict[cf.Future[None], str]) -> None:
        """Stop every worker now: a read blocked on a silent server would otherwise wait for its timeout."""
        self.cancel.set()
        for fut in futures:
            fut.cancel()
        with self._lock:
            for sock in self._sockets.values():
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _one(
        self, client: httpx.Client, name: str, report: DownloadReport, on_bytes: Callable[[int], None]
    ) -> None:
        final = self.dest / name
        repaired = False
        if final.exists():
            try:
                shards.verify(final)
                with self._lock:
                    report.skipped.append(name)
                return
            except DataError as exc:
                self.log(f"{name}: present but corrupt ({exc}); fetching it again")
                final.unlink(missing_ok=True)
                repaired = True
        last = ""
        for attempt in range(1, self.retries + 1):
            if self.cancel.is_set():
                raise _Cancelled()
            try:
                size = self._attempt(client, name, final, report, on_bytes)
                with self._lock:
                    report.downloaded.append(name)
                    if repaired:
                        report.repaired.append(name)
                self.log(f"{name}: downloaded ({size / 1e6:.1f} MB)")
                return
            except _Retry as exc:
                last = str(exc)
            except httpx.TransportError as exc:  # connect/read errors, timeouts, bodies cut short
                last = f"{type(exc).__name__}: {exc}"
            if attempt < self.retries:
                delay = self.backoff * 2 ** (attempt - 1) * (1 + 0.25 * random.random())
                self.log(
                    f"{name}: attempt {attempt}/{self.retries} failed ({last}); retrying in {delay:.1f}s"
                )
                if self.cancel.wait(delay):
                    raise _Cancelled()
        raise DownloadError(
            f"could not download {self.url(name)} after {self.retries} attempts (last error: {last}). "
            "Check the network and --base-url, then run `autoresearch prepare` again: it resumes, "
            "keeping the shards already complete."
        )

    def _attempt(
        self,
        client: httpx.Client,
        name: str,
        final: Path,
        report: DownloadReport,
        on_bytes: Callable[[int], None],
    ) -> int:
        tmp = _temp_path(self.dest, name)
        tmp.unlink(missing_ok=True)
        try:
            with client.stream("GET", self.url(name)) as resp:
                if resp.status_code == 404 or (
                    400 <= resp.status_code < 500 and resp.status_code not in RETRYABLE_STATUS
                ):
                    raise DownloadError(
                        f"{self.url(name)} answered {resp.status_code} {resp.reason_phrase}: the shard is not there. "
                        "Check --base-url (it must serve shard_NNNNN.parquet files) and --num-shards."
                    )
                if resp.status_code != 200:
                    raise _Retry(f"HTTP {resp.status_code} {resp.reason_phrase}")
                expected = resp.headers.get("content-length")
                stream = resp.extensions.get("network_stream")
                sock = stream.get_extra_info("socket") if stream is not None else None
                if sock is not None:
                    with self._lock:
                        self._sockets[threading.get_ident()] = sock
                got = 0
                with self.opener(tmp) as f:
                    for chunk in resp.iter_bytes(CHUNK):
                        if self.cancel.is_set():
                            raise _Cancelled()
                        f.write(chunk)
                        got += len(chunk)
                        with self._lock:
                            report.bytes += len(chunk)
                        on_bytes(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
                # Content-Length counts the bytes on the wire: compressed ones under a Content-Encoding
                wire = resp.num_bytes_downloaded
            if expected is not None and int(expected) != wire:
                raise _Retry(f"truncated: got {wire} of {expected} bytes")
            try:
                shards.verify(tmp)
            except DataError as exc:
                raise _Retry(f"the downloaded file is not valid parquet ({exc})") from exc
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
            return got
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise DataError(
                    f"no space left to write {name} in {self.dest} ({os.strerror(exc.errno or 0)}). "
                    "Free some disk space (or use --cache-dir on a larger disk) and run `autoresearch prepare` "
                    "again: it resumes."
                ) from exc
            raise
        finally:
            with self._lock:
                self._sockets.pop(threading.get_ident(), None)
            tmp.unlink(missing_ok=True)


def download(
    base_url: str,
    names: Sequence[str],
    dest: Path,
    *,
    workers: int = 8,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    progress: bool = True,
    opener: Opener = _default_opener,
    log: Callable[[str], None] = print,
) -> DownloadReport:
    """Fetch the shards `names` into `dest`, skipping those already complete."""
    d = Downloader(
        base_url,
        dest,
        workers=workers,
        retries=retries,
        backoff=backoff,
        timeout=timeout,
        opener=opener,
        log=log,
    )
    return d.run(names, progress=progress)


def shard_names(num_shards: int, val_index: int) -> tuple[list[str], str]:
    return [shards.shard_name(i) for i in range(num_shards)], shards.shard_name(val_index)
