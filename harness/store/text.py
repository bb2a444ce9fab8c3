"""Text from agents and runs, made safe before it is stored or shown.

A description comes from a model, a reason and a summary from what a run printed: any of them
may hold terminal escape sequences (which repaint a person's console, or hide text in it),
control characters, tabs and newlines (which break a TSV row), bidirectional overrides (which
make text read differently than it is), lone surrogates (which cannot be encoded), or be
megabytes long. `sanitize` is the one function applied where such text enters the results
TSV, a commit message, the live view and the HTML report:

  * escape sequences (CSI ``ESC [ ... m``, OSC ``ESC ] ... BEL``, two-byte ``ESC x``, 8-bit CSI)
    are removed whole, so no stray ``[31m`` is left behind;
  * other control characters, line and paragraph separators and bidirectional controls are
    removed; tabs, newlines and carriage returns become spaces (or stay newlines where a
    multi-line text is wanted), and runs of spaces collapse;
  * unencodable code points (lone surrogates) become U+FFFD;
  * the result is cut to `limit` characters, the last one an ellipsis.

`summary_cell` is what the TSV's summary column holds: only the parsed ``key: value`` pairs of
a run's summary block, each bounded, the metric first, the whole capped in size.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping

DESCRIPTION_LIMIT = 200  # the description column and a commit message's subject
REASON_LIMIT = 300  # the reason column (a crash's last exception line, a refusal)
FIELD_LIMIT = 200  # any other TSV cell written from outside text (model, agent)
SUMMARY_LIMIT = 2000  # the summary column: compact JSON of the parsed pairs
BODY_LIMIT = 2000  # a commit message's body (after its subject line)
SUMMARY_KEYS = 32  # at most this many pairs in the summary column
SUMMARY_KEY_LIMIT = 64
SUMMARY_VALUE_LIMIT = 80
ELLIPSIS = "\u2026"

# ESC [ params intermediates final | ESC ] ... (BEL | ESC \) | ESC P/X/^/_ ... ESC \ | ESC x | 8-bit CSI
_ESCAPES = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]?"
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"
    r"|\x1b[ -/]*[0-~]?"
    r"|\x9b[0-?]*[ -/]*[@-~]?"
)
_SPACES = re.compile(r"[ \t]+")
_SURROGATES = re.compile("[\ud800-\udfff]")
# Bidirectional controls (the "Trojan source" characters) and the Arabic letter mark.
_BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"


def _table(multi_line: bool) -> dict[int, str | None]:
    table: dict[int, str | None] = {}
    for code in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)):
        table[code] = None
    for ch in "\t\r\v\f\u2028\u2029\x85\n":
        table[ord(ch)] = " "
    if multi_line:
        table[ord("\n")] = "\n"
        table[ord("\t")] = "\t"
        table[ord("\r")] = "\n"
    for ch in _BIDI:
        table[ord(ch)] = None
    return table


_ONE_LINE = _table(multi_line=False)
_MULTI_LINE = _table(multi_line=True)


def sanitize(text: object, limit: int | None = None, *, newlines: bool = False) -> str:
    """`text` without escape sequences or control characters, at most `limit` characters.

    One line by default: tabs and newlines become spaces, runs of spaces collapse, the ends are
    stripped. With ``newlines=True`` (a diff, a log excerpt) line breaks, tabs and indentation
    stay as they are (``\r\n`` and a lone ``\r`` become ``\n``); only what a terminal or a
    browser would interpret is removed.
    """
    s = text if isinstance(text, str) else str(text)
    if "\x1b" in s or "\x9b" in s:
        s = _ESCAPES.sub("", s)
    if newlines:
        s = s.replace("\r\n", "\n")
    s = s.translate(_MULTI_LINE if newlines else _ONE_LINE)
    if not s.isascii() and _has_surrogate(s):
        # Lone surrogates (from a surrogateescape decode) cannot be written as UTF-8.
        s = _SURROGATES.sub("\ufffd", s)
    if not newlines:
        s = _SPACES.sub(" ", s).strip()
    if limit is not None and len(s) > limit:
        s = s[: max(0, limit - 1)].rstrip() + ELLIPSIS
    return s


def encodable(s: str) -> str:
    """`s` with any lone surrogate (which UTF-8 cannot hold) replaced by U+FFFD."""
    return _SURROGATES.sub("\ufffd", s) if not s.isascii() and _has_surrogate(s) else s


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def summary_cell(summary: Mapping[str, object] | None, first: str = "", limit: int = SUMMARY_LIMIT) -> str:
    """The parsed pairs of a summary block as compact JSON for the TSV: `first` (the metric), then
    the others in the order they were printed.

    Keys and string values are sanitised and bounded; numbers stay numbers (a non-finite one
    becomes its text, so the cell is strict JSON). Pairs that would pass `SUMMARY_KEYS` or
    `limit` characters are left out, and ``"_omitted"`` says how many.
    """
    if not summary:
        return ""
    keys = sorted(summary, key=lambda k: k != first)  # stable: then in the printed order
    out: dict[str, object] = {}
    size = 2
    omitted = 0
    for key in keys:
        name = sanitize(key, SUMMARY_KEY_LIMIT)
        value = summary[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            value = sanitize(value, SUMMARY_VALUE_LIMIT)
        elif not math.isfinite(value):
            value = str(value)
        piece = len(json.dumps({name: value}, separators=(",", ":"))) - 1  # without the braces, plus a comma
        if not name or name in out or len(out) >= SUMMARY_KEYS or size + piece > limit - 24:
            omitted += 1
            continue
        out[name] = value
        size += piece
    if omitted:
        out["_omitted"] = omitted
    return json.dumps(out, separators=(",", ":"), ensure_ascii=False)


def warn(message: str) -> None:
    """One line on stderr: damage the harness worked around (not an error, nothing stopped)."""
    print(f"autoresearch: warning: {sanitize(message)}", file=sys.stderr, flush=True)
