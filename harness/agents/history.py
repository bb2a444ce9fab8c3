"""The prompt's picture of the night so far: the history with diagnostics, the notes, near misses,
and what is being tried right now. Every section is bounded, whatever the length of the night.

History (`history`): a summary line and the ladder of kept changes; a table with one line per
attempt, each with a few words of its diagnostics (steps, tok/s, peak memory, the final loss and
whether it still fell) (condensed when it would exceed `max_chars`: the oldest discarded and crashed attempts
become one counted line, kept changes and the newest attempts stay, rows are always whole);
then, from each attempt's record (`harness.store.attempts`), the best in full (every diagnostic,
the loss at every 10 % of the budget, its summary block) and the `DETAILED` newest attempts in
detail (steps, tokens/s, MFU, peak memory, the time split, the loss at 25/50/75/100 % and
whether it was still falling at the end).

Notes (`notes`): results/<tag>/notes.md, bounded by `harness.store.notes.for_prompt`.
Near misses (`near_misses`): a few recent attempts close to the best with their diffs, which a
reply may build on with `Parent: #n`. In flight (`in_flight`): the proposals running, queued or
being written at the same time as this one; with several requests written at once, each is told
which one it is, so no two concurrent requests are identical and each aims elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from harness.agents.base import InFlight, NearMiss
from harness.store.attempts import AttemptRecord
from harness.store.notes import for_prompt

if TYPE_CHECKING:
    from harness.store.ledger import Row

MAX_HISTORY_CHARS = 12_000
DETAILED = 5  # the newest attempts shown with their diagnostics
MAX_NEAR_MISS_DIFF = 1_500
MAX_DESCRIPTION = 140
_MAX_SUMMARY_KEYS = 24
_ORDINAL = {1: "most", 2: "second most", 3: "third most", 4: "fourth most"}


def fmt_metric(value: float) -> str:
    return f"{value:.6f}"


def _n(row: Row) -> int | None:
    n = row.extra.get("n", "")
    return int(n) if n.isdigit() else None


def _row_line(row: Row, record: AttemptRecord | None = None) -> str:
    n = row.extra.get("n", "")
    description = " ".join(row.description.split())
    if len(description) > MAX_DESCRIPTION:
        description = description[: MAX_DESCRIPTION - 3] + "..."
    value = fmt_metric(row.metric) if row.scored else "-"  # a crash or a pruned run has none
    reason = row.extra.get("reason", "")
    why = f" [{reason}]" if reason and row.status != "keep" else ""
    brief = record.diagnostics.brief() if record is not None and record.diagnostics is not None else ""
    run = f" {{{brief}}}" if brief else ""
    return f"{n:>4} | {row.commit} | {value} | {row.status:<7} | {description}{why}{run}"


def history(
    rows: Sequence[Row], records: Mapping[int, AttemptRecord], metric: str, direction: str, limit: int
) -> str:
    """The history section: summary, table (condensed to `limit` chars), best in full, newest in detail."""
    if not rows:
        return "# History\n\nNo experiment has run yet: the first run is the unmodified baseline."
    header = f"   n | commit  | {metric} | status  | description [reason] {{steps, tok/s, peak memory, final loss}}"
    lines = [_row_line(row, records.get(n) if (n := _n(row)) is not None else None) for row in rows]
    shown = _condense(rows, lines, limit)

    kept = [r for r in rows if r.status == "keep"]
    crashes = sum(1 for r in rows if r.status == "crash")
    summary = [f"{len(rows)} attempts so far: {len(kept)} kept, {crashes} crashed."]
    if kept:
        best = kept[-1]
        summary.append(f"Current best: {fmt_metric(best.metric)} ({best.commit}: {best.description}).")
        ladder = " -> ".join(fmt_metric(r.metric) for r in kept[-12:])
        summary.append(f"Kept changes, in order (each one is in the current files): {ladder}")
    body = "\n".join([header, *shown])
    out = "# History of this run\n\n" + " ".join(summary) + "\n\n```\n" + body + "\n```"
    details = _details(rows, kept[-1] if kept else None, records)
    return out + ("\n\n" + details if details else "")


def _details(rows: Sequence[Row], best: Row | None, records: Mapping[int, AttemptRecord]) -> str:
    parts: list[str] = []
    best_n = _n(best) if best is not None else None
    if best_n is not None and best_n in records:
        parts.append("The current best in full (how it trained):\n" + _full(records[best_n]))
    newest = [r for r in rows if _n(r) is not None and _n(r) != best_n and _n(r) in records][-DETAILED:]
    if newest:
        lines = [_detail(records[n]) for r in newest if (n := _n(r)) is not None]
        parts.append("The newest attempts in detail:\n" + "\n".join(lines))
    return "\n\n".join(parts)


def _head(r: AttemptRecord) -> str:
    value = "-" if r.metric is None else fmt_metric(r.metric)
    extra = f" [{r.reason}]" if r.reason else ""
    return f"#{r.n} {r.status} {value} {' '.join(r.description.split())[:MAX_DESCRIPTION]}{extra}"


def _detail(r: AttemptRecord) -> str:
    lines = [_head(r)]
    if r.diagnostics is not None:
        for line in (r.diagnostics.describe(), r.diagnostics.describe_loss()):
            if line:
                lines.append("    " + line)
    if r.note:
        lines.append(f"    note: {r.note}")
    return "\n".join(lines)


def _full(r: AttemptRecord) -> str:
    lines = [_head(r)]
    if r.diagnostics is not None:
        for line in (r.diagnostics.describe(), r.diagnostics.describe_loss(range(10, 101, 10))):
            if line:
                lines.append("    " + line)
    if r.summary:
        items = list(r.summary.items())[:_MAX_SUMMARY_KEYS]
        lines.append(
            "    summary: "
            + ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in items)
        )
    return "\n".join(lines)


def _condense(rows: Sequence[Row], lines: list[str], limit: int) -> list[str]:
    """Keep whole rows within `limit` chars: every kept row and the newest others; count the rest."""
    if sum(len(line) + 1 for line in lines) <= limit:
        return lines
    budget = limit - 60  # room for the condensed-gap line after the last kept row
    keep_idx: set[int] = set()
    # Kept changes first (newest first if even they do not fit), then the newest attempts.
    kept_first = [i for i in reversed(range(len(lines))) if rows[i].status == "keep"]
    others = [i for i in reversed(range(len(lines))) if rows[i].status != "keep"]
    # Each group is taken newest first and stops at the first row that does not fit, so what
    # is shown is always a contiguous recent stretch plus the kept ladder.
    for group in (kept_first, others):
        for i in group:
            # A kept row may open a gap before it: reserve room for that condensed line.
            cost = len(lines[i]) + 1 + (60 if group is kept_first else 0)
            if cost > budget:
                break
            keep_idx.add(i)
            budget -= cost
    out: list[str] = []
    gap: list[Row] = []

    def flush() -> None:
        if gap:
            counts: dict[str, int] = {}
            for row in gap:
                counts[row.status] = counts.get(row.status, 0) + 1
            what = ", ".join(f"{v} {k}" for k, v in sorted(counts.items()))
            out.append(f"   ... {len(gap)} older attempts condensed ({what}) ...")
            gap.clear()

    for i, line in enumerate(lines):
        if i in keep_idx:
            flush()
            out.append(line)
        else:
            gap.append(rows[i])
    flush()
    return out


def notes(text: str) -> str:
    """The notes section, or "" when there are none."""
    if not text.strip():
        return ""
    return (
        "# Research notes (results notes.md: insights and dead ends so far; the person may edit them)\n\n"
        + for_prompt(text)
    )


def near_misses(items: Sequence[NearMiss]) -> str:
    """Recent attempts close to the best, with their changes, to build on with `Parent: #n`."""
    if not items:
        return ""
    parts = [
        "# Near misses you may build on\n\nThese recent attempts came close to the best. To combine one "
        "with a new idea, reply with `Parent: #<n>` and SEARCH parts that quote its version of the file; "
        "its change and yours are then applied to the current best."
    ]
    for item in items:
        diff = (
            item.diff
            if len(item.diff) <= MAX_NEAR_MISS_DIFF
            else item.diff[:MAX_NEAR_MISS_DIFF] + "\n... (diff cut)"
        )
        value = "-" if item.status == "crash" else fmt_metric(item.metric)
        parts.append(f"#{item.n} {item.status} {value}: {item.description}\n```diff\n{diff.rstrip()}\n```")
    return "\n\n".join(parts)


def in_flight(items: Sequence[InFlight], writing: tuple[int, int] | None) -> str:
    """What is being tried now, and which of several concurrent requests this one is."""
    if not items and (writing is None or writing[1] <= 1):
        return ""
    lines = ["# Being tried right now (do not propose these again)", ""]
    for item in items:
        lines.append(f"- {item.state}: {item.description}" if item.description else f"- {item.state}")
    if writing is not None and writing[1] > 1:
        k, m = writing
        others = m - 1
        lines.append(
            f"\nYou are request {k} of {m} written at the same time; the other {others} cannot see your "
            f"answer, nor you theirs. So that the {m} proposals differ, propose the idea you consider the "
            f"{_ORDINAL.get(k, f'{k}th most')} promising, not necessarily your favourite."
        )
    return "\n".join(lines)
