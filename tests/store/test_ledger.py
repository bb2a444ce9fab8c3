"""The results TSV: exact columns, formatting, strict and lenient reading, concurrent appends,
and the ledger's in-memory counts."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from harness.errors import DataError
from harness.store.ledger import COLUMNS, EXTRA_COLUMNS, PRUNED, Ledger, Row, columns, read_any_tsv

KARPATHY = Path(__file__).resolve().parents[1] / "fixtures" / "karpathy_mar8_results.tsv"


def test_header_and_row_format(tmp_path: Path) -> None:
    tsv = Ledger(tmp_path / "results" / "mar8.tsv")
    tsv.append(Row("baseline", 0.9979, 44.04, "keep", "baseline", {"n": "0", "agent": "search"}))
    tsv.append(
        Row("bea057b", 0.98604149, 43.94, "discard", "halve\tbatch\nsize", {"reason": "worse\tthan best"})
    )
    tsv.append(Row("0000000", 0.0, 0.0, "crash", "oops"))
    lines = tsv.path.read_text().split("\n")
    assert lines[-1] == ""  # every line ends with a newline
    header = lines[0].split("\t")
    assert tuple(header[:5]) == ("commit", "val_bpb", "memory_gb", "status", "description") == COLUMNS
    assert tuple(header[5:]) == EXTRA_COLUMNS
    first = lines[1].split("\t")
    assert first[:5] == ["baseline", "0.997900", "44.0", "keep", "baseline"]
    assert first[5] == "0" and first[5 + EXTRA_COLUMNS.index("agent")] == "search"
    second = lines[2].split("\t")
    assert len(second) == len(header)
    assert second[:5] == ["bea057b", "0.986041", "43.9", "discard", "halve batch size"]
    assert second[5 + EXTRA_COLUMNS.index("reason")] == "worse than best"
    assert lines[3].split("\t")[:5] == ["0000000", "0.000000", "0.0", "crash", "oops"]
    for rows in (tsv.rows(), Ledger(tsv.path).rows()):  # in memory as on disk
        assert [r.status for r in rows] == ["keep", "discard", "crash"]
        assert rows[1].metric == pytest.approx(0.986041) and rows[1].description == "halve batch size"
        assert rows[0].extra["agent"] == "search" and rows[0].extra["model"] == ""
    assert tsv.rows() == Ledger(tsv.path).rows()


def test_metric_column_is_named_after_the_metric(tmp_path: Path) -> None:
    tsv = Ledger(tmp_path / "k.tsv", metric="tokens_per_s")
    tsv.append(Row("abc1234", 1658736.25, 0.0, "keep", "baseline"))
    assert tsv.path.read_text().startswith("commit\ttokens_per_s\tmemory_gb\tstatus\tdescription\t")
    assert Ledger(tsv.path, metric="tokens_per_s").rows()[0].metric == pytest.approx(1658736.25)
    assert columns("x")[1] == "x"
    with pytest.raises(DataError, match="k.tsv:1: the header"):
        Ledger(tmp_path / "k.tsv", metric="val_bpb")
    other = Ledger(tmp_path / "new.tsv", metric="val_bpb")
    (tmp_path / "new.tsv").write_text(tsv.path.read_text())  # another experiment's file appears
    with pytest.raises(DataError, match="header"):
        other.append(Row("x", 1.0, 0.0, "keep", "y"))


def test_bad_rows_are_programming_errors(tmp_path: Path) -> None:
    tsv = Ledger(tmp_path / "t.tsv")
    with pytest.raises(ValueError, match="status"):
        tsv.append(Row("x", 1.0, 0.0, "repeat", "y"))
    with pytest.raises(ValueError, match="unknown extra"):
        tsv.append(Row("x", 1.0, 0.0, "keep", "y", {"secret_column": "1"}))
    assert tsv.rows() == [] and Ledger(tsv.path).rows() == []  # nothing half-written


def test_missing_and_empty_files_have_no_rows(tmp_path: Path) -> None:
    assert Ledger(tmp_path / "none.tsv").rows() == []
    (tmp_path / "empty.tsv").write_text("")
    assert Ledger(tmp_path / "empty.tsv").rows() == []


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("abc1234\tnot-a-number\t1.0\tkeep\tx" + "\t" * len(EXTRA_COLUMNS), "not a number"),
        ("abc1234\t1.0\t1.0\tmaybe\tx" + "\t" * len(EXTRA_COLUMNS), "status"),
        ("abc1234\t1.0\t1.0\tkeep", "columns"),
    ],
)
def test_rows_is_strict_and_names_the_line(tmp_path: Path, line: str, why: str) -> None:
    tsv = Ledger(tmp_path / "t.tsv")
    tsv.append(Row("aaaaaaa", 1.0, 1.0, "keep", "baseline"))
    good = tsv.path.read_text().splitlines()[1]
    tsv.path.write_text(tsv.path.read_text() + line + "\n" + good + "\n")
    with pytest.raises(DataError, match=rf"t\.tsv:3: .*{why}"):
        Ledger(tsv.path)


def test_a_foreign_header_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "t.tsv"
    p.write_text("sha\tval_bpb\tmemory_gb\tstatus\tdescription\nabc\t1.0\t1.0\tkeep\tx\n")
    with pytest.raises(DataError, match=r"t\.tsv:1: the header must start with"):
        Ledger(p)


def test_appends_follow_an_older_header(tmp_path: Path) -> None:
    p = tmp_path / "old.tsv"
    p.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\treason\tn\n")
    written = Ledger(p).append(
        Row("abc1234", 1.5, 2.0, "crash", "d", {"n": "4", "reason": "timeout", "agent": "x"})
    )
    assert p.read_text().splitlines()[1] == "abc1234\t1.500000\t2.0\tcrash\td\ttimeout\t4"
    assert Ledger(p).rows()[0].extra == written.extra == {"reason": "timeout", "n": "4"}


WRITER = """
import sys
from pathlib import Path
from harness.store.ledger import Ledger, Row
tsv = Ledger(Path(sys.argv[1]))
worker = sys.argv[2]
for i in range(int(sys.argv[3])):
    tsv.append(Row(f"{worker}{i:06d}", i / 1000, 1.0, "discard", f"worker {worker} row {i} " + "x" * 300,
                   {"n": str(i), "worker": worker, "summary": "y" * 2000}))
"""


def test_concurrent_appends_from_processes_stay_whole(tmp_path: Path) -> None:
    path = tmp_path / "shared.tsv"
    writers, per_writer = 4, 200
    procs = [
        subprocess.Popen([sys.executable, "-c", textwrap.dedent(WRITER), str(path), f"w{k}", str(per_writer)])
        for k in range(writers)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    lines = path.read_text().split("\n")
    assert lines[-1] == ""
    assert sum(1 for ln in lines if ln.startswith("commit\t")) == 1
    assert lines[0].startswith("commit\t")
    rows = Ledger(path).rows()  # strict: any torn or interleaved line would raise
    assert len(rows) == writers * per_writer
    for k in range(writers):
        mine = [r for r in rows if r.extra["worker"] == f"w{k}"]
        assert [int(r.extra["n"]) for r in mine] == list(range(per_writer))  # each writer's order kept
        assert all(
            r.commit == f"w{k}{int(r.extra['n']):06d}" and len(r.extra["summary"]) == 2000 for r in mine
        )


FULL_DISK_WRITER = """
import os, resource, signal, sys
from harness.store.ledger import Ledger, Row
tsv = Ledger(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, like ENOSPC
size = os.path.getsize(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
try:
    tsv.append(Row("abcdef1", 0.9, 1.0, "keep", "x" * 500))
except OSError as exc:
    print("refused", exc.errno)
"""


def test_a_row_that_does_not_fit_leaves_no_torn_line(tmp_path: Path) -> None:
    """Disk full mid-row (a partial write, then an error): the file is as before, not torn,
    so the next append after space is freed (--resume) still yields a strictly readable file."""
    tsv = Ledger(tmp_path / "full.tsv")
    tsv.append(Row("0000001", 1.0, 0.0, "keep", "baseline"))
    before = tsv.path.read_bytes()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(FULL_DISK_WRITER), str(tsv.path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "refused" in out.stdout, out.stdout + out.stderr
    assert tsv.path.read_bytes() == before
    tsv.append(Row("abcdef2", 0.8, 1.0, "keep", "after space was freed"))
    assert [r.description for r in Ledger(tsv.path).rows()] == ["baseline", "after space was freed"]


def test_read_any_tsv_on_the_real_karpathy_night() -> None:
    rows, skipped = read_any_tsv(KARPATHY)
    assert skipped == []
    assert len(rows) == 126
    statuses = [r.status for r in rows]
    assert (statuses.count("keep"), statuses.count("discard"), statuses.count("crash")) == (23, 102, 1)
    assert rows[0].metric == pytest.approx(0.9979) and rows[0].description == "baseline"
    crash = next(r for r in rows if r.status == "crash")
    assert crash.metric == 0.0 and crash.memory_gb == 0.0
    assert all(r.extra == {} for r in rows)


def test_read_any_tsv_is_lenient_and_reports_skips(tmp_path: Path) -> None:
    p = tmp_path / "hand.tsv"
    p.write_text(
        "commit\tloss\tmemory_gb\tstatus\tdescription\tgpu\tnotes\n"
        "a1\t1.5\t10.0\tkeep\tbaseline\tH100\tfirst\n"
        "a2\t1.4\t\tKEEP\tno memory, fewer columns\n"
        "a3\tn/a\t10.0\tdiscard\tbad metric\n"
        "\n"
        "a4\t1.6\t10.0\tdiscard\tmore\tA100\tx\tstray\n"
        "a5\t1.6\n"
        "a6\t1.7\t1.0\tpending\twhat\n"
    )
    rows, skipped = read_any_tsv(p)
    assert [r.commit for r in rows] == ["a1", "a2", "a4"]
    assert rows[0].extra == {"gpu": "H100", "notes": "first"}
    assert rows[1].memory_gb == 0.0 and rows[1].status == "keep" and rows[1].extra == {}
    assert rows[2].extra == {"gpu": "A100", "notes": "x", "column_8": "stray"}
    assert [line for line, _ in skipped] == [4, 7, 8]
    assert "metric" in skipped[0][1] and "columns" in skipped[1][1] and "status" in skipped[2][1]


def test_read_any_tsv_without_header_and_with_tabbed_descriptions(tmp_path: Path) -> None:
    p = tmp_path / "bare.tsv"
    p.write_text("abc\t1.0\t2.0\tkeep\tsplit\tdescription\n")
    rows, skipped = read_any_tsv(p)
    assert rows[0].description == "split description"
    assert skipped == [(0, skipped[0][1])] and "no header line" in skipped[0][1]  # said, not silent
    p.write_text("abc\t1.0\t2.0\tkeep\tfive columns\n")
    assert read_any_tsv(p)[1] == []  # the plain five columns: nothing to say
    with pytest.raises(DataError, match="no such file"):
        read_any_tsv(tmp_path / "missing.tsv")


def test_counts_are_kept_in_memory_and_match_a_fresh_read(tmp_path: Path) -> None:
    """Attempts, spend, best and the next number follow every append, exactly as a re-read says."""
    ledger = Ledger(tmp_path / "t.tsv")
    assert (ledger.attempts, ledger.spent, ledger.best, ledger.next_n) == (0, 0.0, None, 0)
    ledger.append(Row("aaaaaaa", 1.0, 1.0, "keep", "baseline", {"n": "0", "runs": "1.0,1.02,0.98"}))
    ledger.append(Row("bbbbbbb", 0.9, 1.0, "keep", "lower", {"n": "1", "cost_usd": "0.0125"}))
    ledger.append(Row("0000000", 0.0, 0.0, "crash", "bad edit", {"n": "2", "cost_usd": "0.5"}))
    ledger.append(Row("ccccccc", 0.95, 1.0, "discard", "worse", {"n": "3", "cost_usd": "junk"}))
    again = Ledger(ledger.path)
    for view in (ledger, again):
        assert view.attempts == 3 and view.spent == pytest.approx(0.5125) and view.next_n == 4
        assert view.best is not None and view.best.commit == "bbbbbbb" and view.best.values() == [0.9]
        assert view.find(2) is not None and view.find(2).description == "bad edit"  # type: ignore[union-attr]
        assert view.find(7) is None
    assert again.rows()[0].values() == [1.0, 1.02, 0.98]
    assert Row("x", 0.5, 0.0, "keep", "y", {"runs": "junk,1"}).values() == [0.5]


def test_a_pruned_discard_and_a_crash_have_no_score() -> None:
    assert Row("abc1234", 0.99, 1.0, "discard", "d", {}).scored
    assert Row("abc1234", 0.99, 1.0, "keep", "k", {}).scored
    assert not Row("abc1234", 0.0, 0.0, "discard", "p", {"reason": PRUNED}).scored
    assert not Row("abc1234", 0.0, 0.0, "crash", "c", {"reason": "nan"}).scored
    assert not Row("abc1234", float("nan"), 0.0, "discard", "n", {}).scored
