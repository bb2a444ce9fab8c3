"""Decide whether a candidate's metric beats the best so far: keep, discard, or run it again.

A judge sees the metric values of the candidate's runs (one per run of the same commit) and of
the current best commit's runs, and returns a `Verdict`. The loop runs the baseline
``judge.baseline_runs`` times, repeats a candidate while the verdict is ``repeat`` (folding
every run of one commit into that commit's single TSV row), re-runs the best when the judge
`wants_remeasure`, and on --resume hands the judge every earlier row's runs (`observe`).
Crashes never reach a judge: a run without a finite metric is a crash, decided by the loop.

`StrictJudge` (`--judge strict`) is the simplest honest rule: keep iff the mean is strictly
better in the experiment's direction; it never asks for a repeat.

`NoiseAwareJudge` (`--judge noise`, the default) keeps a gain only when it stands out from
run-to-run noise. A training run's metric is noisy: the same file run twice gives two values
(data order, non-deterministic kernels, timing-dependent step counts under a wall-clock
budget). A strict rule therefore keeps about half of all changes that do nothing, e.g.
"random seed 42 -> 137". The noise judge is a small sequential test:

* **Noise level (sigma).** The baseline runs `baseline_runs` times (default 3). Every sequence
  of runs of one commit the judge sees (baseline repeats, confirmation runs, re-measurements
  of the best) is folded into a pooled variance estimate: sigma^2 = sum of squared deviations
  from each commit's own mean / sum of (runs - 1). The estimate is a property of the
  experiment, not of one commit, so it carries over when the best moves to a commit that ran
  once. The loop re-runs the current best every `remeasure_every` attempts, which both refines
  sigma and shrinks the winner's curse of a best that was kept on one lucky run.
* **Rule.** With d the improvement of the candidate's mean over the best's mean (sign
  adjusted for the direction), n and m their run counts and SE = sigma * sqrt(1/n + 1/m):
  keep if d > t * SE, where t is Student's t quantile at the one-sided level of `z` (default
  2, i.e. 97.7 %) for the degrees of freedom behind sigma (so a sigma measured from three
  runs is not trusted like a known one); otherwise, if d > repeat_z * SE (default 0.5), the
  candidate has fewer than `max_runs` runs (default 3) **and it could become the best**,
  answer `repeat`; otherwise discard. "Could become the best": granted half a standard error
  of its own mean of optimism (d + 0.5 sigma / sqrt(n)), `max_runs` runs at that mean would
  clear the threshold (Student's t for the degrees of freedom sigma would then have). A
  confirmation run spent on a candidate that cannot win decides nothing; the GPU time goes to
  the next attempt instead (`confirm="all"` is the earlier rule, kept for the benchmark).
  With a well-measured sigma and one candidate run against three baseline runs a single run
  must beat the best by about 2.4 sigma to be kept at once; a gain of about 1.5-2.4 sigma is
  confirmed by up to two more runs, a smaller one discarded at once.
* **Error rates.** A change that does nothing is kept with probability 1 - Phi(z) = 2.3 % at
  the first look; the confirmation looks add to it, and `bench/bench_noise.py` measures the
  total: about 3-4 % for the defaults against about 50 % for the strict rule, at about 1.1
  runs per attempt (1.3-1.5 when every apparent gain was confirmed). Real gains of 1 sigma
  are kept about a fifth of the time and of 3 sigma about 90 % of the time (strict: 80 % and
  99.5 %): not keeping noise costs some small real gains; in a night of a fixed GPU budget
  the extra attempts more than pay for them (bench_noise's night tables). The measured
  tables are in BENCHMARKS.md.

Without any repeated runs (baseline_runs = 1 and no confirmation yet) sigma is unknown and an
apparently better candidate is repeated once to measure it. A floor `min_sigma` keeps a
perfectly deterministic metric from turning every 1e-9 wobble into a significant gain.

(The TSV's `spread` column is something else: max - min of one commit's own runs.)
"""

from __future__ import annotations

import functools
import math
import statistics
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from harness.errors import ConfigError
from harness.store.ledger import Direction, better, check_direction

JUDGES = ("noise", "strict")
#: how many commits' run sequences are remembered for the pooled sigma (bounded memory)
_MAX_SERIES = 1000


@dataclass(frozen=True)
class Verdict:
    """What to do with a candidate; ``reason`` is one line for the TSV and the log."""

    status: Literal["keep", "discard", "repeat"]
    reason: str


class Judge(Protocol):
    """What the loop asks of a judge."""

    baseline_runs: int  # how often the baseline runs at the start

    def decide(self, values: Sequence[float], best: Sequence[float]) -> Verdict:
        """keep / discard / repeat from the candidate's values and the best's values."""
        ...

    def observe(self, values: Sequence[float]) -> None:
        """Learn from the runs of one commit that were not decided here (earlier rows on --resume)."""
        ...

    def wants_remeasure(self, attempts_since: int) -> bool:
        """Whether the loop should re-run the best now, `attempts_since` attempts after the last time."""
        ...


def mean(values: Sequence[float]) -> float:
    """The arithmetic mean; ValueError for no values (a judge is never asked about nothing)."""
    if not values:
        raise ValueError("mean of no values")
    return math.fsum(values) / len(values)


def make_judge(kind: str, direction: str, baseline_runs: int | None = None) -> Judge:
    """The judge named by `--judge`: `noise` (default, NoiseAwareJudge) or `strict` (StrictJudge).

    `baseline_runs` None means each judge's default: 3 for noise (it needs a sigma), 1 for strict.
    """
    if kind == "noise":
        return NoiseAwareJudge(direction, baseline_runs=3 if baseline_runs is None else baseline_runs)
    if kind == "strict":
        return StrictJudge(direction, 1 if baseline_runs is None else baseline_runs)
    raise ConfigError(f"--judge {kind!r}: expected one of {', '.join(JUDGES)}")


class StrictJudge:
    """Keep iff mean(values) is strictly better than mean(best). Never asks for a repeat.

    With no best yet (the first run of the night), the candidate is kept: it becomes the
    reference everything else is measured against.
    """

    def __init__(self, direction: str, baseline_runs: int = 1) -> None:
        self.direction: Direction = check_direction(direction)
        if baseline_runs < 1:
            raise ConfigError(f"baseline_runs must be at least 1, not {baseline_runs}")
        self.baseline_runs = baseline_runs

    def decide(self, values: Sequence[float], best: Sequence[float]) -> Verdict:
        if not values:
            raise ValueError("StrictJudge.decide needs at least one value")
        if not all(math.isfinite(v) for v in values):
            return Verdict("discard", f"non-finite metric {list(values)}")
        cand = mean(values)
        if not best:
            return Verdict("keep", f"first result {cand:.6f}")
        ref = mean(best)
        if better(cand, ref, self.direction):
            return Verdict("keep", f"{cand:.6f} beats best {ref:.6f} ({cand - ref:+.6f})")
        if cand == ref:
            return Verdict("discard", f"{cand:.6f} ties best {ref:.6f}")
        return Verdict("discard", f"{cand:.6f} is worse than best {ref:.6f} ({cand - ref:+.6f})")

    def observe(self, values: Sequence[float]) -> None:
        """Nothing to learn: the strict rule keeps no noise estimate."""

    def wants_remeasure(self, attempts_since: int) -> bool:
        return False

    def __repr__(self) -> str:
        return f"StrictJudge(direction={self.direction!r}, baseline_runs={self.baseline_runs})"


def _sum_squares(values: Sequence[float]) -> float:
    mu = mean(values)
    return math.fsum((v - mu) ** 2 for v in values)


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, dof: int) -> float:
    """The p-quantile of Student's t with `dof` degrees of freedom (p > 0.5), by bisection
    on the CDF integrated numerically: no scipy at run time, cached per (p, dof)."""
    if dof >= 200:
        return statistics.NormalDist().inv_cdf(p)
    log_c = math.lgamma((dof + 1) / 2) - math.lgamma(dof / 2) - 0.5 * math.log(dof * math.pi)

    def pdf(t: float) -> float:
        return math.exp(log_c - (dof + 1) / 2 * math.log1p(t * t / dof))

    def cdf(x: float) -> float:  # Simpson's rule on [0, x], then symmetry
        steps = 400
        h = x / steps
        acc = pdf(0.0) + pdf(x)
        for i in range(1, steps):
            acc += (4 if i % 2 else 2) * pdf(i * h)
        return 0.5 + acc * h / 3

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


class NoiseAwareJudge:
    """Keep a candidate only when its gain over the best exceeds z pooled standard errors."""

    def __init__(
        self,
        direction: str = "minimize",
        *,
        baseline_runs: int = 3,
        z: float = 2.0,
        repeat_z: float = 0.5,
        max_runs: int = 3,
        remeasure_every: int = 10,
        min_sigma: float = 1e-6,
        sigma: float | None = None,
        confirm: str = "contenders",
    ) -> None:
        if baseline_runs < 1:
            raise ConfigError(f"--baseline-runs must be at least 1, not {baseline_runs}")
        if max_runs < 1:
            raise ConfigError(f"max_runs must be at least 1, not {max_runs}")
        if z <= 0 or repeat_z < 0 or repeat_z > z:
            raise ConfigError(f"need 0 <= repeat_z <= z and z > 0 (got z={z}, repeat_z={repeat_z})")
        self.direction: Direction = check_direction(direction)
        self.baseline_runs = baseline_runs
        self.z = z
        self.repeat_z = repeat_z
        self.max_runs = max_runs
        self.remeasure_every = remeasure_every
        self.min_sigma = min_sigma
        self._fixed_sigma = sigma
        if confirm not in ("contenders", "all"):
            raise ConfigError(f"confirm must be 'contenders' or 'all', not {confirm!r}")
        self.confirm = confirm
        self.optimism = 0.5  # standard errors of its own mean a candidate is granted when projected
        # first value of a commit's runs -> all its runs seen so far (runs only ever grow)
        self._series: OrderedDict[float, tuple[float, ...]] = OrderedDict()

    # -- the noise level ---------------------------------------------------------------------

    def observe(self, values: Sequence[float]) -> None:
        """Fold the runs of one commit into the sigma estimate (idempotent as runs grow).

        The loop calls `decide`, which observes both sequences itself; call this directly
        to prime the estimate after `--resume` (each earlier row's runs) or with re-runs.
        """
        if not values:
            return
        key = float(values[0])
        known = self._series.get(key)
        if known is None or len(values) >= len(known):
            self._series[key] = tuple(float(v) for v in values)
            self._series.move_to_end(key)
        while len(self._series) > _MAX_SERIES:
            self._series.popitem(last=False)

    def sigma(self) -> float | None:
        """The run-to-run standard deviation (pooled over commits), or None if unmeasured."""
        return self._sigma()[0]

    def _sigma(self) -> tuple[float | None, int]:
        """(sigma, degrees of freedom behind it); a fixed sigma counts as exactly known."""
        if self._fixed_sigma is not None:
            return max(self._fixed_sigma, self.min_sigma), 10**6
        squares = 0.0
        dof = 0
        for runs in self._series.values():
            if len(runs) >= 2:
                squares += _sum_squares(runs)
                dof += len(runs) - 1
        if dof == 0:
            return None, 0
        return max(math.sqrt(squares / dof), self.min_sigma), dof

    # -- the verdict --------------------------------------------------------------------

    def gain(self, values: Sequence[float], best: Sequence[float]) -> float:
        """How much better the candidate's mean is than the best's (positive = better)."""
        diff = mean(best) - mean(values)
        return diff if self.direction == "minimize" else -diff

    def decide(self, values: Sequence[float], best: Sequence[float]) -> Verdict:
        """keep / repeat / discard for a candidate's runs against the best's runs."""
        if not values:
            raise ValueError("NoiseAwareJudge.decide needs at least one value")
        if not all(math.isfinite(v) for v in values):
            return Verdict("discard", f"non-finite metric {list(values)}")
        if not best:
            self.observe(values)
            return Verdict("keep", f"first result {mean(values):.6f}")
        self.observe(best)
        self.observe(values)
        n, m = len(values), len(best)
        d = self.gain(values, best)
        if d <= 0:
            return Verdict("discard", f"not better: {mean(values):.6f} vs best {mean(best):.6f}")
        sigma, dof = self._sigma()
        if sigma is None:
            if n < min(2, self.max_runs):
                return Verdict("repeat", "sigma not measured yet: running the candidate again")
            # max_runs == 1 and no sigma: nothing to judge the noise with, fall back to strict
            return Verdict("keep", f"better by {d:.6f} (sigma unknown, strict comparison)")
        se = sigma * math.sqrt(1.0 / n + 1.0 / m)
        score = d / se
        # sigma is itself estimated: with few degrees of freedom the threshold is Student's t
        # at the same one-sided level as z, so a lucky small sigma does not inflate keeps
        level = statistics.NormalDist().cdf(self.z)
        threshold = t_quantile(level, dof)
        detail = f"gain {d:.6f} = {score:.2f} SE (sigma {sigma:.6f} from {dof} dof, runs {n} vs {m})"
        if score > threshold:
            return Verdict("keep", f"{detail} > {threshold:.2f}")
        if score > self.repeat_z and n < self.max_runs:
            # Confirm only a candidate that could become the best: if its remaining runs came
            # out at the mean seen so far (and added their degrees of freedom to sigma's), would
            # max_runs runs clear the threshold?
            hope = d + self.optimism * sigma / math.sqrt(n)
            projected = hope / (sigma * math.sqrt(1.0 / self.max_runs + 1.0 / m))
            later = t_quantile(level, dof + self.max_runs - n) if dof < 10**6 else threshold
            if self.confirm == "all" or projected > later:
                return Verdict("repeat", f"{detail}: within noise, confirming with another run")
            return Verdict(
                "discard",
                f"{detail}: within noise, and {projected:.2f} SE after {self.max_runs} runs at this "
                f"mean would not clear {later:.2f}",
            )
        return Verdict("discard", f"{detail} <= {threshold:.2f}: within run-to-run noise")

    def __repr__(self) -> str:
        return (
            f"NoiseAwareJudge(direction={self.direction!r}, baseline_runs={self.baseline_runs}, "
            f"z={self.z}, max_runs={self.max_runs}, remeasure_every={self.remeasure_every})"
        )

    def wants_remeasure(self, attempts_since: int) -> bool:
        """Whether the loop should re-run the current best now (every `remeasure_every`)."""
        return self.remeasure_every > 0 and attempts_since >= self.remeasure_every
