"""prepare's climbmix download against a loopback shard server with injected faults."""

from __future__ import annotations

import errno
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import pytest
from support.fakes.shard_server import ShardServer, climbmix_files

from prepare import datasets, download
from prepare.errors import DataError, DownloadError

PROJECT = Path(__file__).resolve().parents[2]
NAMES = ["shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet", "shard_06542.parquet"]


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    return climbmix_files([0, 1, 2, 6542])


def quiet(_: str) -> None:
    pass


def fetch(server: ShardServer, dest: Path, names: list[str] = NAMES, **kw: object) -> download.DownloadReport:
    opts: dict = {
        "workers": 4,
        "retries": 4,
        "backoff": 0.01,
        "timeout": 5.0,
        "progress": False,
        "log": quiet,
    }
    opts.update(kw)
    return download.download(server.url, names, dest, **opts)


def no_temp_files(dest: Path) -> bool:
    return not [p for p in dest.iterdir() if p.name.startswith(".")] if dest.exists() else True


def test_faults_are_retried_and_files_are_byte_identical(tmp_path: Path, files: dict[str, bytes]) -> None:
    with ShardServer(files) as server:
        server.fail("shard_00000.parquet", "500", "500")
        server.fail("shard_00001.parquet", "truncate")
        server.fail("shard_00002.parquet", "corrupt", "500")
        report = fetch(server, tmp_path)
        assert sorted(report.downloaded) == sorted(NAMES)
        for name in NAMES:
            assert (tmp_path / name).read_bytes() == files[name]
        assert no_temp_files(tmp_path)
        served = server.downloads()
        second = fetch(server, tmp_path)
        assert second.downloaded == [] and sorted(second.skipped) == sorted(NAMES)
        assert server.downloads() == served  # the second run fetched nothing


def test_compressed_transfer_is_not_taken_for_a_truncated_one(
    tmp_path: Path, files: dict[str, bytes]
) -> None:
    # Content-Length counts the bytes on the wire (compressed), not the decoded body
    with ShardServer(files) as server:
        server.fail("shard_00000.parquet", "gzip")
        report = fetch(server, tmp_path, ["shard_00000.parquet"], retries=1)
        assert report.downloaded == ["shard_00000.parquet"]
        assert (tmp_path / "shard_00000.parquet").read_bytes() == files["shard_00000.parquet"]
        assert server.requests == [("shard_00000.parquet", "gzip")]


def test_404_fails_at_once_with_advice(tmp_path: Path, files: dict[str, bytes]) -> None:
    with ShardServer(files) as server:
        with pytest.raises(DownloadError, match=r"404.*--base-url"):
            fetch(server, tmp_path, ["shard_00099.parquet"])
        assert [n for n, _ in server.requests] == ["shard_00099.parquet"]  # not retried
    assert not (tmp_path / "shard_00099.parquet").exists() and no_temp_files(tmp_path)


def test_persistent_500_gives_up_after_retries(tmp_path: Path, files: dict[str, bytes]) -> None:
    with ShardServer(files) as server:
        server.fail("shard_00000.parquet", *["500"] * 10)
        with pytest.raises(DownloadError, match=r"after 3 attempts.*HTTP 500.*resumes"):
            fetch(server, tmp_path, ["shard_00000.parquet"], retries=3)
    assert not (tmp_path / "shard_00000.parquet").exists() and no_temp_files(tmp_path)


def test_unreachable_host(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match=r"could not download .*ConnectError"):
        download.download(
            f"http://127.0.0.1:{port}/x",
            ["shard_00000.parquet"],
            tmp_path,
            retries=2,
            backoff=0.01,
            progress=False,
            log=quiet,
        )
    assert no_temp_files(tmp_path)


class FullDisk(io.FileIO):
    """A real file that takes 10 kB and then fails like a full disk does (write(2) -> ENOSPC)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, "xb")

    def write(self, b: object) -> int:
        if self.tell() + len(b) > 10_000:  # type: ignore[arg-type]
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
        return super().write(b)  # type: ignore[arg-type]


def test_full_disk_is_reported_and_cleaned(tmp_path: Path, files: dict[str, bytes]) -> None:
    def opener(path: Path) -> BinaryIO:
        return FullDisk(path)  # type: ignore[return-value]

    with ShardServer(files) as server, pytest.raises(DataError, match=r"no space left.*Free some disk space"):
        fetch(server, tmp_path, ["shard_00000.parquet"], opener=opener)
    assert not (tmp_path / "shard_00000.parquet").exists() and no_temp_files(tmp_path)


def test_full_disk_on_a_real_tiny_tmpfs(tmp_path: Path, files: dict[str, bytes]) -> None:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(
            "cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN); the injected-ENOSPC test covers it"
        )
    try:
        with ShardServer(files) as server, pytest.raises(DataError, match="no space left"):
            fetch(server, mnt, ["shard_00000.parquet"])
        assert no_temp_files(mnt) and not (mnt / "shard_00000.parquet").exists()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_corrupt_shard_in_cache_is_fetched_again(tmp_path: Path, files: dict[str, bytes]) -> None:
    with ShardServer(files) as server:
        fetch(server, tmp_path)
        (tmp_path / "shard_00001.parquet").write_bytes(files["shard_00001.parquet"][:5000])
        report = fetch(server, tmp_path)
        assert report.repaired == ["shard_00001.parquet"] and report.downloaded == ["shard_00001.parquet"]
        assert (tmp_path / "shard_00001.parquet").read_bytes() == files["shard_00001.parquet"]


def test_stale_partial_file_of_a_killed_run_is_removed(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".shard_00000.parquet.{dead.stdout.strip()}.1234.part"
    stale.write_bytes(b"half a shard")
    mine = tmp_path / f".shard_00001.parquet.{os.getpid()}.1.part"
    mine.write_bytes(b"in flight")
    assert download.clean_stale_parts(tmp_path) == [stale]
    assert mine.exists()


def test_prepare_climbmix_end_to_end_then_nothing_to_do(tmp_path: Path, files: dict[str, bytes]) -> None:
    cache = tmp_path / "cache"
    with ShardServer(files) as server:
        server.fail("shard_00002.parquet", "500")
        info = datasets.prepare_dataset(
            "climbmix",
            cache,
            num_shards=3,
            base_url=server.url,
            workers=8,
            max_chars=10_000_000,
            progress=False,
        )
        assert [p.name for p in info.train_files] == NAMES[:3] and info.val_file.name == "shard_06542.parquet"
        assert info.manifest["tokenizer"]["vocab_size"] == 8192
        for name in NAMES:
            assert (info.root / "data" / name).read_bytes() == files[name]
        served = server.downloads()
        pkl = (info.tokenizer_dir / "tokenizer.pkl").stat().st_mtime_ns
        again = datasets.prepare_dataset("climbmix", cache, num_shards=3, base_url=server.url, progress=False)
        assert server.downloads() == served
        assert (info.tokenizer_dir / "tokenizer.pkl").stat().st_mtime_ns == pkl  # not retrained
        assert again.manifest["tokenizer"]["sha256"] == info.manifest["tokenizer"]["sha256"]
    assert datasets.check_ready("climbmix", cache).spec == "climbmix"


def test_ctrl_c_leaves_nothing_partial_and_next_run_resumes(tmp_path: Path, files: dict[str, bytes]) -> None:
    cache = tmp_path / "cache"
    data = cache / "climbmix" / "data"
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "PYTHONUNBUFFERED": "1"}
    with ShardServer(files) as server:
        server.fail("shard_00001.parquet", "stall")  # keeps one download in flight
        cmd = [
            sys.executable,
            "-m",
            "prepare",
            "--dataset",
            "climbmix",
            "--num-shards",
            "3",
            "--base-url",
            server.url,
            "--cache-dir",
            str(cache),
            "--no-progress",
        ]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while not list(data.glob(".shard_00001.parquet.*.part")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert list(data.glob(".shard_00001.parquet.*.part")), "the stalled download never started"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        assert proc.returncode == 130, out
        assert "interrupted" in out and "resume" in out
        assert not (data / "shard_00001.parquet").exists()
        assert no_temp_files(data)
        assert not (cache / "climbmix" / "manifest.json").exists()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        for name in NAMES:
            assert (data / name).read_bytes() == files[name]


@pytest.mark.parametrize("url", ["ftp://example.org/shards", "no-scheme-or-host", "http://"])
def test_a_malformed_base_url_is_refused_before_any_download(tmp_path: Path, url: str) -> None:
    with pytest.raises(DataError, match="--base-url"):
        download.Downloader(url, tmp_path / "data")
    assert not (tmp_path / "data").exists()
