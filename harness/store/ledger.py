"""The results ledger ``results/<tag>.tsv``: one tab-separated row per attempt, append-only.

The first five columns are exactly ``commit <metric> memory_gb status description`` (the
format people already analyse; the metric column is named after the experiment's metric,
``val_bpb`` by default), then `EXTRA_COLUMNS`. The metric is written with 6 decimals, memory
with 1; a crash row has ``0.000000`` and ``0.0``. Every cell goes through
`harness.store.text.sanitize` (no control characters or escape sequences, tabs and newlines
become spaces) and is bounded: the description to 200 characters, the reason to 300, the
summary (compact JSON of the parsed pairs) to 2000, any other cell to 2000.

Appends are safe under concurrent writers (a report reading while the loop writes, tests with
several processes): each row is one ``write()`` on an ``O_APPEND`` descriptor under the
ledger's lock (``<tsv>.lock``), then fsync'ed, and the header is written under the same lock
when the file is empty. After each append the ledger's seal (`harness.store.seal`) records
which bytes the harness wrote; the loop opens its ledger with ``verify=True``, which trusts
only those (and the one row pending.json journaled), so a row a run appended is never taken
for the harness's own.

`Ledger` is the loop's view: strict (the harness's own file: a damaged line is a DataError
naming the file, the line, what is wrong and the command that removes it), read once and kept
in memory. `read_any_tsv()` is lenient, for
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
from harness.store import seal as sealing
from harness.store.atomic import file_lock, write_atomic
from harness.store.schema import Seal, require_file_or_absent, validate_row
from harness.store.text import DESCRIPTION_LIMIT, REASON_LIMIT, SUMMARY_LIMIT, sanitize

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


CELL_LIMIT = 2000  # any cell without a limit of its own
_LIMITS = {"description": DESCRIPTION_LIMIT, "reason": REASON_LIMIT, "summary": SUMMARY_LIMIT}


def clean(text: str, limit: int = CELL_LIMIT) -> str:
    """A field safe for a TSV cell: every secret of the harness's environment (in any encoding
    `harness.credentials` knows) redacted, then one line, no control characters or escapes, bounded."""
    return sanitize(redact(str(text)), limit)


def _format(row: Row, header: list[str]) -> str:
    if row.status not in STATUSES:
        raise ValueError(f"status must be one of {STATUSES}, not {row.status!r}")
    if not (math.isfinite(row.metric) and math.isfinite(row.memory_gb)):
        raise ValueError(f"metric and memory must be finite, not {row.metric!r} and {row.memory_gb!r}")
    unknown = set(row.extra) - set(EXTRA_COLUMNS)
    if unknown:
        raise ValueError(f"unknown extra columns {sorted(unknown)}; allowed: {EXTRA_COLUMNS}")
    cells = [
        clean(row.commit, 40),
        f"{row.metric:.6f}",
        f"{row.memory_gb:.1f}",
        row.status,
        clean(row.description, DESCRIPTION_LIMIT),
    ]
    # Extras follow the file's own header, so a file begun by an older version stays aligned.
    cells += [clean(row.extra.get(name, ""), _LIMITS.get(name, CELL_LIMIT)) for name in header[5:]]
    return "\t".join(cells) + "\n"


class Ledger:
    """The ledger of one tag, read once (strictly) and kept in memory: every append updates the
    rows, the attempt count, the LLM spend and the best row, so nothing re-reads the file.

    A missing file has no rows; the first append creates it. A damaged line is a DataError
    naming the file and line. With ``verify=True`` (the loop) the file is read against its
    seal: a sealed part that does not match is a DataError; bytes after it are trusted only
    when they are exactly `journaled` (the row pending.json recorded just before its append),
    anything else is moved to ``<tsv>.untrusted`` and cut off (`untrusted` lists the lines);
    a file without a seal is sealed as it is.
    """

    def __init__(
        self, path: Path, metric: str = "val_bpb", *, verify: bool = False, journaled: str | None = None
    ) -> None:
        self.path = Path(path)
        self.metric = metric
        self.header: list[str] = [*columns(metric), *EXTRA_COLUMNS]
        self._rows: list[Row] = []
        self.attempts = 0  # rows past the baseline
        self.spent = 0.0  # USD, the sum of cost_usd
        self.best: Row | None = None  # the last kept row: the branch head
        self.next_n = 0  # the number of the next attempt
        self.untrusted: list[str] = []  # lines after the seal that the harness did not write (cut off)
        fix = f"move it away (mv {self.path} {self.path}.bak) or pick another --tag"
        require_file_or_absent(self.path, fix)
        if verify:
            require_file_or_absent(sealing.seal_path(self.path), fix)
        if self.path.exists() or verify:
            with self._lock():
                rows = self._verified(journaled) if verify else self._read(self._bytes())
            for row in rows:
                self._count(row)

    def rows(self) -> list[Row]:
        """Every row so far, oldest first (a copy)."""
        return list(self._rows)

    def find(self, n: int) -> Row | None:
        """The row of attempt n, if it was written."""
        return next((r for r in reversed(self._rows) if r.extra.get("n") == str(n)), None)

    def row_of(self, line: str, *, where: str) -> Row:
        """The row a line written by `line()` stands for; DataError naming `where` when it is damaged."""
        fix = f"remove it (rm {where}) and run again with --resume to go on without that attempt"
        return self._parse(line, self._file_header() or self.header, 0, where=where, fix=fix)

    def line(self, row: Row) -> str:
        """The line `append(row)` would write (without its newline), for the journal."""
        header = self._file_header() or self.header
        return _format(row, header).rstrip("\n")

    def append(self, row: Row) -> Row:
        """Append one row (and the header first, if the file is empty); returns it as written.

        Under the ledger's lock: one write() of the whole line on an O_APPEND descriptor, then
        fsync, then the seal. Bytes someone else appended since the last seal are moved to
        ``<tsv>.untrusted`` first.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = self._cut_unsealed(fd)
                header = self.header if size == 0 else self._check_header(_first_line(fd), 1)
                line = _format(row, header)
                data = ("\t".join(header) + "\n" + line) if size == 0 else line
                raw = data.encode("utf-8")
                view = memoryview(raw)
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
                self._seal(size + len(raw), sealing.extend(self._chain, raw))
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

    # -- the seal ---------------------------------------------------------------------------

    _chain = sealing.START

    def _seal(self, size: int, chain: str) -> None:
        self._chain = chain
        sealing.write(self.path, Seal(size=size, chain=chain))

    def _cut_unsealed(self, fd: int) -> int:
        """The file's size once anything appended after its seal is quarantined and cut off.

        Under the lock. A file without a seal (older, or hand-made) is sealed as it is."""
        size = os.fstat(fd).st_size
        seal = sealing.read(self.path)
        if seal is None:
            self._chain = sealing.extend(sealing.START, os.pread(fd, size, 0)) if size else sealing.START
            return size
        if size < seal.size:
            sealing.split(self.path, os.pread(fd, size, 0), seal)  # raises: the file was cut
        self._chain = seal.chain
        if size > seal.size:
            tail = os.pread(fd, size - seal.size, seal.size)
            sealing.quarantine(self.path, tail)
            self.untrusted += tail.decode("utf-8", "replace").splitlines()
            os.ftruncate(fd, seal.size)
            os.fsync(fd)
        return seal.size

    def _verified(self, journaled: str | None) -> list[Row]:
        """The rows the harness wrote (see the class docstring); under the lock."""
        raw = self._bytes()
        seal = sealing.read(self.path)
        try:
            body, tail, chain = sealing.split(self.path, raw, seal)
        except DataError:
            self._read(raw, ordered=True)  # a damaged line is the more useful thing to report
            raise
        if tail:
            expected = (journaled or "") + "\n"
            if not body:
                expected = "\t".join(self.header) + "\n" + expected
            if journaled is not None and tail == expected.encode("utf-8"):
                body, chain = body + tail, sealing.extend(chain, tail)  # killed between append and seal
            else:
                sealing.quarantine(self.path, tail)
                self.untrusted = tail.decode("utf-8", "replace").splitlines()
                with open(self.path, "r+b") as fh:
                    fh.truncate(len(body))
                    os.fsync(fh.fileno())
        rows = self._read(body, ordered=True)
        if seal is None or tail:
            self._seal(len(body), chain)
        self._chain = chain
        return rows

    # -- reading ----------------------------------------------------------------------------

    def _bytes(self) -> bytes:
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise DataError(f"{self.path}: cannot be read ({exc.strerror}); check its permissions") from None

    def _file_header(self) -> list[str] | None:
        try:
            with open(self.path, "rb") as fh:
                first = fh.readline(1 << 16).decode("utf-8", "replace").rstrip("\r\n")
        except OSError:
            return None
        return first.split("\t") if first else None

    def _read(self, raw: bytes, *, ordered: bool = False) -> list[Row]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            lineno = raw[: exc.start].count(b"\n") + 1
            raise DataError(
                f"{self.path}:{lineno}: not UTF-8 text ({exc.reason}); {self._fix(lineno)}"
            ) from None
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        if not lines:
            return []
        header = self._check_header(lines[0], 1)
        numbered = [
            (i, self._parse(line, header, i)) for i, line in enumerate(lines[1:], start=2) if line.strip()
        ]
        if ordered:  # one harness writes the loop's ledger, in order
            last = -1
            for lineno, row in numbered:
                n = row.extra.get("n", "")
                if n and int(n) <= last:
                    raise DataError(
                        f"{self.path}:{lineno}: attempt #{n} comes after #{last} (a row written twice, or "
                        f"out of order); {self._fix(lineno)}"
                    )
                last = int(n) if n else last
        return [row for _, row in numbered]

    def _fix(self, lineno: int) -> str:
        seal = sealing.seal_path(self.path)
        return (
            f"remove that line and the seal (sed -i '{lineno}d' {self.path} && rm -f {seal}), then run again"
        )

    def _check_header(self, line: str, lineno: int) -> list[str]:
        header = line.rstrip("\r\n").split("\t")
        want = list(columns(self.metric))
        if header[:5] != want:
            raise DataError(
                f"{self.path}:{lineno}: the header must start with {' '.join(want)!r}, "
                f"found {sanitize(' '.join(header[:5]), 120)!r}; is this the TSV of another experiment or "
                "metric? Use another --tag or move the file away."
            )
        return header

    def _parse(self, line: str, header: list[str], lineno: int, *, where: str = "", fix: str = "") -> Row:
        def bad(why: str) -> DataError:
            at = where or f"{self.path}:{lineno}"
            return DataError(f"{at}: {why} (line: {sanitize(line, 120)!r}); {fix or self._fix(lineno)}")

        cells = line.split("\t")
        if len(cells) != len(header):
            raise bad(f"{len(cells)} columns where the header has {len(header)}")
        extra = dict(zip(header[5:], cells[5:], strict=False))
        try:
            checked = validate_row(
                {"commit": cells[0], "metric": cells[1], "memory_gb": cells[2], "status": cells[3],
                 "n": extra.get("n", "")}
            )  # fmt: skip
        except ValueError as exc:
            raise bad(str(exc)) from None
        return Row(checked.commit, checked.metric, checked.memory_gb, checked.status, cells[4], extra)


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
    The seal follows (only when the file matched it: a file edited behind the harness's back
    stays an error); bytes after the seal stay after it, for the loop to judge as usual.
    """
    with file_lock(path.with_name(path.name + ".lock")):
        raw = path.read_bytes()
        seal = sealing.read(path)
        body, tail, _ = sealing.split(path, raw, seal)
        lines = raw.decode("utf-8", "replace").split("\n")
        rows = [line.split("\t") for line in lines[1:] if line.strip()]
        if any(len(cells) > 3 and cells[3] != "crash" for cells in rows):
            raise DataError(f"{path} has scored rows: its metric column cannot be renamed")
        first, newline, rest = body.partition(b"\n")
        header = first.decode("utf-8", "replace").split("\t")
        if len(header) < 2:
            return
        header[1] = metric
        renamed = "\t".join(header).encode("utf-8") + newline + rest
        write_atomic(path, renamed + tail)
        if seal is not None:
            sealing.write(path, Seal(size=len(renamed), chain=sealing.extend(sealing.START, renamed)))


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
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror}); pass the path of a results TSV") from None
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
        header = [clean(c) for c in first]
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
        cells = [clean(c) for c in line.split("\t")]  # shown on consoles and in HTML: no escapes
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
