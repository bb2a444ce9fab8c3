"""The budget, measured by the harness: training time from marker lines timestamped on receipt.

The train file's own `training_seconds` is the agent's to edit (a loop whose stop test reads
`4 * TIME_BUDGET` trains four times longer and still prints 300). The harness does not ask it:

* prepare's training dataloader prints ``@@autoresearch first-batch`` when it serves its first
  batch, and evaluation prints ``@@autoresearch hand-off tokens=<n>`` when it starts (n: the
  training tokens served); the runner timestamps both on receipt with the harness's clock.
* **start-up** is the time from the start of the process to the first batch (imports, building
  the model); **training** is the time from the first batch to the last hand-off (to the end of
  the process when there is none).
* a run is `over budget` when training exceeds ``budget * (1 + tolerance) + warm-up allowance``
  (the allowance holds the untimed first steps: compilation) or start-up exceeds its bound; the
  runner kills it as soon as that is certain (`deadline`), and `measure` says so after the run.
* an experiment with strict integrity checks must show where its training starts: a run that
  prints a metric without a first-batch marker (it read its data some other way) is over budget.
  A run without markers in a permissive (outside) experiment is bounded by the kill timeout only.

The markers come from the run's own process, so code running there can print a forged one or
suppress the real one. A forged early hand-off changes nothing (the last one counts); a
forged early first-batch only lengthens the measured training. Suppressing the real markers
needs patching prepare in memory, which the separate evaluation and the timeout bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FIRST_BATCH = "first-batch"
HAND_OFF = "hand-off"
#: turned off only by the planted-cheat tests (the cheat must be shown to win without it)
ENFORCE = True


@dataclass(frozen=True)
class Marker:
    """One marker line: when the harness received it (seconds after the start), its name and the rest."""

    seconds: float
    name: str
    payload: str = ""


@dataclass(frozen=True)
class Limits:
    """What a run may take, in seconds of the harness's clock."""

    budget: float
    tolerance: float  # share of the budget
    warmup: float  # seconds of untimed warm-up allowed inside the training window
    startup: float  # seconds from the start to the first batch
    require_markers: bool  # strict experiments must print the first-batch marker

    @property
    def training(self) -> float:
        """The longest training window allowed."""
        return self.budget * (1.0 + self.tolerance) + self.warmup


@dataclass(frozen=True)
class Measured:
    """A run's time as the harness measured it, and the crash reason when it broke the limits."""

    startup_s: float | None  # None: no first-batch marker
    training_s: float
    tokens: int | None  # training tokens served (the hand-off marker's count)
    reason: str | None

    @property
    def tokens_per_s(self) -> float | None:
        return self.tokens / self.training_s if self.tokens and self.training_s > 0 else None


def _first(markers: Sequence[Marker], name: str) -> Marker | None:
    return next((m for m in markers if m.name == name), None)


def _last(markers: Sequence[Marker], name: str) -> Marker | None:
    return next((m for m in reversed(markers) if m.name == name), None)


def deadline(markers: Sequence[Marker], limits: Limits) -> float | None:
    """When (seconds after the start) a run with these markers so far is certainly over budget."""
    if not ENFORCE:
        return None
    first = _first(markers, FIRST_BATCH)
    if first is None:
        return limits.startup if limits.require_markers else None
    if _last(markers, HAND_OFF) is not None:
        return None  # evaluating; a later training stretch is found by `measure`
    return first.seconds + limits.training


def measure(markers: Sequence[Marker], wall_seconds: float, limits: Limits, *, reported: bool) -> Measured:
    """Start-up, training and tokens of one run, and `over budget: ...` when it broke the limits.

    `reported`: the run printed a metric (a run that crashed anyway needs no budget verdict
    beyond the one that killed it)."""
    first = _first(markers, FIRST_BATCH)
    hand_off = _last(markers, HAND_OFF)
    end = (
        hand_off.seconds
        if hand_off is not None and (first is None or hand_off.seconds > first.seconds)
        else wall_seconds
    )
    start = first.seconds if first is not None else 0.0
    training = max(0.0, end - start)
    tokens = _tokens(hand_off.payload) if hand_off is not None else None
    reason = None
    if first is not None and first.seconds > limits.startup:
        reason = f"over budget: the first training batch came {first.seconds:.0f} s after the start (at most {limits.startup:g} s)"
    elif first is not None and training > limits.training:
        reason = (
            f"over budget: trained {training:.1f} s by the harness's clock (budget {limits.budget:g} s, "
            f"at most {limits.training:.1f} s with tolerance and warm-up)"
        )
    elif first is None and limits.require_markers and wall_seconds > limits.startup:
        reason = f"over budget: no first training batch within {limits.startup:g} s of the start"
    elif first is None and limits.require_markers and reported:
        reason = "over budget: no first-batch marker, so the training time cannot be measured (use prepare's dataloader)"
    return Measured(
        first.seconds if first is not None else None, training, tokens, reason if ENFORCE else None
    )


def _tokens(payload: str) -> int | None:
    for part in payload.split():
        key, _, value = part.partition("=")
        if key == "tokens" and value.isdigit():
            return int(value)
    return None
