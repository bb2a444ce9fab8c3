"""Reading state files through their schemas: one line naming the file, what is wrong and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.errors import DataError
from harness.store.schema import Pending, read_count, read_json, read_notes, read_program, read_text


def test_text_that_is_not_utf8_is_replaced_with_one_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "program.md"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    assert read_program(path) == "caf\ufffd\n"
    assert read_program(path) == "caf\ufffd\n"
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and str(path) in err[0] and "0xe9 at offset 3" in err[0]
    path.write_bytes("caf\xe9 au lait\n".encode("latin-1"))  # a new version warns again
    read_program(path)
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_folders_special_and_oversized_files_are_errors_naming_the_fix(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    with pytest.raises(DataError, match=r"dir: the file is a folder .*; do this"):
        read_text(tmp_path / "dir", limit=10, fix="do this")
    big = tmp_path / "notes.md"
    big.write_bytes(b"x" * ((1 << 20) + 1))
    with pytest.raises(DataError, match="more than the 1,048,576 allowed"):
        read_notes(big)
    assert read_text(tmp_path / "missing", limit=10, fix="") is None
    assert read_notes(tmp_path / "missing") == ""


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"n": 1.0, "description": "x"}, "key 'n'"),  # strict: a float is not an attempt number
        ({"n": True, "description": "x"}, "key 'n'"),
        ({"n": 1, "description": "x", "commit": "XYZ"}, "key 'commit'"),
        ({"n": 1, "description": "x", "cost_usd": float("inf")}, "key 'cost_usd'"),
        ({"n": 1}, "missing key 'description'"),
    ],
)
def test_pending_schema(tmp_path: Path, data: dict[str, object], needle: str) -> None:
    path = tmp_path / "pending.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        read_json(path, Pending, fix="remove it")
    assert needle in str(err.value) and str(path) in str(err.value) and "remove it" in str(err.value)
    assert "\n" not in str(err.value)


def test_counts(tmp_path: Path) -> None:
    path = tmp_path / "served"
    path.write_text("12\n")
    assert read_count(path, fix="") == 12
    for bad in ("-1", "1.5", "twelve", "1" * 30, "\xb2"):
        path.write_text(bad)
        with pytest.raises(DataError, match="expected one whole number"):
            read_count(path, fix="rm it")
