"""The results ledger ``results/<tag>.tsv``: one tab-separated row per attempt, append-only.

The first five columns are exactly ``commit <metric> memory_gb status description`` (the
format people already analyse; the metric column is named after the experiment's metric,
``val_bpb`` by default), then `EXTRA_COLUMNS`. The metric is written with 6 decimals, memory
with 1; a crash row has ``0.000000`` and ``0.0``. Tabs and newlines in any field become spaces.

Appends are safe under concurrent writers (a report reading while the loop writes, tests with
several processes): each row is one ``write()`` on an ``O_APPEND`` descriptor under the
ledger's lock (``<tsv>.lock``), then fsync'ed, and the header is written under the same lock
when the file is empty.

`Ledger` is the loop's view: strict (the harness's own file: a corrupt line is a DataError
naming the file and line), read once and kept in memory. `read_any_tsv()` is lenient, for
hand-made or older TSVs: any columns after the first five, lines it cannot read are skipped
and reported. `better` compares two metric values in an experiment's direction.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import filelock

from harness.credentials import redact
from harness.errors import ConfigError, DataError
from harness.store.atomic import file_lock, write_atomic

EXTRA_COLUMNS: tuple[str, ...] = (
    "n", "timestamp", "runs", "spread", "budget_s", "wall_s", "training_s", "num_steps",
    "agent", "model", "input_tokens", "output_tokens", "cost_usd", "worker", "reason",
    "parent", "summary", "device", "hardware", "startup_s", "tokens_per_s",
)  # fmt: skip
# A headerless line this wide is a harness ledger (its columns up to `summary` predate the rest).
HEADERLESS_MIN_EXTRA = EXTRA_COLUMNS.index("summary") + 1
STATUSES: tuple[str, ...] = ("keep", "discard", "crash")
PRUNED = "pruned"  # the reason of a discard whose run was aborted early (harness.night.prune)
NO_COMMIT = "0000000"  # the commit column of an attempt that never became a commit


def columns(metric: str = "val_bpb") -> tuple[str, str, str, str, str]:
    """The five leading columns, the second named after the metric."""
    return ("commit", metric, "memory_gb", "status", "description")


COLUMNS = columns("val_bpb")

Direction = Literal["minimize", "maximize"]


def check_direction(direction: str) -> Direction:
    """``direction`` validated; ConfigError naming the allowed values otherwise."""
    if direction == "minimize":
        return "minimize"
    if direction == "maximize":
        return "maximize"
    raise ConfigError(
        f"direction must be 'minimize' or 'maximize', not {direction!r} (set it in experiment.toml)"
    )


def better(a: float, b: float, direction: str) -> bool:
    """True iff ``a`` is strictly better than ``b`` in ``direction``; never for a NaN."""
    if check_direction(direction) == "minimize":
        return a < b
    return a > b


@dataclass
class Row:
    """One attempt. ``extra`` holds the columns after the first five, as strings."""

    commit: str
    metric: float
    memory_gb: float
    status: str
    description: str
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def scored(self) -> bool:
        """Whether the row has a metric to show: not a crash, not a pruned run, a finite value."""
        return self.status != "crash" and self.extra.get("reason") != PRUNED and math.isfinite(self.metric)

    def runs(self) -> list[float]:
        """The individual run values folded into this row (its `runs` column); [] if unreadable."""
        try:
            return [float(v) for v in self.extra.get("runs", "").split(",") if v.strip()]
        except ValueError:
            return []

    def values(self) -> list[float]:
        """The run values, or [metric] for a row that records none."""
        return self.runs() or [self.metric]


def clean(text: str) -> str:
    """A field safe for a TSV cell: tabs, newlines and carriage returns become spaces, and every
    secret of the harness's environment (in any encoding `harness.credentials` knows) is redacted."""
    return redact(str(text)).replace("\t", " ").replace("\r", " ").replace("\n", " ").strip()


def _format(row: Row, header: list[str]) -> str:
    if row.status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {row.status!r}")
    unknown = set(row.extra) - set(EXTRA_COLUMNS)
    if unknown:
        raise ValueError(f"unknown extra columns {sorted(unknown)}; allowed: {EXTRA_COLUMNS}")
    cells = [
        clean(row.commit),
        f"{row.metric:.6f}",
        f"{row.memory_gb:.1f}",
        row.status,
        clean(row.description),
    ]
    # Extras follow the file's own header, so a file begun by an older version stays aligned.
    cells += [clean(row.extra.get(name, "")) for name in header[5:]]
    return "\t".join(cells) + "\n"


class Ledger:
    """The ledger of one tag, read once (strictly) and kept in memory: every append updates the
    rows, the attempt count, the LLM spend and the best row, so nothing re-reads the file.

    A missing file has no rows; the first append creates it. A corrupt line is a DataError
    naming the file and line.
    """

    def __init__(self, path: Path, metric: str = "val_bpb") -> None:
        self.path = Path(path)
        self.metric = metric
        self.header: list[str] = [*columns(metric), *EXTRA_COLUMNS]
        self._rows: list[Row] = []
        self.attempts = 0  # rows past the baseline
        self.spent = 0.0  # USD, the sum of cost_usd
        self.best: Row | None = None  # the last kept row: the branch head
        self.next_n = 0  # the number of the next attempt
        if self.path.exists():
            with self._lock():
                rows = self._read()
            for row in rows:
                self._count(row)

    def rows(self) -> list[Row]:
        """Every row so far, oldest first (a copy)."""
        return list(self._rows)

    def find(self, n: int) -> Row | None:
        """The row of attempt n, if it was written."""
        return next((r for r in reversed(self._rows) if r.extra.get("n") == str(n)), None)

    def append(self, row: Row) -> Row:
        """Append one row (and the header first, if the file is empty); returns it as written.

        Under the ledger's lock: one write() of the whole line on an O_APPEND descriptor, then fsync.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                header = self.header if size == 0 else self._check_header(_first_line(fd), 1)
                line = _format(row, header)
                data = ("\t".join(header) + "\n" + line) if size == 0 else line
                view = memoryview(data.encode("utf-8"))
                try:
                    while view:  # a regular-file write is whole in practice; loop in case it is not
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    # A full disk can take part of the row before it fails: cut that part off, so
                    # the file is never left with a torn line (the row is written again on --resume).
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, size)
                    raise
            finally:
                os.close(fd)
        written = self._parse(line.rstrip("\n"), header, 0)
        self._count(written)
        return written

    def _count(self, row: Row) -> None:
        self._rows.append(row)
        if row.description != "baseline":
            self.attempts += 1
        self.spent += _number(row.extra.get("cost_usd", ""))
        if row.status == "keep":
            self.best = row
        n = row.extra.get("n", "")
        self.next_n = max(self.next_n, int(n) + 1) if n.isdigit() else max(self.next_n, len(self._rows))

    def _lock(self) -> filelock.FileLock:
        return file_lock(self.path.with_name(self.path.name + ".lock"))

    def _read(self) -> list[Row]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.path}: not UTF-8 text ({exc}); restore it from a backup") from exc
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            return []
        header = self._check_header(lines[0], 1)
        return [self._parse(line, header, i) for i, line in enumerate(lines[1:], start=2) if line.strip()]

    def _check_header(self, line: str, lineno: int) -> list[str]:
        header = line.rstrip("\r\n").split("\t")
        want = list(columns(self.metric))
        if header[:5] != want:
            raise DataError(
                f"{self.path}:{lineno}: the header must start with {' '.join(want)!r}, "
                f"found {' '.join(header[:5])!r}; is this the TSV of another experiment or metric? "
                "Use another --tag or move the file away."
            )
        return header

    def _parse(self, line: str, header: list[str], lineno: int) -> Row:
        def bad(why: str) -> DataError:
            return DataError(f"{self.path}:{lineno}: {why}; fix or delete that line (line: {line[:120]!r})")

        cells = line.split("\t")
        if len(cells) != len(header):
            raise bad(f"{len(cells)} columns where the header has {len(header)}")
        try:
            metric = float(cells[1])
            memory = float(cells[2])
        except ValueError as exc:
            raise bad(f"not a number ({exc})") from None
        if cells[3] not in STATUSES:
            raise bad(f"status {cells[3]!r} is not one of {', '.join(STATUSES)}")
        extra = dict(zip(header[5:], cells[5:], strict=False))
        return Row(cells[0], metric, memory, cells[3], cells[4], extra)


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return 0.0


def _first_line(fd: int) -> str:
    return os.pread(fd, 1 << 16, 0).split(b"\n", 1)[0].decode("utf-8", "replace")


def header_metric(path: Path) -> str | None:
    """The metric column's name in the header of a ledger, or None without a readable header."""
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            header = fh.readline().rstrip("\r\n").split("\t")
    except OSError:
        return None
    return header[1] if len(header) >= 5 and header[0] == "commit" else None


def rename_metric(path: Path, metric: str) -> None:
    """Rename the metric column of a ledger that has no scored row (every row a crash).

    After a baseline that printed no `metric`, the person may rename the metric in
    experiment.toml; the crash rows measured nothing, so the ledger can follow. A ledger with a
    scored row keeps its metric: the new one's values are not comparable with the old.
    """
    with file_lock(path.with_name(path.name + ".lock")):
        lines = path.read_text(encoding="utf-8").split("\n")
        rows = [line.split("\t") for line in lines[1:] if line.strip()]
        if any(len(cells) > 3 and cells[3] != "crash" for cells in rows):
            raise DataError(f"{path} has scored rows: its metric column cannot be renamed")
        header = lines[0].split("\t")
        header[1] = metric
        write_atomic(path, "\n".join(["\t".join(header), *lines[1:]]))


def read_any_tsv(path: Path) -> tuple[list[Row], list[tuple[int, str]]]:
    """Rows of any results-like TSV, and the (line number, why) of every line skipped.

    The first five columns are read by position (the second is the metric, whatever its name);
    further columns go to ``extra`` under their header names. Without a header line, a line as
    wide as a harness ledger is read by the harness's columns, anything else as the five
    standard ones; a note (line 0) says which when it is not the plain five. A line with more cells than a five-column header has its
    extra cells joined into the description (a hand-typed tab). Blank memory reads as 0.0.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; pass the path of a results TSV") from None
    return parse_any_tsv(text)


def parse_any_tsv(text: str) -> tuple[list[Row], list[tuple[int, str]]]:
    """`read_any_tsv` of a TSV given as text (e.g. read from a results branch)."""
    lines = text.splitlines()
    rows: list[Row] = []
    skipped: list[tuple[int, str]] = []
    if not lines:
        return rows, skipped
    first = lines[0].split("\t")
    if first[0].strip().lower() == "commit":
        header = [c.strip() for c in first]
        body = enumerate(lines[1:], start=2)
    else:
        body = enumerate(lines, start=1)
        header = list(COLUMNS)
        if len(first) >= 5 + HEADERLESS_MIN_EXTRA:  # a harness ledger that lost its header line
            header = [*COLUMNS, *EXTRA_COLUMNS][: len(first)]
            skipped.append((0, "no header line: read as the harness's own columns, by position"))
        elif len(first) > 5:
            skipped.append((0, "no header line: read as commit, metric, memory_gb, status, description; "
                               "the cells after the fifth are joined into the description"))  # fmt: skip
    for lineno, line in body:
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        if len(cells) < 4:
            skipped.append((lineno, f"{len(cells)} columns; need at least commit, metric, memory, status"))
            continue
        try:
            metric = float(cells[1])
        except ValueError:
            skipped.append((lineno, f"metric {cells[1]!r} is not a number"))
            continue
        try:
            memory = float(cells[2]) if cells[2] else 0.0
        except ValueError:
            skipped.append((lineno, f"memory {cells[2]!r} is not a number"))
            continue
        status = cells[3].lower()
        if status not in STATUSES:
            skipped.append((lineno, f"status {cells[3]!r} is not one of {', '.join(STATUSES)}"))
            continue
        if len(header) <= 5:
            description = " ".join(c for c in cells[4:] if c)
            extra: dict[str, str] = {}
        else:
            description = cells[4] if len(cells) > 4 else ""
            extra = {name: value for name, value in zip(header[5:], cells[5:], strict=False)}
            for i, value in enumerate(cells[len(header) :], start=len(header)):
                extra[f"column_{i + 1}"] = value
        rows.append(Row(cells[0], metric, memory, status, description, extra))
    return rows, skipped
