"""The ledger's seal: the loop trusts only the rows the harness wrote (issue 18, item 6)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import DataError
from harness.store.ledger import Ledger, Row
from harness.store.seal import seal_path, untrusted_path


def _ledger(tmp_path: Path, n: int = 2) -> Ledger:
    ledger = Ledger(tmp_path / "t.tsv", verify=True)
    for i in range(n):
        ledger.append(Row(f"aaaaaa{i}", 1.0 - i / 10, 1.0, "keep", f"row {i}", {"n": str(i)}))
    return ledger


def _forged(ledger: Ledger, n: int) -> str:
    return ledger.line(Row("bbbbbbb", 0.1, 1.0, "keep", "forged", {"n": str(n)}))


def test_a_row_appended_behind_the_harness_is_cut_off_and_kept_aside(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    sealed = ledger.path.read_bytes()
    with open(ledger.path, "a") as fh:
        fh.write(_forged(ledger, 2) + "\n")
    again = Ledger(ledger.path, verify=True)
    assert [r.description for r in again.rows()] == ["row 0", "row 1"] and again.next_n == 2
    assert again.untrusted and "forged" in again.untrusted[0]
    assert ledger.path.read_bytes() == sealed  # cut back to what the harness wrote
    assert "forged" in untrusted_path(ledger.path).read_text()
    assert Ledger(ledger.path).rows() == again.rows()  # and the file reads strictly


def test_the_journaled_row_after_the_seal_is_the_harnesss_own(tmp_path: Path) -> None:
    """Killed between the append and the seal: the row pending.json announced is trusted."""
    ledger = _ledger(tmp_path)
    line = ledger.line(Row("ccccccc", 0.5, 1.0, "keep", "mine", {"n": "2"}))
    with open(ledger.path, "a") as fh:
        fh.write(line + "\n")
    again = Ledger(ledger.path, verify=True, journaled=line)
    assert [r.description for r in again.rows()] == ["row 0", "row 1", "mine"] and not again.untrusted
    assert Ledger(ledger.path, verify=True).rows() == again.rows()  # sealed now


def test_a_torn_row_after_the_seal_is_cut_off(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    line = ledger.line(Row("ccccccc", 0.5, 1.0, "keep", "mine", {"n": "2"}))
    with open(ledger.path, "a") as fh:
        fh.write(line[: len(line) // 2])  # a power cut in the middle of the write
    again = Ledger(ledger.path, verify=True, journaled=line)
    assert len(again.rows()) == 2 and again.untrusted
    again.append(Row("ccccccc", 0.5, 1.0, "keep", "mine", {"n": "2"}))
    assert [r.description for r in Ledger(ledger.path, verify=True).rows()] == ["row 0", "row 1", "mine"]


def test_an_edited_history_is_refused_with_the_way_out(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path)
    text = ledger.path.read_text().replace("0.900000", "0.100000")
    ledger.path.write_text(text)
    with pytest.raises(DataError) as err:
        Ledger(ledger.path, verify=True)
    assert f"rm {seal_path(ledger.path)}" in str(err.value)
    assert ledger.path.read_text() == text  # nothing was changed
    seal_path(ledger.path).unlink()  # the person vouches for the file
    assert Ledger(ledger.path, verify=True).rows()[1].metric == pytest.approx(0.1)
    assert seal_path(ledger.path).exists()  # sealed as it is


def test_appends_quarantine_what_others_appended_since_the_seal(tmp_path: Path) -> None:
    """Mid-night (the guard was bypassed): the next append does not build on a forged row."""
    ledger = _ledger(tmp_path)
    with open(ledger.path, "a") as fh:
        fh.write(_forged(ledger, 2) + "\n")
    ledger.append(Row("ddddddd", 0.7, 1.0, "discard", "honest", {"n": "2"}))
    assert [r.description for r in Ledger(ledger.path, verify=True).rows()] == ["row 0", "row 1", "honest"]
    assert "forged" in untrusted_path(ledger.path).read_text()


def test_a_ledger_without_seal_is_trusted_and_sealed(tmp_path: Path) -> None:
    path = tmp_path / "old.tsv"
    _ledger(tmp_path).path.rename(path)
    seal_path(tmp_path / "t.tsv").unlink()
    assert not seal_path(path).exists()
    assert len(Ledger(path, verify=True).rows()) == 2
    assert seal_path(path).exists()
