"""Marker lines the harness timestamps: where training starts and where it hands off to evaluation.

The harness measures a run's budget with its own clock, not the train file's: it timestamps, on
receipt, the line ``@@autoresearch first-batch`` (printed when the training dataloader serves
its first batch) and ``@@autoresearch hand-off tokens=<n>`` (printed when evaluation starts,
with the number of training tokens the dataloaders served). Training wall time is the time
between the two; start-up is the time before the first. Both are printed to stdout, flushed.

This module only prints; it is immutable code like the rest of prepare, so the train file
cannot change what the markers say short of patching prepare in memory (which the separate
evaluation and the harness's own bounds are for).
"""

from __future__ import annotations

import sys

PREFIX = "@@autoresearch"
_state = {"first_batch": False, "tokens": 0}


def _emit(line: str) -> None:
    sys.stdout.write(f"{PREFIX} {line}\n")
    sys.stdout.flush()


def served(tokens: int) -> None:
    """A training dataloader served a batch of `tokens` tokens; the first one prints the marker."""
    if not _state["first_batch"]:
        _state["first_batch"] = True
        _emit("first-batch")
    _state["tokens"] += int(tokens)


def hand_off() -> None:
    """Training is over: evaluation starts now. Printed by every evaluation (the harness takes the last)."""
    _emit(f"hand-off tokens={_state['tokens']}")


def tokens_served() -> int:
    """Training tokens served so far in this process."""
    return int(_state["tokens"])
