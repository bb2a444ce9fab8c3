"""Read what a run printed: the summary block at the end, and the loss on progress lines.

The summary block (ARCHITECTURE.md) is a ``---`` line followed by ``key: value`` lines::

    ---
    val_bpb:          0.997900
    training_seconds: 300.1

The last block wins; a block without a single parseable ``key: value`` line is ignored, so a
stray ``---`` printed after the real block does not hide it. Numbers become floats (``nan``
and ``inf`` included: deciding what a non-finite metric means is the caller's job), anything
else stays a string. No block at all means the run crashed.

Progress lines look like
``step 00012 (4.1%) | loss: 3.123456 | lrm: 1.00 | dt: 312ms | tok/sec: 1,234,567 | mfu: 40.1% | ...``;
`last_loss` and `progress_pct` pick the two numbers the runner and the live view need out of one
line, `throughput` the tokens per second and MFU the diagnostics record.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

_KEY_VALUE = re.compile(r"^\s*([A-Za-z_][\w.\-/]*)\s*:\s*(\S.*?)\s*$")
_LOSS = re.compile(
    r"(?<![\w.])loss:\s*([-+]?(?:nan|inf(?:inity)?|\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|\.\d+))", re.I
)
_PCT = re.compile(r"\(\s*(\d+(?:\.\d+)?)\s*%\s*\)")
_TOK = re.compile(r"(?<![\w.])tok/s(?:ec)?:\s*(\d[\d,]*(?:\.\d+)?)", re.I)
_MFU = re.compile(r"(?<![\w.])mfu:\s*(\d+(?:\.\d+)?)\s*%", re.I)

# read_summary reads the log's tail in windows growing from this size; a 50 MB log whose
# block sits in its last lines costs one 64 KiB read.
_TAIL_BYTES = 1 << 16


def _value(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def parse_summary(text: str) -> dict[str, float | str] | None:
    """The last summary block in ``text`` as a dict, or None when there is none."""
    lines = text.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() != "---":
            continue
        block: dict[str, float | str] = {}
        for line in lines[i + 1 :]:
            if not line.strip():
                continue
            m = _KEY_VALUE.match(line)
            if m is None:
                break  # the block ends at the first line that is not `key: value`
            block[m.group(1)] = _value(m.group(2))
        if block:
            return block
    return None


def read_summary(log_path: Path) -> dict[str, float | str] | None:
    """The last summary block of the log at ``log_path``, reading only as much of its tail as needed.

    A missing log reads as no block (the run never started).
    """
    try:
        with open(log_path, "rb") as f:
            return _tail_summary(f)
    except FileNotFoundError:
        return None


def _tail_summary(f: BinaryIO) -> dict[str, float | str] | None:
    size = os.fstat(f.fileno()).st_size
    window = _TAIL_BYTES
    while True:
        start = max(0, size - window)
        f.seek(start)
        data = f.read(size - start)
        if start > 0:
            # Drop the first, probably partial, line: a block's `---` is only trusted whole.
            cut = data.find(b"\n")
            data = data[cut + 1 :] if cut >= 0 else b""
        # Any `---` inside the window comes after everything outside it, so the last
        # parseable block inside the window is the last one of the file.
        block = parse_summary(data.decode("utf-8", "replace"))
        if block is not None or start == 0:
            return block
        window *= 4


def last_loss(line: str) -> float | None:
    """The number after ``loss:`` on a progress line (nan/inf included), or None.

    ``val_loss:`` and ``train_loss:`` are not ``loss:``.
    """
    m = _LOSS.search(line)
    if m is None:
        return None
    try:
        return float(m.group(1))
    except ValueError:
        return None


def progress_pct(line: str) -> float | None:
    """The budget share ``(<pct>%)`` on a progress line, as a percentage, or None."""
    m = _PCT.search(line)
    return float(m.group(1)) if m else None


def throughput(line: str) -> tuple[float | None, float | None]:
    """(tokens per second, MFU percent) on a progress line, each None when absent."""
    tok = _TOK.search(line)
    mfu = _MFU.search(line)
    return (
        float(tok.group(1).replace(",", "")) if tok else None,
        float(mfu.group(1)) if mfu else None,
    )


def metric_value(summary: dict[str, float | str] | None, metric: str) -> float | None:
    """The metric as a float, or None when the run did not report a usable one (a crash)."""
    if summary is None:
        return None
    value = summary.get(metric)
    if isinstance(value, float) and value == value and value not in (float("inf"), float("-inf")):
        return value
    return None
