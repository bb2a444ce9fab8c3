"""A night in numbers: read a results TSV leniently and summarize it.

`summarize(rows)` computes what every morning view shows: counts, keep rate, baseline, best,
improvement, run hours (GPU hours where the rows ran on a GPU), the hardware, LLM cost, the kept
improvements with their deltas, the biggest hits and the crashes by reason. `experiments`,
`kept`, `discarded` and `crashed` count rows, the baseline's included; `attempts`,
`kept_attempts` and `keep_rate` leave the baseline out, and the views show those. The report, the plot, the HTML page, `compare`, `publish` and the
notebook API all read this one `Summary`, so they cannot disagree about a night.

Any TSV in the 5-column format works, including a hand-edited one: `load` skips the lines it
cannot read and lists them in `Summary.skipped_lines`; only a file with no readable row at
all is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, DataError, HarnessError
from harness.store import paths
from harness.store.git import Repo
from harness.store.ledger import Row, better, read_any_tsv

# Metric names that are better when larger; anything else defaults to minimize (val_bpb, loss).
_MAXIMIZE_HINTS = ("acc", "score", "per_s", "throughput", "tokens_s", "reward", "f1", "bleu", "mfu")
HITS = 5  # how many biggest hits the report lists


@dataclass(frozen=True)
class Step:
    """One kept experiment on the ratchet: its metric and how much it moved the running best."""

    n: int  # 0-based position in the TSV
    commit: str
    metric: float
    delta: float  # metric - previous best (negative is better when minimizing)
    delta_pct: float  # improvement in percent of the previous best (positive is better)
    description: str
    num_steps: float | None = None  # mean over its runs, as the runs printed it
    tokens_per_s: float | None = None  # mean over its runs, by the harness's clock


@dataclass
class Summary:
    """Everything the report says about one night, in a JSON-friendly shape."""

    metric: str
    direction: str
    experiments: int  # rows, the baseline's included
    kept: int  # kept rows, the baseline's included
    discarded: int
    crashed: int
    other: int  # rows with a status that is none of keep/discard/crash
    attempts: int  # rows past the baseline
    kept_attempts: int  # kept rows past the baseline
    keep_rate: float | None  # kept_attempts / attempts
    baseline: float | None
    baseline_commit: str | None
    baseline_steps: float | None  # mean over the baseline's runs
    baseline_tokens_per_s: float | None  # by the harness's clock (training tokens / training seconds)
    best: float | None
    best_commit: str | None
    best_description: str | None
    improvement_pct: float | None  # positive = better than the baseline, direction-aware
    run_hours: float | None  # sum of wall_s where recorded
    gpu_hours: float | None  # sum of wall_s of the rows that ran on a GPU (device cuda or mlx)
    hardware: list[str]  # the distinct `hardware` of the rows, e.g. "1x NVIDIA H100 80GB HBM3 | torch 2.9.1"
    devices: list[str]  # the distinct `device` of the rows (cuda, mlx, cpu)
    llm_cost_usd: float | None  # sum of cost_usd where recorded
    input_tokens: int | None
    output_tokens: int | None
    workers: list[str]
    improvements: list[Step] = field(default_factory=list)
    biggest_hits: list[Step] = field(default_factory=list)
    crashes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    skipped_lines: list[dict[str, Any]] = field(default_factory=list)
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def infer_direction(metric: str, rows: Sequence[Row]) -> str:
    """Minimize or maximize: the kept rows move the running best one way; else guess from the name."""
    kept = [r.metric for r in rows if r.status == "keep" and math.isfinite(r.metric)]
    down = sum(1 for a, b in zip(kept, kept[1:], strict=False) if b < a)
    up = sum(1 for a, b in zip(kept, kept[1:], strict=False) if b > a)
    if down != up:
        return "minimize" if down > up else "maximize"
    return "maximize" if any(h in metric.lower() for h in _MAXIMIZE_HINTS) else "minimize"


def _float(value: str | None) -> float | None:
    try:
        x = float(value) if value not in (None, "") else None
    except ValueError:
        return None
    return x if x is not None and math.isfinite(x) else None


def per_run_mean(row: Row, column: str) -> float | None:
    """The mean of a per-run column ("953,949,951": one value per run), or None when it has none."""
    values = [v for v in (_float(x) for x in (row.extra.get(column) or "").split(",")) if v is not None]
    return sum(values) / len(values) if values else None


def _pct(new: float, old: float, direction: str) -> float:
    if old == 0:
        return 0.0
    gain = (old - new) if direction == "minimize" else (new - old)
    return gain / abs(old) * 100.0


def _baseline_index(rows: Sequence[Row]) -> int | None:
    usable = [i for i, r in enumerate(rows) if r.scored]
    for i in usable:
        if rows[i].description.strip().lower() == "baseline":
            return i
    kept = [i for i in usable if rows[i].status == "keep"]
    candidates = kept or usable
    return candidates[0] if candidates else None


def summarize(
    rows: Sequence[Row],
    metric: str = "val_bpb",
    direction: str | None = None,
    skipped: Sequence[tuple[int, str]] = (),
    source: str = "",
) -> Summary:
    """The night in numbers. `direction` None infers it from the kept rows and the metric name."""
    direction = direction or infer_direction(metric, rows)
    statuses = [r.status for r in rows]
    kept, discarded, crashed = statuses.count("keep"), statuses.count("discard"), statuses.count("crash")
    b = _baseline_index(rows)
    baseline = rows[b].metric if b is not None else None
    attempts = len(rows) - (1 if b is not None else 0)
    kept_attempts = kept - (1 if b is not None and rows[b].status == "keep" else 0)

    # Walk the ratchet: every kept row after the baseline, with its move of the running best.
    steps: list[Step] = []
    running = baseline
    best_row: Row | None = rows[b] if b is not None else None
    for i, r in enumerate(rows):
        if r.status != "keep" or i == b or not math.isfinite(r.metric):
            continue
        prev = running if running is not None else r.metric
        steps.append(
            Step(
                i,
                r.commit,
                r.metric,
                r.metric - prev,
                _pct(r.metric, prev, direction),
                r.description,
                per_run_mean(r, "num_steps"),
                per_run_mean(r, "tokens_per_s"),
            )  # fmt: skip
        )
        if running is None or better(r.metric, running, direction):
            running, best_row = r.metric, r
    best = best_row.metric if best_row is not None else None

    crashes: dict[str, list[dict[str, Any]]] = {}
    for i, r in enumerate(rows):
        if r.status == "crash":
            reason = (r.extra.get("reason") or "").strip() or "no reason recorded"
            crashes.setdefault(reason, []).append({"n": i, "commit": r.commit, "description": r.description})

    def total(key: str) -> float | None:
        values = [v for v in (_float(r.extra.get(key)) for r in rows) if v is not None]
        return sum(values) if values else None

    wall = total("wall_s")
    gpu_walls = [
        v for r in rows if r.extra.get("device") in ("cuda", "mlx") if (v := _float(r.extra.get("wall_s")))
    ]
    devices = sorted({d for r in rows if (d := (r.extra.get("device") or "").strip())})
    hardware = sorted({h for r in rows if (h := (r.extra.get("hardware") or "").strip())})
    tokens_in, tokens_out = total("input_tokens"), total("output_tokens")
    workers = sorted({w for r in rows if (w := (r.extra.get("worker") or "").strip())})
    hits = sorted((s for s in steps if s.delta_pct > 0), key=lambda s: -s.delta_pct)[:HITS]
    return Summary(
        metric=metric,
        direction=direction,
        experiments=len(rows),
        kept=kept,
        discarded=discarded,
        crashed=crashed,
        other=len(rows) - kept - discarded - crashed,
        attempts=attempts,
        kept_attempts=kept_attempts,
        keep_rate=kept_attempts / attempts if attempts > 0 else None,
        baseline=baseline,
        baseline_commit=rows[b].commit if b is not None else None,
        baseline_steps=per_run_mean(rows[b], "num_steps") if b is not None else None,
        baseline_tokens_per_s=per_run_mean(rows[b], "tokens_per_s") if b is not None else None,
        best=best,
        best_commit=best_row.commit if best_row is not None else None,
        best_description=best_row.description if best_row is not None else None,
        improvement_pct=_pct(best, baseline, direction)
        if best is not None and baseline is not None
        else None,
        run_hours=wall / 3600.0 if wall is not None else None,
        gpu_hours=sum(gpu_walls) / 3600.0 if gpu_walls else None,
        hardware=hardware,
        devices=devices,
        llm_cost_usd=total("cost_usd"),
        input_tokens=int(tokens_in) if tokens_in is not None else None,
        output_tokens=int(tokens_out) if tokens_out is not None else None,
        workers=workers,
        improvements=steps,
        biggest_hits=hits,
        crashes=crashes,
        skipped_lines=[{"line": line, "why": why} for line, why in skipped],
        source=source,
    )


def metric_name(path: Path) -> str:
    """The second header column (the metric), or val_bpb when the header says nothing usable."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror}") from exc
    if len(header) >= 2 and header[0].strip().lower() == "commit" and header[1].strip():
        return header[1].strip()
    return "val_bpb"


def load(
    path: Path, direction: str | None = None, *, on_skip: Callable[[int, str], None] | None = None
) -> tuple[Summary, list[Row]]:
    """Read a TSV leniently and summarize it; an unreadable or empty file is a DataError.

    Lines that cannot be read are left out, listed in the summary's `skipped_lines` and handed
    to `on_skip(line, why)` first, so a caller can name them even when nothing was readable.
    """
    if not path.is_file():
        raise DataError(f"no results file at {path}; pass --tsv FILE or the --tag of a night that ran here")
    rows, skipped = read_any_tsv(path)
    if on_skip is not None:
        for line, why in skipped:
            on_skip(line, why)
    if not rows:
        what = (
            f"none of its {len(skipped)} data lines could be read" if skipped else "it has no experiment rows"
        )
        raise DataError(
            f"{path}: nothing to report: {what}. The format is a header line then tab-separated "
            "rows: commit, metric, memory_gb, status (keep/discard/crash), description."
        )
    return summarize(rows, metric_name(path), direction, skipped, str(path)), rows


def results_dir(start: Path) -> Path:
    """results/ at the root of the repository containing `start` (or below `start` outside git)."""
    try:
        return paths.results_dir(Repo.find(start).root)
    except HarnessError:
        return paths.results_dir(start)


def newest_tag(results: Path) -> str:
    """The tag whose TSV in `results` changed last."""
    tsvs = sorted(results.glob("*.tsv"), key=lambda p: p.stat().st_mtime) if results.is_dir() else []
    if not tsvs:
        raise ConfigError(f"no results in {results}; pass --tag TAG or --tsv FILE")
    return tsvs[-1].stem
