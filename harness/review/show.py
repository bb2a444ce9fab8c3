"""One attempt of a night, whatever became of it: its row, its diff, its summary, its log tail.

    autoresearch show TAG N [--log-lines K]

Every part is looked for where the night left it, then where a fetch put it, so `show` works on
the machine that ran the night and on any clone that fetched its published results:

- the code: refs/autoresearch/<tag>/attempts/<n> (every committed attempt: keeps, discards,
  crashes), else a fetched copy refs/autoresearch-fetched/<remote>/<tag>/attempts/<n>; the diff
  is the commit against its parent (the best it was tried on);
- the row: results/<tag>.tsv, else the results branch autoresearch-results/<tag> (local or
  remote-tracking);
- the record (diagnostics, note, log tail): results/<tag>/attempts/<n>.json, else the results branch;
- the log: results/<tag>/runs/<n>.log (its last K lines), else the record's tail.

An attempt that is nowhere is a DataError naming what was looked at.
"""

from __future__ import annotations

from dataclasses import dataclass

from harness.errors import DataError
from harness.store import attempts
from harness.store.attempts import AttemptRecord
from harness.store.git import FETCHED_PREFIX, RESULTS_PREFIX, Repo, attempt_ref, fetch_refspec
from harness.store.ledger import Row, parse_any_tsv, read_any_tsv
from harness.store.paths import TagPaths

MAX_SUMMARY_KEYS = 40


@dataclass
class Shown:
    """What was found of one attempt, and where."""

    tag: str
    n: int
    row: Row | None
    row_source: str
    commit: str | None
    commit_ref: str
    diff: str
    record: AttemptRecord | None
    log: str
    log_source: str


def attempt_commit(view: Repo, tag: str, n: int) -> tuple[str | None, str]:
    """(sha, the ref that names it) of attempt n: the local ref, else a fetched one."""
    local = attempt_ref(tag, n)
    sha = view.resolve(local)
    if sha is not None:
        return sha, local
    fetched = view.refs(f"{FETCHED_PREFIX}*/{tag}/attempts/{n}")
    for ref, sha in sorted(fetched.items()):
        return sha, ref
    return None, local


def _results_refs(view: Repo, tag: str) -> list[str]:
    local = f"refs/heads/{RESULTS_PREFIX}{tag}"
    remote = sorted(view.refs(f"refs/remotes/*/{RESULTS_PREFIX}{tag}"))
    return [r for r in [local, *remote] if view.resolve(r) is not None]


def find_row(rows: list[Row], n: int) -> Row | None:
    """The row of attempt n: by its `n` column, else (a TSV without one) by position."""
    for row in rows:
        if row.extra.get("n") == str(n):
            return row
    if rows and all("n" not in r.extra for r in rows) and 0 <= n < len(rows):
        return rows[n]
    return None


def gather(view: Repo, tag: str, n: int, *, log_lines: int = 30) -> Shown:
    paths = TagPaths(view.root, tag)
    row, row_source = None, ""
    if paths.tsv.is_file():
        row, row_source = find_row(read_any_tsv(paths.tsv)[0], n), str(paths.tsv)
    record = attempts.read(paths.record(n))
    for ref in _results_refs(view, tag) if row is None or record is None else []:
        if row is None:
            text = view.show(ref, f"results/{tag}.tsv")
            if text is not None:
                row, row_source = find_row(parse_any_tsv(text)[0], n), f"{ref}:results/{tag}.tsv"
        if record is None:
            text = view.show(ref, f"results/{tag}/attempts/{n}.json")
            record = attempts.parse(text) if text is not None else None
    sha, ref = attempt_commit(view, tag, n)
    change_of = sha  # a duplicate was never committed: its change is the one it repeated
    if sha is None and record is not None and record.duplicate_of is not None:
        change_of, _ = attempt_commit(view, tag, record.duplicate_of)
    diff = (
        view.git("diff", f"{change_of}^", change_of, strip=False)
        if change_of is not None and view.resolve(f"{change_of}^")
        else ""
    )
    log_path = paths.log(n)
    if log_lines == 0:
        log, log_source = "", "not shown (--log-lines 0)"
    elif log_path.is_file():
        lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-log_lines:]
        log, log_source = "\n".join(lines), f"{log_path}, last {len(lines)} lines"
    elif record is not None and record.log_tail:
        log, log_source = record.log_tail, "the attempt's record (the log stayed on the machine that ran it)"
    else:
        log, log_source = "", ""
    if row is None and sha is None and record is None:
        raise DataError(
            f"no attempt #{n} of tag {tag!r} here: no row in {paths.tsv} or a results branch, no ref "
            f"{attempt_ref(tag, n)}. On another clone, fetch it first: git config --add remote.origin.fetch "
            f"'{fetch_refspec('origin')}' && git fetch origin"
        )
    return Shown(tag, n, row, row_source, sha, ref, diff, record, log, log_source)


def render(shown: Shown, metric: str = "") -> str:
    """The attempt as the person reads it in a terminal."""
    s = shown
    row, record = s.row, s.record
    status = row.status if row is not None else (record.status if record is not None else "?")
    description = row.description if row is not None else (record.description if record is not None else "")
    value = "-"
    if row is not None and status != "crash":
        value = f"{row.metric:.6f}"
    elif record is not None and record.metric is not None:
        value = f"{record.metric:.6f}"
    agent = row.extra.get("agent", "") if row is not None else (record.agent if record is not None else "")
    model = row.extra.get("model", "") if row is not None else ""
    lines = [
        f"#{s.n} of {s.tag}: {status}  {metric or 'metric'} {value}  agent {agent or '?'}"
        + (f" ({model})" if model else "")
    ]
    lines.append(f"description: {description}")
    if s.row_source:
        lines.append(f"row: {s.row_source}")
    reason = (row.extra.get("reason", "") if row is not None else "") or (record.reason if record else "")
    if reason:
        lines.append(f"reason: {reason}")
    if record is not None:
        if record.built_on is not None:
            lines.append(f"built on: #{record.built_on}")
        if record.note:
            lines.append(f"note: {record.note}")
    duplicate_of = record.duplicate_of if record is not None else None
    if s.commit is not None:
        lines.append(f"commit: {s.commit[:7]} ({s.commit_ref})")
    elif duplicate_of is not None:
        lines.append(f"commit: none (a duplicate, never committed or run: the change is #{duplicate_of}'s)")
    else:
        lines.append("commit: none (the attempt never became a commit: a bad edit)")
    lines.append("")
    if s.diff:
        whose = f"#{duplicate_of}'s, " if s.commit is None and duplicate_of is not None else ""
        lines.append(f"diff ({whose}against the best it was tried on):")
    else:
        lines.append("diff: none")
    if s.diff:
        lines.append(s.diff.rstrip())
    summary = dict(record.summary) if record is not None and record.summary else {}
    if not summary and row is not None and row.extra.get("summary"):
        lines.append("")
        lines.append(f"summary: {row.extra['summary']}")
    if summary:
        lines += ["", "summary:"]
        lines += [
            f"  {k}: {v:g}" if isinstance(v, float) else f"  {k}: {v}"
            for k, v in list(summary.items())[:MAX_SUMMARY_KEYS]
        ]
    if record is not None and record.diagnostics is not None:
        d = record.diagnostics
        lines += ["", "diagnostics:"] + [
            f"  {line}" for line in (d.describe(), d.describe_loss(range(10, 101, 10))) if line
        ]
    lines.append("")
    if s.log:
        lines.append(f"log tail ({s.log_source}):")
        lines.append(s.log.rstrip())
    elif s.log_source:
        lines.append(f"log: {s.log_source}")
    else:
        lines.append("log: none (the attempt never ran)")
    return "\n".join(lines)
