"""Parquet text shards: the one on-disk format of every dataset (a single `text` column).

Written to a temporary name and renamed, so a shard that exists under its final name is
complete; `verify` reads a file's footer and row groups so a truncated or corrupt download is
never taken for a good one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prepare.atomic import atomic_path
from prepare.errors import DataError

ROW_GROUP_ROWS = 1024  # small row groups: the dataloader streams a shard without reading it whole


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def write_text_shard(path: Path, texts: Sequence[str]) -> int:
    """Write `texts` as a parquet shard at `path` atomically; returns its size in bytes."""
    table = pa.table({"text": pa.array(list(texts), type=pa.string())})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_ROWS, compression="zstd")
    return path.stat().st_size


def verify(path: Path) -> int:
    """Read the whole shard once; returns its row count or raises DataError naming the file."""
    try:
        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise DataError(f"{path} has no `text` column (columns: {', '.join(pf.schema_arrow.names)})")
        rows = 0
        for i in range(pf.num_row_groups):
            rows += pf.read_row_group(i, columns=["text"]).num_rows
        return rows
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path} is not a readable parquet file ({exc})") from exc


def iter_text_batches(paths: Sequence[Path]) -> Iterator[list[str]]:
    """The `text` column of each shard in order, one row group at a time."""
    for path in paths:
        try:
            pf = pq.ParquetFile(path)
            groups = range(pf.num_row_groups)
        except Exception as exc:
            raise DataError(
                f"cannot read {path} ({exc}); re-run `autoresearch prepare` to repair the cache"
            ) from exc
        for i in groups:
            texts = pf.read_row_group(i, columns=["text"]).column(0).to_pylist()
            yield [t for t in texts if t]
