"""Hybrid search: the model names the constants and their ranges, TPE runs the trials.

A reply may be a sweep request instead of an edit (the reply format, ARCHITECTURE.md):

    Description: the learning rates interact; tune them together
    Sweep: MATRIX_LR=[0.01, 0.08] log; EMBEDDING_LR=[0.1, 1.0] log; WARMUP_STEPS=[0, 200] int
    Trials: 8

`parse_sweep` checks it against the mutable file: each NAME is a module-level UPPERCASE constant
with a numeric value, `low < high`, `log` only for positive ranges, at most `MAX_PARAMS` names
and `MAX_TRIALS` trials (default: `Settings.sweep_trials`); a bad request goes back to the model
with what is wrong, like an edit that does not apply. `SweepAgent` is the offline search agent
(Optuna TPE, `harness.agents.search`) restricted to those constants and ranges: each of its k
proposals sets all of them on the current best, so its trials are ordinary attempts (committed,
run, judged, kept if better). Its rows carry the agent `<model's agent>+search` (`claude+search`)
and descriptions `sweep (<the request's description>): NAME old -> new, ...`. A sweep is not
rebuilt after a restart: a resumed night goes on with the model.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from dataclasses import dataclass

from harness.agents.base import Context, Reply
from harness.agents.search import Param, SearchAgent, assignments, const_value
from harness.errors import EditError

MAX_PARAMS = 6
MAX_TRIALS = 24
_ITEM = re.compile(
    r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*[=:]\s*[\[(]\s*([^,\])]+?)\s*,\s*([^\])]+?)\s*[\])]\s*(.*?)\s*$"
)


@dataclass(frozen=True)
class SweepSpec:
    """A checked sweep request."""

    description: str
    path: str  # the mutable file the constants live in
    params: tuple[Param, ...]
    trials: int


def _bad(why: str) -> EditError:
    return EditError(
        f"bad sweep request: {why}",
        f"Your sweep request could not be used: {why}. Write it as "
        "`Sweep: NAME=[low, high] log; OTHER=[low, high] int` with UPPERCASE constants of the file "
        "that hold a number, or send an edit instead. Nothing was run.",
    )


def _number(text: str, name: str) -> float:
    try:
        value = float(text.replace("_", ""))
    except ValueError:
        raise _bad(f"{name}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _bad(f"{name}: {text!r} is not a finite number")
    return value


def parse_sweep(
    text: str, description: str, files: dict[str, str], *, trials: int | None, default_trials: int
) -> SweepSpec:
    """The sweep in `text` (the `Sweep:` line) over the first mutable .py file of `files`."""
    path = next((p for p in files if p.endswith(".py")), None)
    if path is None:
        raise _bad("there is no Python file whose constants could be swept")
    consts = assignments(files[path])
    params: list[Param] = []
    for item in (part for part in text.split(";") if part.strip()):
        match = _ITEM.match(item)
        if match is None:
            raise _bad(f"{item.strip()!r} is not `NAME=[low, high]` with an optional `log` or `int`")
        name, lo_text, hi_text, flags_text = match.groups()
        flags = set(flags_text.lower().replace(",", " ").split())
        if flags - {"log", "int", "linear", "float"}:
            raise _bad(
                f"{name}: unknown option(s) {', '.join(sorted(flags - {'log', 'int', 'linear', 'float'}))}"
            )
        node = consts.get(name)
        current = const_value(node.value) if node is not None else None
        if node is None or current is None:
            raise _bad(f"{name} is not a module-level UPPERCASE constant with a number in {path}")
        if any(p.name == name for p in params):
            raise _bad(f"{name} is named twice")
        low, high = _number(lo_text, name), _number(hi_text, name)
        if not low < high:
            raise _bad(f"{name}: the range [{lo_text}, {hi_text}] is empty (low must be below high)")
        log = "log" in flags
        if log and low <= 0:
            raise _bad(f"{name}: a log range must be positive, got [{lo_text}, {hi_text}]")
        is_int = "int" in flags or (
            "float" not in flags and isinstance(current, int) and low.is_integer() and high.is_integer()
        )
        if is_int:
            low, high = math.ceil(low), math.floor(high)
            if not low < high:
                raise _bad(f"{name}: no two whole numbers in [{lo_text}, {hi_text}]")
        params.append(Param(name, "int" if is_int else "float", low, high, float(current), False, log))
    if not params:
        raise _bad("it names no constant")
    if len(params) > MAX_PARAMS:
        raise _bad(f"it names {len(params)} constants; at most {MAX_PARAMS} can be swept at once")
    k = default_trials if trials is None else trials
    if not 1 <= k <= MAX_TRIALS:
        raise _bad(f"Trials must be between 1 and {MAX_TRIALS}, got {k}")
    return SweepSpec(description, path, tuple(params), k)


class SweepAgent(SearchAgent):
    """TPE over the constants of one sweep request; `trials` proposals, then None."""

    def __init__(self, spec: SweepSpec, *, label: str, seed_text: str, direction: str) -> None:
        seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:4], "big")
        # Half the trials (at least two) explore at random before TPE models the results.
        self._start(spec.path, list(spec.params), seed, direction, startup_trials=max(2, spec.trials // 2))
        self._rebuilt = True  # a sweep starts afresh; it is never rebuilt from rows
        self.spec = spec
        self.label = label  # the agent column: "claude+search"
        self.left = spec.trials
        self.prefix = f"sweep ({spec.description[:60]}): "

    def propose(self, ctx: Context) -> Reply | None:
        if self.left <= 0:
            return None
        self.left -= 1
        return super().propose(ctx)

    def _choose(self, names: list[str], rng: random.Random) -> list[str]:
        return names  # every trial sets all of the sweep's constants

    def _reply(self, text: str, trial: int) -> Reply:
        return Reply(text=text, model="optuna-tpe", meta={"trial": trial, "sweep": True}, agent=self.label)
