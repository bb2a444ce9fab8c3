"""Metric provenance: a printed val_bpb counts only if prepare's evaluate_bpb computed it in that run.

A run prints its own summary, so without a check any number would do: a faked summary, or a
real evaluation followed by a nicer number. For experiments that set
`verify_metric = "evaluate_bpb"` in experiment.toml, the harness:

1. before the run, creates a fresh record file at an unpredictable path (a new 0700
   directory from `tempfile.mkdtemp`, a random file name, mode 0600) and passes it to the run
   as AUTORESEARCH_EVAL_RECORD; prepare's evaluate_bpb appends one JSON line per call
   (`prepare.evalset.record_result`: val_bpb, eval_tokens, target_tokens, bytes, seconds);
2. after the run, accepts the summary's metric only if the record is still the file the
   harness created (same inode, a regular file, not a symlink, and its first line still the
   random nonce the harness wrote there) and its LAST entry's val_bpb
   equals the printed value to the printed precision (0.997900 means +-5e-7), and, when the
   harness knows the profile's eval size, that entry evaluated exactly that many tokens.
   Otherwise the attempt is a crash with reason `unverified metric: ...`.

How a run could still forge the record, and what closes it: the run is the same user and
sees its own environment, so it could append a line itself. The static checks
(harness.integrity.checks) refuse any edit that mentions the record variable or writes outside the
run's folder, the guard (harness.integrity.guard) catches prepare/ being patched on disk, and the
static checks refuse monkeypatching evaluate_bpb or the functions it computes with in-process.
What stays open is deliberate obfuscation that defeats static analysis (building the
variable name from pieces and writing through an alias); that is the residual risk, and
why the record is one of three layers rather than the only one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

RECORD_ENV = "AUTORESEARCH_EVAL_RECORD"
VERIFIERS = ("evaluate_bpb",)  # accepted values of verify_metric


def printed_metric(summary: Mapping[str, float | str] | None, metric: str) -> str | None:
    """The metric as printed, from a raw summary block (`metrics.read_summary(log, raw=True)`)."""
    value = summary.get(metric) if summary else None
    return None if value is None else str(value)


def _tolerance(printed: str) -> Decimal | None:
    """Half a unit in the last printed place, or None if `printed` is not a number."""
    try:
        value = Decimal(printed)
    except InvalidOperation:
        return None
    if not value.is_finite():
        return None
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    return Decimal(5) * Decimal(10) ** (exponent - 1)


@dataclass
class EvalRecord:
    """The record file of one run, created by the harness before the run starts."""

    path: Path
    inode: int
    nonce: str

    @classmethod
    def create(cls, parent: Path | None = None) -> EvalRecord:
        """A new empty record at an unpredictable path (under `parent` or the temp dir)."""
        directory = Path(tempfile.mkdtemp(prefix="ar-eval-", dir=parent))
        fd, name = tempfile.mkstemp(prefix="rec-", suffix=".jsonl", dir=directory)
        # the first line is a secret of the harness: a file deleted and re-created by the run
        # (which may even get the same inode back) lacks it
        nonce = secrets.token_hex(16)
        os.write(fd, (json.dumps({"nonce": nonce}) + "\n").encode())
        os.close(fd)
        path = Path(name)
        return cls(path=path, inode=path.stat().st_ino, nonce=nonce)

    def env(self) -> dict[str, str]:
        """The run's environment entry that tells evaluate_bpb where to write."""
        return {RECORD_ENV: str(self.path)}

    def entries(self) -> list[dict[str, Any]]:
        """The JSON objects in the record, in order; unreadable lines are skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return []
        out = []
        for line in text.splitlines()[1:]:  # after the nonce line
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
        return out

    def _first_line(self) -> object:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                return json.loads(f.readline())
        except (OSError, ValueError):
            return None

    def verify(self, printed: str | None, *, expected_eval_tokens: int | None = None) -> str | None:
        """None when the printed metric is evaluate_bpb's; else the crash reason."""
        if printed is None:
            return None  # no metric at all: the loop logs an ordinary crash
        try:
            st = os.lstat(self.path)
        except OSError:
            return "unverified metric: the evaluation record was removed during the run"
        first = self._first_line()
        replaced = st.st_ino != self.inode or not os.path.isfile(self.path) or os.path.islink(self.path)
        if replaced or first != {"nonce": self.nonce}:
            return "unverified metric: the evaluation record was replaced during the run"
        entries = self.entries()
        if not entries:
            return f"unverified metric: val_bpb {printed} was printed but evaluate_bpb never ran"
        last = entries[-1]
        tol = _tolerance(printed)
        recorded = last.get("val_bpb")
        if tol is None or not isinstance(recorded, (int, float)):
            return f"unverified metric: cannot compare printed {printed!r} with the record"
        if abs(Decimal(repr(float(recorded))) - Decimal(printed)) > tol:
            return f"unverified metric: printed val_bpb {printed} but evaluate_bpb computed {float(recorded):.6f}"
        tokens = last.get("eval_tokens")
        if expected_eval_tokens is not None and tokens != expected_eval_tokens:
            return (
                f"unverified metric: evaluate_bpb ran on {tokens} tokens, "
                f"the profile evaluates {expected_eval_tokens}"
            )
        return None

    def archive(self, dest: Path | None) -> None:
        """Keep a copy next to the run's log (when `dest` is given) and remove the temp files."""
        try:
            if dest is not None and self.path.is_file():
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.path, dest)
        except OSError:
            pass  # the copy is for people; a full disk must not stop the loop here
        finally:
            shutil.rmtree(self.path.parent, ignore_errors=True)


def expected_eval_tokens(device: str) -> int | None:
    """How many tokens evaluate_bpb evaluates under a device profile (whole rows), if known."""
    try:
        import constants

        prof = constants.profile(device)
    except (ImportError, KeyError):
        return None
    seq_len = int(prof["MAX_SEQ_LEN"])
    return max(1, int(prof["EVAL_TOKENS"]) // seq_len) * seq_len
