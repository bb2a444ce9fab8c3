"""How a night is going, from its TSV and lock, without touching them (`autoresearch status`).

With a tag: rows, keep/discard/crash counts, the best row, the last rows, whether a harness
holds the tag's lock right now, and an attempt left in flight (pending.json). Without a
tag: one line per tag under results/. Reads are lenient (`read_any_tsv`), so a hand-made or
damaged TSV is shown with its skipped lines instead of failing.
"""

from __future__ import annotations

from pathlib import Path

from harness.errors import ConfigError
from harness.review.summary import infer_direction, metric_name
from harness.store.family import family_best, read_inflight
from harness.store.journal import lock_holder, read_pending
from harness.store.ledger import Row, read_any_tsv
from harness.store.paths import TagPaths

LAST_ROWS = 5


def _best(rows: list[Row], direction: str = "minimize") -> Row | None:
    keeps = [r for r in rows if r.status == "keep"]
    if not keeps:
        return None
    return (
        min(keeps, key=lambda r: r.metric) if direction == "minimize" else max(keeps, key=lambda r: r.metric)
    )


def _fmt(row: Row) -> str:
    reason = row.extra.get("reason", "")
    n = row.extra.get("n", "")
    worker = row.extra.get("worker", "")
    return (
        f"  {(worker + ' ') if worker else ''}{('#' + n) if n else '':>5} {row.commit:<8} {row.metric:.6f} {row.memory_gb:5.1f} "
        f"{row.status:<7} {row.description}" + (f" ({reason})" if reason else "")
    )


def tag_lines(results: Path, tag: str) -> list[str]:
    paths = TagPaths(results.parent, tag)
    tsv = paths.tsv
    if not tsv.exists():
        known = sorted(p.stem for p in results.glob("*.tsv")) if results.is_dir() else []
        hint = f"; known tags: {', '.join(known)}" if known else ""
        raise ConfigError(f"no results for tag {tag!r} ({tsv} does not exist){hint}")
    rows, skipped = read_any_tsv(tsv)
    counts = {s: sum(1 for r in rows if r.status == s) for s in ("keep", "discard", "crash")}
    lines = [
        f"tag {tag}: {len(rows)} rows ({counts['keep']} keep, {counts['discard']} discard, {counts['crash']} crash)"
    ]
    best = _best(rows, infer_direction(metric_name(tsv), rows))
    if best is not None:
        lines.append(f"best: {best.metric:.6f} at {best.commit} ({best.description})")
    holder = lock_holder(paths)
    lines.append(f"running: yes (harness pid {holder})" if holder else "running: no")
    pending = read_pending(paths.pending)
    if pending is not None and not holder:
        lines.append(
            f"in flight when it stopped: #{pending.get('n')} {pending.get('description')} "
            "(run with --resume to log it)"
        )
    if skipped:
        lines.append(
            f"skipped {len(skipped)} unreadable lines: " + ", ".join(f"{n}: {why}" for n, why in skipped[:3])
        )
    lines += _family_lines(paths, rows, infer_direction(metric_name(tsv), rows))
    if rows:
        lines.append(f"last {min(LAST_ROWS, len(rows))} rows:")
        lines += [_fmt(r) for r in rows[-LAST_ROWS:]]
    return lines


def _family_lines(paths: TagPaths, rows: list[Row], direction: str) -> list[str]:
    """For a family's merged ledger (--gpus, --ray): one line per worker, with what it runs now."""
    running = read_inflight(paths)
    workers = sorted({w for r in rows if (w := r.extra.get("worker", ""))} | set(running))
    if not running and not (paths.dir / "inflight.json").exists():
        return []
    best = family_best(rows, direction)
    lines = [
        f"family of {len(workers)} workers (tags {paths.tag}-<worker>)"
        + (f"; the family's best is {best.label()} ({best.metric:.6f})" if best else "")
    ]
    for w in workers:
        own = [r for r in rows if r.extra.get("worker") == w]
        mine = _best(own, direction)
        job = running.get(w)
        now = f"running #{job.get('n')} {job.get('description')}" if job else "not running"
        best_s = f"best {mine.metric:.6f}" if mine else "no keep yet"
        lines.append(f"  {w:<8} {len(own):4d} rows  {best_s:<18} {now}")
    return lines


def list_lines(results: Path) -> list[str]:
    tsvs = sorted(results.glob("*.tsv")) if results.is_dir() else []
    if not tsvs:
        return [f"no tags yet in {results}; start one with `autoresearch run --tag NAME`"]
    lines = []
    for tsv in tsvs:
        rows, _ = read_any_tsv(tsv)
        best = _best(rows, infer_direction(metric_name(tsv), rows))
        running = " running" if lock_holder(TagPaths(results.parent, tsv.stem)) else ""
        best_s = f"best {best.metric:.6f}" if best else "no keep yet"
        lines.append(f"{tsv.stem:<24} {len(rows):4d} rows  {best_s}{running}")
    return lines
