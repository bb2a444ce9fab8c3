"""The one sanitiser for text from agents and runs, and the summary column."""

from __future__ import annotations

import json
import math

import pytest

from harness.store.text import SUMMARY_LIMIT, encodable, sanitize, summary_cell


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("plain text", "plain text"),
        ("\x1b[31mred\x1b[0m", "red"),  # CSI, parameters and all
        ("a\x1b]0;window title\x07b", "ab"),  # OSC up to BEL
        ("a\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\b", "alinkb"),  # OSC up to ST (a hyperlink)
        ("a\x1bPq#0;2;0;0;0\x1b\\b", "ab"),  # DCS (sixel)
        ("a\x9b31mb", "ab"),  # 8-bit CSI
        ("bell\x07 nul\x00 del\x7f", "bell nul del"),
        ("tab\there\nnewline\r\nreturn", "tab here newline return"),
        ("\u202eevil\u202c \u2066x\u2069", "evil x"),  # bidirectional overrides
        ("lone \udce9 surrogate", "lone \ufffd surrogate"),
        ("  many   spaces  ", "many spaces"),
        ("café ünïcode 漢字 🙂", "café ünïcode 漢字 🙂"),
    ],
)
def test_sanitize_one_line(raw: str, clean: str) -> None:
    assert sanitize(raw) == clean
    assert sanitize(sanitize(raw)) == sanitize(raw)  # idempotent: applying it at two sinks is harmless
    sanitize(raw).encode("utf-8")  # always writable


def test_sanitize_bounds_the_length() -> None:
    assert sanitize("x" * 5000, 200) == "x" * 199 + "\u2026"
    assert len(sanitize("word " * 1000, 50)) == 50
    assert sanitize("short", 200) == "short"


def test_sanitize_keeps_code_layout_with_newlines() -> None:
    diff = "-    x = 1\r\n+\tx = 2\x1b[2J\n \n"
    assert sanitize(diff, newlines=True) == "-    x = 1\n+\tx = 2\n \n"


def test_encodable_replaces_only_lone_surrogates() -> None:
    assert encodable("ok \udce9 ok") == "ok \ufffd ok"
    assert encodable("🙂 é") == "🙂 é"


def test_summary_cell_holds_parsed_pairs_bounded_metric_first() -> None:
    summary: dict[str, float | str] = {
        "training_seconds": 300.1,
        "val_bpb": 0.9979,
        "note": "\x1b[1mbold\x1b[0m",
    }
    summary.update({f"k{i:05d}": "v" * 500 for i in range(10_000)})
    summary["inf"] = math.inf
    cell = summary_cell(summary, "val_bpb")
    assert len(cell) <= SUMMARY_LIMIT
    data = json.loads(cell)  # strict JSON: no NaN or Infinity literals
    keys = list(data)
    assert keys[:3] == ["val_bpb", "training_seconds", "note"]
    assert data["val_bpb"] == 0.9979 and data["note"] == "bold"
    assert all(len(v) <= 80 for v in data.values() if isinstance(v, str))
    assert data["_omitted"] > 9_000
    assert summary_cell(None) == "" and summary_cell({}) == ""
    assert json.loads(summary_cell({"x": math.nan}))["x"] == "nan"
