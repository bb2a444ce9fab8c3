"""The offline search agent: Optuna TPE over the mutable file's UPPERCASE hyperparameters.

It needs no network and no key, so the whole loop runs anywhere, and it is the baseline an
LLM agent must beat. The search space is read from the first mutable `.py` file: every
module-level `NAME = <number>` whose name is UPPERCASE and whose value is an int or float
literal (or a constant expression such as `2**19` or `3e-4 * 2`). Ranges are multiplicative
around the file's values: floats log-uniform within x/4..x*4 (fractions stay below 1), ints
within x/2..x*2, powers of two stay powers of two (2**(k-2)..2**(k+2)). Zero, negative and
boolean values are left alone, and so are seeds and eval sizes (not research).

Each proposal is one Optuna trial (ask/tell, define-by-run) that changes 1-3 constants,
written as SEARCH/REPLACE blocks in the reply format, so it takes the same path as an LLM's
edit. `observe()` tells the trial its metric (crashes are FAIL). The sampler is seeded from
the tag, so a tag's proposals are reproducible; on resume the trials are rebuilt from the
TSV rows of this agent (their descriptions carry the values).
"""

from __future__ import annotations

import ast
import hashlib
import math
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import optuna

from harness.agents.base import Agent, Context, Reply
from harness.errors import AgentError

if TYPE_CHECKING:
    from harness.settings import Settings
    from harness.store.ledger import Row

MAX_CHANGES = 3
_RESAMPLE = 20  # attempts to find a trial that changes something before giving up on it
_DESC_PREFIX = "search: "
_CHANGE_RE = re.compile(r"([A-Z][A-Z0-9_]*) (\S+) -> ([^,\s]+)")
# A new random seed is not research, and eval batch sizes do not change the metric.
_SKIP = re.compile(r"SEED|EVAL")


@dataclass(frozen=True)
class Param:
    """One tunable constant and its range."""

    name: str
    kind: str  # "float", "int" or "pow2" (stored as its exponent)
    low: float
    high: float
    original: float
    pow_style: bool  # written as 2**k in the file
    log: bool = True  # sampled on a log scale (float and int; pow2 is already an exponent)

    def distribution(self) -> optuna.distributions.BaseDistribution:
        log = self.log and self.kind != "pow2"
        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=log)
        return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=log)

    def suggest(self, trial: optuna.trial.Trial) -> float:
        log = self.log and self.kind != "pow2"
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=log)
        return trial.suggest_int(self.name, int(self.low), int(self.high), log=log)

    def value(self, suggested: float) -> float:
        """The constant's value for a suggested parameter (pow2 params are exponents)."""
        return float(2 ** int(suggested)) if self.kind == "pow2" else suggested

    def to_param(self, value: float) -> float:
        """Inverse of `value`, clipped into the range (for trials rebuilt from the TSV)."""
        raw = round(math.log2(value)) if self.kind == "pow2" else value
        raw = min(max(raw, self.low), self.high)
        return raw if self.kind == "float" else int(round(raw))

    def format(self, value: float) -> str:
        if self.kind == "pow2":
            k = int(round(math.log2(value)))
            return f"2**{k}" if self.pow_style else str(2**k)
        if self.kind == "int":
            return str(int(round(value)))
        text = f"{value:.3g}"
        return text if any(c in text for c in ".en") else text + ".0"


def const_value(node: ast.expr) -> float | None:
    """The number a constant expression evaluates to (literals and + - * / ** only), or None."""
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = const_value(node.operand)
        return None if inner is None else (-inner if isinstance(node.op, ast.USub) else inner)
    if isinstance(node, ast.BinOp):
        a, b = const_value(node.left), const_value(node.right)
        if a is None or b is None:
            return None
        try:
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            if isinstance(node.op, ast.Div):
                return a / b
            if isinstance(node.op, ast.Pow) and abs(b) <= 64:
                return a**b
        except (ZeroDivisionError, OverflowError):
            return None
    return None


def assignments(source: str) -> dict[str, ast.Assign]:
    tree = ast.parse(source)
    found: dict[str, ast.Assign] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.isupper() and node.lineno == node.end_lineno:
                found[name] = node
    return found


def search_space(source: str) -> list[Param]:
    """The tunable constants of a train file, in file order."""
    params: list[Param] = []
    for name, node in assignments(source).items():
        value = const_value(node.value)
        if value is None or value <= 0 or _SKIP.search(name):
            continue
        is_int = isinstance(value, int) or (
            isinstance(node.value, ast.BinOp)
            and isinstance(node.value.op, ast.Pow)
            and float(value).is_integer()
        )
        pow_style = isinstance(node.value, ast.BinOp) and isinstance(node.value.op, ast.Pow)
        if is_int and int(value) >= 2 and int(value) & (int(value) - 1) == 0:
            k = int(value).bit_length() - 1
            params.append(Param(name, "pow2", max(0, k - 2), k + 2, float(value), pow_style))
        elif is_int:
            iv = int(value)
            if iv < 2:
                continue  # 1 as an int is a switch or a count of one; nothing multiplicative to search
            params.append(Param(name, "int", max(1, iv // 2), iv * 2, float(iv), False))
        else:
            v = float(value)
            high = (1.0 + v) / 2.0 if v < 1.0 else v * 4.0
            high = min(high, v * 4.0)
            params.append(Param(name, "float", v / 4.0, max(high, v * 1.0001), v, False))
    return params


def _seed(tag: str) -> int:
    return int.from_bytes(hashlib.sha256(tag.encode()).digest()[:4], "big")


class SearchAgent(Agent):
    """Hyperparameter search through Optuna's TPE; never runs out (the night ends by a limit)."""

    name: ClassVar[str] = "search"
    edit_retries = 0
    prefix = _DESC_PREFIX  # of each proposal's description; resume reads the values back from it

    def __init__(self, path: str, source: str, *, tag: str, direction: str = "minimize") -> None:
        params = search_space(source)
        if not params:
            raise AgentError(
                f"the search agent found no UPPERCASE int/float constants in {path} to tune; "
                "use an LLM agent or replay:FILE for this experiment"
            )
        self._start(path, params, _seed(tag), direction, startup_trials=5)

    def _start(
        self, path: str, params: list[Param], seed: int, direction: str, *, startup_trials: int
    ) -> None:
        self.path = path  # repo-relative, as the reply names it
        self.params = {p.name: p for p in params}
        self.seed = seed
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(
            direction="maximize" if direction == "maximize" else "minimize",
            sampler=optuna.samplers.TPESampler(seed=self.seed, n_startup_trials=startup_trials),
        )
        self._rebuilt = False
        self._trials: dict[int, optuna.trial.Trial] = {}

    def _choose(self, names: list[str], rng: random.Random) -> list[str]:
        """The constants one trial changes: 1 to MAX_CHANGES of them, at random."""
        return rng.sample(names, k=min(len(names), rng.randint(1, MAX_CHANGES)))

    def _reply(self, text: str, trial: int) -> Reply:
        return Reply(text=text, model="optuna-tpe", meta={"trial": trial})

    @classmethod
    def from_settings(cls, settings: Settings) -> SearchAgent:
        py = [m for m in settings.mutable if m.endswith(".py")]
        if not py:
            raise AgentError("the search agent needs a mutable .py file; this experiment has none")
        source = (Path(settings.repo_root) / py[0]).read_text(encoding="utf-8")
        return cls(py[0], source, tag=settings.tag, direction=settings.direction)

    # --- Agent ---------------------------------------------------------------------------

    def propose(self, ctx: Context) -> Reply | None:
        if not self._rebuilt:
            self._rebuild(ctx.history)
        source = ctx.files.get(self.path)
        if source is None:
            raise AgentError(f"the search agent's file {self.path} is not among the mutable files")
        current = assignments(source)
        for _ in range(_RESAMPLE):
            trial = self.study.ask()
            rng = random.Random(self.seed * 1_000_003 + trial.number)
            names = [n for n in self.params if n in current]
            chosen = self._choose(names, rng)
            changes: list[tuple[str, str, str]] = []
            blocks: list[str] = []
            lines = source.splitlines()
            for name in chosen:
                param = self.params[name]
                node = current[name]
                new_text = param.format(param.value(param.suggest(trial)))
                line = lines[node.lineno - 1]
                old_text = line[node.value.col_offset : node.value.end_col_offset]
                old_value = const_value(node.value)
                if old_value is None or math.isclose(
                    float(eval_text(new_text)), float(old_value), rel_tol=1e-9
                ):
                    continue
                new_line = line[: node.value.col_offset] + new_text + line[node.value.end_col_offset :]
                blocks.append(f"<<<<<<< SEARCH\n{line}\n=======\n{new_line}\n>>>>>>> REPLACE")
                changes.append((name, old_text, new_text))
            if not changes:
                self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                continue
            self._trials[trial.number] = trial
            desc = self.prefix + ", ".join(f"{n} {a} -> {b}" for n, a, b in changes)
            text = f"Description: {desc}\n{self.path}\n" + "\n".join(blocks) + "\n"
            return self._reply(text, trial.number)
        raise AgentError("the search agent could not find a change to propose (search space exhausted?)")

    def observe(self, reply: Reply, row: Row) -> None:
        number = reply.meta.get("trial")
        trial = self._trials.pop(number, None) if isinstance(number, int) else None
        if trial is None:
            return
        if row.status == "crash":
            self.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        elif not row.scored:  # pruned: aborted early, clearly behind the best
            self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            self.study.tell(trial, row.metric)

    # --- resume --------------------------------------------------------------------------

    def _rebuild(self, history: list[Row]) -> None:
        """Add the trials of an earlier harness on this tag, read from its rows' descriptions."""
        self._rebuilt = True
        for row in history:
            if row.extra.get("agent") != self.name or not row.description.startswith(_DESC_PREFIX):
                continue
            params: dict[str, float] = {}
            dists: dict[str, optuna.distributions.BaseDistribution] = {}
            for name, _old, new in _CHANGE_RE.findall(row.description):
                param = self.params.get(name)
                if param is None:
                    continue
                try:
                    value = float(eval_text(new))
                except ValueError:
                    continue
                params[name] = param.to_param(value)
                dists[name] = param.distribution()
            if not params:
                continue
            crashed = row.status == "crash"
            state = optuna.trial.TrialState.FAIL if crashed else optuna.trial.TrialState.COMPLETE
            if not crashed and not row.scored:
                state = optuna.trial.TrialState.PRUNED
            self.study.add_trial(
                optuna.trial.create_trial(
                    params=params, distributions=dists, value=row.metric if row.scored else None, state=state
                )
            )


def eval_text(text: str) -> float:
    """The number a formatted constant stands for ("2**5", "3e-04", "12"); ValueError otherwise."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError as exc:
        raise ValueError(text) from exc
    value = const_value(node)
    if value is None:
        raise ValueError(text)
    return float(value)
