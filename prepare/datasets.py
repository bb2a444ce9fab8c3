"""Getting a dataset ready: the entry points the harness and the CLI call.

    check_ready(spec, cache_root)       the prepared dataset, or DataError naming the fix (builds nothing)
    ensure_ready(spec, cache_root)      the same, except a never-built `arithmetic` is generated first
    prepare_dataset(spec, cache_root)   build (or resume building) any dataset, then check it

The cache layout and the manifest are `prepare.cache`'s; `arithmetic` is generated here
(tiny and offline, so `Tokenizer.load()` can build it on demand); `climbmix` and `text:PATH`
are built by `prepare.sources`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from prepare import arithmetic, encoding, shards
from prepare.cache import (
    MANIFEST,
    DatasetInfo,
    check_ready,
    dataset_root,
    new_manifest,
    normalize_spec,
    write_manifest,
)
from prepare.errors import DataError

__all__ = [
    "DatasetInfo",
    "build_arithmetic",
    "check_ready",
    "ensure_ready",
    "normalize_spec",
    "prepare_dataset",
]


def ensure_ready(spec: str, cache_root: Path, *, need_val: bool = True) -> DatasetInfo:
    """check_ready, except that a never-built `arithmetic` dataset is generated first."""
    spec = normalize_spec(spec)
    if spec == "arithmetic" and not (dataset_root(spec, cache_root) / MANIFEST).exists():
        return build_arithmetic(Path(cache_root))
    return check_ready(spec, cache_root, need_val=need_val)


def build_arithmetic(cache_root: Path) -> DatasetInfo:
    """Generate the arithmetic dataset into a private folder, then rename it into place.

    Two runs building at once (several GPUs starting together) each build privately; the
    first rename wins and the other one's copy is discarded, so nobody reads a half-built folder.
    """
    cache_root = Path(cache_root).expanduser()
    cache_root.mkdir(parents=True, exist_ok=True)
    final = dataset_root("arithmetic", cache_root)
    work = Path(tempfile.mkdtemp(dir=cache_root, prefix=".arithmetic.", suffix=".tmp"))
    os.chmod(work, 0o755)
    try:
        data = work / "data"
        train = arithmetic.train_problems()
        names: list[str] = []
        for i in range(0, len(train), arithmetic.PROBLEMS_PER_SHARD):
            name = shards.shard_name(len(names))
            shards.write_text_shard(data / name, train[i : i + arithmetic.PROBLEMS_PER_SHARD])
            names.append(name)
        shards.write_text_shard(data / "val.parquet", arithmetic.val_problems())
        encoding.save(encoding.byte_level_encoding(), work / "tokenizer")
        manifest = new_manifest(
            "arithmetic", arithmetic.params(), data, names, "val.parquet", work / "tokenizer", "bytes"
        )
        write_manifest(work, manifest)
        if final.exists() and not (final / MANIFEST).exists():
            shutil.rmtree(final)  # a folder without a manifest is an unfinished build: nothing to keep
        try:
            os.rename(work, final)
        except OSError:
            if not (final / MANIFEST).exists():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return check_ready("arithmetic", cache_root)


def prepare_dataset(
    spec: str,
    cache_root: Path,
    *,
    num_shards: int = 10,
    base_url: str | None = None,
    workers: int = 8,
    max_chars: int = encoding.DEFAULT_MAX_CHARS,
    progress: bool = True,
) -> DatasetInfo:
    """Build (or resume building) a dataset in the cache and return it, checked."""
    spec = normalize_spec(spec)
    cache_root = Path(cache_root).expanduser()
    if spec == "arithmetic":
        root = dataset_root(spec, cache_root)
        try:
            return check_ready(spec, cache_root)
        except DataError:
            if root.exists():  # stale or mismatched: an explicit prepare replaces it
                stale = root.with_name(f".{root.name}.stale-{os.getpid()}")
                os.rename(root, stale)
                shutil.rmtree(stale, ignore_errors=True)
            return build_arithmetic(cache_root)
    from prepare.sources import prepare_remote_or_text  # imports httpx/rich: only when needed

    return prepare_remote_or_text(
        spec,
        cache_root,
        num_shards=num_shards,
        base_url=base_url,
        workers=workers,
        max_chars=max_chars,
        progress=progress,
    )
