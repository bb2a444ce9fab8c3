"""The per-attempt record: `results/<tag>/attempts/<n>.json`, what the prompt and `show` read.

The TSV keeps one short row per attempt; this record keeps what a row has no room for: the
run's diagnostics (steps, throughput, MFU, peak memory, the time split and the loss curve), the
novelty key, which attempt it was built on or duplicated, the model's note, and the last lines
of its log. The night writes it once, when the row is written; nothing rewrites it after.

    {"schema": 1, "n": 5, "status": "discard", "metric": 0.9951, "description": "...",
     "agent": "claude", "commit": "<sha>", "parent": "<sha>", "key": "<novelty key>",
     "built_on": 3, "duplicate_of": null, "note": "...", "reason": "", "runs": 1,
     "diagnostics": {"steps": 953, "tokens_per_sec": 1660000.0, "mfu_percent": 39.8,
                     "peak_memory_gb": 44.0, "startup_s": 21.0, "training_s": 300.1,
                     "eval_s": 25.3, "wall_s": 350.2, "loss": [[5.0, 6.1], ..., [100.0, 3.2]]},
     "summary": {...the run's summary block...}, "log_tail": "..."}

`loss` is the mean training loss in each 5 % slice of the budget, keyed by the slice's end.
A record that cannot be read is skipped (it is a convenience; the TSV is the ledger).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness.store.atomic import write_atomic

SCHEMA = 1
LOG_TAIL_LINES = 20
MAX_LOG_TAIL_CHARS = 2_000


@dataclass
class Diagnostics:
    """What one run's log says about how it trained (None: the run did not print it)."""

    steps: int | None = None
    tokens_per_sec: float | None = None
    mfu_percent: float | None = None
    peak_memory_gb: float | None = None
    # With prepare's markers: the harness's clock (start to first batch, first batch to hand-off,
    # hand-off to the end of the evaluation). Without: the first progress line, the summary's
    # training_seconds (else first to last progress line), the last progress line to the summary.
    startup_s: float | None = None
    training_s: float | None = None
    eval_s: float | None = None
    wall_s: float | None = None
    loss: list[tuple[float, float]] = field(default_factory=list)  # (budget % at the slice's end, mean loss)

    def loss_at(self, pct: float) -> float | None:
        """The mean loss of the slice ending nearest to `pct` % of the budget (at or before it)."""
        before = [loss for end, loss in self.loss if end <= pct + 1e-9]
        return before[-1] if before else None

    def falling(self) -> float | None:
        """The relative change of the loss over the last two slices (negative: still falling)."""
        if len(self.loss) < 2:
            return None
        prev, last = self.loss[-2][1], self.loss[-1][1]
        if not (math.isfinite(prev) and math.isfinite(last)) or prev == 0:
            return None
        return (last - prev) / abs(prev)

    def describe(self) -> str:
        """One line: steps, throughput, MFU, peak memory and the time split."""
        bits = []
        if self.steps is not None:
            bits.append(f"steps {self.steps}")
        if self.tokens_per_sec is not None:
            bits.append(f"{_si(self.tokens_per_sec)} tok/s")
        if self.mfu_percent is not None:
            bits.append(f"MFU {self.mfu_percent:.1f}%")
        if self.peak_memory_gb is not None:
            bits.append(f"peak {self.peak_memory_gb:.1f} GB")
        split = [
            f"{name} {value:.0f} s"
            for name, value in (
                ("start-up", self.startup_s),
                ("training", self.training_s),
                ("eval", self.eval_s),
            )
            if value is not None
        ]
        if split:
            bits.append(", ".join(split))
        return " | ".join(bits)

    def brief(self) -> str:
        """A few words for a table row: steps, throughput, peak memory, the final loss and its trend."""
        bits = []
        if self.steps is not None:
            bits.append(f"{self.steps} steps")
        if self.tokens_per_sec is not None:
            bits.append(f"{_si(self.tokens_per_sec)} tok/s")
        if self.peak_memory_gb is not None:
            bits.append(f"{self.peak_memory_gb:.1f} GB")
        if self.loss:
            trend = self.falling()
            where = "" if trend is None else (" falling" if trend < -0.001 else " flat")
            bits.append(f"loss {self.loss[-1][1]:.4g}{where}")
        return ", ".join(bits)

    def describe_loss(self, points: Sequence[int] = (25, 50, 75, 100)) -> str:
        """One line: the loss at `points` % of the budget and whether it was still falling at the end."""
        values = [(p, self.loss_at(p)) for p in points]
        shown = " ".join(f"{p}%:{v:.4g}" for p, v in values if v is not None)
        if not shown:
            return ""
        trend = self.falling()
        if trend is None:
            end = ""
        elif trend < -0.001:
            end = f"; still falling at the end ({trend * 100:+.1f}% over the last 5%)"
        else:
            end = f"; flat at the end ({trend * 100:+.1f}% over the last 5%)"
        return f"loss by budget share {shown}{end}"


@dataclass
class AttemptRecord:
    """Everything kept about attempt `n` beyond its TSV row."""

    n: int
    status: str
    description: str
    agent: str = ""
    metric: float | None = None  # None for a crash
    commit: str = ""  # full sha; "" when it never became a commit
    parent: str = ""  # the best it was committed on
    key: str = ""  # the novelty key of its change
    built_on: int | None = None  # the attempt named by `Parent: #n`
    duplicate_of: int | None = None  # the attempt it repeated (not run)
    note: str = ""  # the model's `Note:` line
    reason: str = ""
    runs: int = 0
    diagnostics: Diagnostics | None = None
    summary: dict[str, float | str] = field(default_factory=dict)
    log_tail: str = ""

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["schema"] = SCHEMA
        if self.diagnostics is not None:
            data["diagnostics"]["loss"] = [[round(a, 2), _round(b)] for a, b in self.diagnostics.loss]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AttemptRecord:
        """The record in `data`; ValueError/TypeError/KeyError when it is not one."""
        diag = data.get("diagnostics")
        diagnostics = None
        if isinstance(diag, dict):
            loss = [(float(a), float(b)) for a, b in diag.get("loss") or []]
            diagnostics = Diagnostics(**{**diag, "loss": loss})
        fields = {k: v for k, v in data.items() if k in cls.__dataclass_fields__ and k != "diagnostics"}
        record = cls(**fields, diagnostics=diagnostics)
        if not isinstance(record.n, int) or not isinstance(record.status, str):
            raise ValueError("n and status are required")
        return record


def tail(text: str, lines: int = LOG_TAIL_LINES, chars: int = MAX_LOG_TAIL_CHARS) -> str:
    """The last `lines` lines of `text`, at most `chars` characters (cut at the front)."""
    out = "\n".join(text.splitlines()[-lines:])
    return out[-chars:]


def write(path: Path, record: AttemptRecord) -> None:
    write_atomic(path, json.dumps(record.to_json(), indent=1, sort_keys=True) + "\n")


def parse(text: str) -> AttemptRecord | None:
    """The record in `text`, or None when it is not a record."""
    try:
        data = json.loads(text)
        return AttemptRecord.from_json(data) if isinstance(data, dict) else None
    except (ValueError, TypeError, KeyError):
        return None


def read(path: Path) -> AttemptRecord | None:
    try:
        return parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return None


def read_all(folder: Path) -> dict[int, AttemptRecord]:
    """Every readable record in `folder`, by attempt number."""
    out: dict[int, AttemptRecord] = {}
    if not folder.is_dir():
        return out
    for path in folder.glob("*.json"):
        record = read(path)
        if record is not None and path.stem == str(record.n):
            out[record.n] = record
    return out


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _round(x: float) -> float:
    return round(x, 6) if math.isfinite(x) else x
