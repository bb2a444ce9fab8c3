"""A small pandas API over results TSVs, for notebooks.

    from harness.review.api import load_results, load_summary
    df = load_results("nov21")                      # results/<tag>.tsv of the repo you are in
    df = load_results("path/to/other_results.tsv")  # any TSV in the 5-column format
    df[df.status == "keep"].plot(x="n", y="running_best", drawstyle="steps-post")

One row per attempt, in file order. Columns: `n` (0-based position), `commit`, the metric
column under its own name (e.g. `val_bpb`), `memory_gb`, `status`, `description`, every
extra column the file has (numeric ones converted to numbers), plus `kept` (bool) and
`running_best` (the best kept metric so far, direction-aware). Lines the lenient reader
cannot parse are skipped; their numbers and reasons are in `df.attrs["skipped"]`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from harness.errors import DataError
from harness.review.summary import Summary, infer_direction, metric_name, results_dir, summarize
from harness.store.ledger import better, read_any_tsv
from harness.store.paths import TagPaths


def resolve_path(tag_or_path: str | Path, root: Path | None = None) -> Path:
    """A TSV path from a tag (results/<tag>.tsv under the repo of `root`, default cwd) or a path."""
    candidate = Path(tag_or_path)
    if candidate.suffix == ".tsv" or candidate.is_file():
        return candidate
    path = TagPaths(results_dir(root or Path.cwd()).parent, str(tag_or_path)).tsv
    if not path.is_file():
        raise DataError(
            f"no results for tag {str(tag_or_path)!r} at {path}; pass a tag that ran here or a TSV path"
        )
    return path


def load_results(
    tag_or_path: str | Path, *, root: Path | None = None, direction: str | None = None
) -> pd.DataFrame:
    """One DataFrame row per attempt (see the module docstring for the columns)."""
    path = resolve_path(tag_or_path, root)
    rows, skipped = read_any_tsv(path)
    metric = metric_name(path)
    direction = direction or infer_direction(metric, rows)
    records: list[dict[str, Any]] = []
    best: float | None = None
    for i, r in enumerate(rows):
        if (
            r.status == "keep"
            and math.isfinite(r.metric)
            and (best is None or better(r.metric, best, direction))
        ):
            best = r.metric
        records.append(
            {
                "n": i,
                "commit": r.commit,
                metric: r.metric,
                "memory_gb": r.memory_gb,
                "status": r.status,
                "description": r.description,
                **{k: v for k, v in r.extra.items() if k != "n"},
                "kept": r.status == "keep",
                "running_best": best,
            }
        )
    df = pd.DataFrame.from_records(records)
    for column in df.columns:
        if not pd.api.types.is_numeric_dtype(df[column]) and column not in (
            "commit",
            "status",
            "description",
            "kept",
        ):
            converted = pd.to_numeric(df[column], errors="coerce")
            # Only a column whose every non-empty cell is a number becomes numeric.
            filled = df[column].astype(str).str.strip() != ""
            if converted[filled].notna().all() and filled.any():
                df[column] = converted
    df.attrs.update({"path": str(path), "metric": metric, "direction": direction, "skipped": skipped})
    return df


def load_summary(
    tag_or_path: str | Path, *, root: Path | None = None, direction: str | None = None
) -> Summary:
    """The report's summary of a tag or TSV (the same numbers as `autoresearch report --json`)."""
    path = resolve_path(tag_or_path, root)
    rows, skipped = read_any_tsv(path)
    return summarize(rows, metric_name(path), direction, skipped, str(path))
