"""Strict vs noise-aware keeps on a synthetic noisy metric: false-keep and missed-gain rates.

Each simulated attempt compares a candidate with the best. The metric (minimized) is the
true value plus Gaussian noise of standard deviation sigma = 1, so gains are in units of
sigma. The best starts as a baseline run `--baseline-runs` times. A null change (gain 0:
a new random seed) should be discarded; a real gain should be kept.

* strict: the real `harness.night.judge.StrictJudge` (keep iff the single run beats the mean).
* noise (3 runs): `NoiseAwareJudge` with only the baseline's own runs as spread evidence,
  the situation at the first attempt of a night.
* noise (night): the same judge after a night's worth of repeated runs (20 degrees of
  freedom of spread evidence), the usual situation later on.

Also a whole-night simulation: 100 attempts, 70 % of them null changes, 20 % real gains
(exponential, mean 1 sigma) and 10 % regressions; it reports how many noise changes ended up
kept, the true improvement of the final best, and the runs spent.

Run:  python bench/bench_noise.py [--trials 20000] [--seed 0]

For a measured metric: `--sigma S` (in the metric's units, e.g. 0.0004 bpb) recomputes the
per-attempt false-keep / missed-gain table with noise of that size and gains given in the
metric's units (`--gains`, default 0.5..5 sigma); `--sigma-from results/<tag>.tsv` takes sigma
from the baseline row's repeated runs of a night (e.g. `autoresearch run --baseline-runs 6
--warmup on --agent replay:empty.jsonl`) and prints each run's steps and tokens/s next to its
value, with their correlation, so a run that trained fewer steps is visible as such.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path
from typing import Protocol

from harness.night.judge import NoiseAwareJudge, StrictJudge, Verdict

GAINS = (-1.0, 0.0, 0.5, 1.0, 2.0, 3.0, 5.0)


class _Judge(Protocol):
    def decide(self, values: list[float], best: list[float]) -> Verdict: ...


def _attempt(judge: _Judge, gain: float, best: list[float], rng: random.Random) -> tuple[bool, int]:
    """Run one candidate through `judge` until keep/discard; return (kept, runs used)."""
    values = [-gain + rng.gauss(0.0, 1.0)]
    while True:
        verdict = judge.decide(values, best)
        if verdict.status != "repeat":
            return verdict.status == "keep", len(values)
        values.append(-gain + rng.gauss(0.0, 1.0))


def _noise_judge(rng: random.Random, dof: int) -> NoiseAwareJudge:
    judge = NoiseAwareJudge("minimize")
    # spread evidence from other commits: `dof` extra degrees of freedom in pairs of runs
    for _ in range(dof):
        a = 10.0 + rng.random()
        judge.observe([a + rng.gauss(0, 1), a + rng.gauss(0, 1)])
    return judge


def attempt_table(trials: int, baseline_runs: int, seed: int) -> list[dict[str, float]]:
    rng = random.Random(seed)
    table = []
    for gain in GAINS:
        kept = {"strict": 0, "noise3": 0, "night": 0}
        runs = {"strict": 0, "noise3": 0, "night": 0}
        for _ in range(trials):
            best = [rng.gauss(0.0, 1.0) for _ in range(baseline_runs)]
            judges: dict[str, _Judge] = {
                "strict": StrictJudge("minimize", 3),
                "noise3": _noise_judge(rng, 0),
                "night": _noise_judge(rng, 20),
            }
            for name, judge in judges.items():
                k, r = _attempt(judge, gain, best, rng)
                kept[name] += k
                runs[name] += r
        table.append(
            {"gain_sigma": gain}
            | {f"keep_{k}": v / trials for k, v in kept.items()}
            | {f"runs_{k}": v / trials for k, v in runs.items()}
        )
    return table


def night(trials: int, seed: int, mode: str, run_budget: int = 100) -> dict[str, float]:
    """Average outcome of a simulated night of `run_budget` training runs for one judge mode
    (a night has a fixed number of runs, so confirmation runs cost attempts)."""
    rng = random.Random(seed)
    false_keeps = improvement = attempts_made = missed = bias = 0.0
    for _ in range(trials):
        true_best = 0.0
        judge = _make(mode)
        best = [true_best + rng.gauss(0, 1) for _ in range(3)]
        runs = 3
        i = 0
        while runs < run_budget:
            i += 1
            u = rng.random()
            delta = 0.0 if u < 0.7 else (rng.expovariate(1.0) if u < 0.9 else -rng.expovariate(1.0))
            cand_true = true_best - delta
            values = [cand_true + rng.gauss(0, 1)]
            while True:
                verdict = judge.decide(values, best)
                if verdict.status != "repeat":
                    break
                values.append(cand_true + rng.gauss(0, 1))
            runs += len(values)
            if verdict.status == "keep" and runs <= run_budget:
                false_keeps += delta <= 0
                true_best, best = cand_true, list(values)
            elif delta > 1.0:
                missed += 1
            if isinstance(judge, NoiseAwareJudge) and judge.wants_remeasure(i % judge.remeasure_every or 10):
                best.append(true_best + rng.gauss(0, 1))  # the loop's periodic re-run of the best
                runs += 1
        improvement += -true_best
        attempts_made += i
        bias += true_best - sum(best) / len(best)  # how much better the best looks than it is
    return {
        "false_keeps": false_keeps / trials,
        "missed_gains_over_1sigma": missed / trials,
        "true_improvement_sigma": improvement / trials,
        "attempts": attempts_made / trials,
        "optimism_sigma": bias / trials,
    }


def _make(mode: str) -> _Judge:
    if mode == "strict":
        return StrictJudge("minimize", 3)
    return NoiseAwareJudge("minimize", confirm="all" if mode == "noise-confirm-all" else "contenders")


def gpu_hour(
    trials: int,
    seed: int,
    mode: str,
    *,
    budget: float = 300.0,
    outside: float = 15.0,
    prune_sigma: float | None = None,
    mixture: tuple[float, float, float] = (0.7, 0.2, 0.1),
    regression_mean: float = 1.0,
    hours: float = 8.0,
) -> dict[str, float]:
    """Attempts per GPU-hour over simulated nights of `hours` GPU-hours at a `budget`-second budget.

    Assumptions (sigma = 1, the run-to-run noise of the final metric):
    * every full run costs budget + `outside` seconds (start-up, compilation, evaluation: the
      warm figure the GPU-night benchmark measures); the night starts with one warm-up run and
      the baseline's 3 runs, and re-runs the best every 10 attempts (the loop's defaults);
    * attempts are null changes, real gains ~Exp(1) and regressions ~Exp(`regression_mean`) in
      the proportions of `mixture`;
    * with `prune_sigma`, a run is pruned when its metric as seen at 35 % of its budget (its true
      value plus noise of the same sigma as the final one) is more than `prune_sigma` behind the
      best's true value; a pruned run costs 35 % of the budget plus half of `outside` (start-up,
      no evaluation) and is a discard.
    """
    rng = random.Random(seed)
    pruned_share = 0.35
    totals = {"attempts": 0.0, "runs": 0.0, "false_keeps": 0.0, "pruned": 0.0, "improvement": 0.0}
    for _ in range(trials):
        judge = _make(mode)
        full = budget + outside
        spent = 4 * full
        true_best = 0.0
        best = [rng.gauss(0, 1) for _ in range(3)]
        attempts = runs = 0
        while spent < hours * 3600:
            attempts += 1
            u = rng.random()
            if u < mixture[0]:
                delta = 0.0
            elif u < mixture[0] + mixture[1]:
                delta = rng.expovariate(1.0)
            else:
                delta = -rng.expovariate(1.0 / regression_mean)
            cand = true_best - delta
            if prune_sigma is not None and cand + rng.gauss(0, 1) - true_best > prune_sigma:
                spent += pruned_share * budget + outside / 2
                runs += 1
                totals["pruned"] += 1
                continue
            values = [cand + rng.gauss(0, 1)]
            while judge.decide(values, best).status == "repeat":
                values.append(cand + rng.gauss(0, 1))
            verdict = judge.decide(values, best)
            runs += len(values)
            spent += len(values) * full
            if verdict.status == "keep":
                totals["false_keeps"] += delta <= 0
                true_best, best = cand, list(values)
            if isinstance(judge, NoiseAwareJudge) and attempts % judge.remeasure_every == 0:
                best.append(true_best + rng.gauss(0, 1))
                spent += full
        totals["attempts"] += attempts
        totals["runs"] += runs
        totals["improvement"] += -true_best
    return {
        "attempts_per_gpu_hour": totals["attempts"] / trials / hours,
        "runs_per_attempt": totals["runs"] / max(totals["attempts"], 1),
        "false_keeps_per_night": totals["false_keeps"] / trials,
        "pruned_share": totals["pruned"] / max(totals["attempts"], 1),
        "true_improvement_sigma": totals["improvement"] / trials,
    }


def print_gpu_hour(trials: int, seed: int, budget: float) -> None:
    print(
        f"\nattempts per GPU-hour at a {budget:g} s budget (8-hour nights, {trials} each; assumptions in "
        "gpu_hour's docstring)"
    )
    print(
        "| judge | outside budget (s) | attempts mix | pruning | attempts/GPU-hour | runs/attempt "
        "| false keeps/night | pruned | true improvement (sigma) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    mixes = {
        "70/20/10, regr. ~Exp(1)": ((0.7, 0.2, 0.1), 1.0),
        "50/20/30, regr. ~Exp(10)": ((0.5, 0.2, 0.3), 10.0),
    }
    for label, (mixture, regression) in mixes.items():
        for outside in (15.0, 37.0):
            for mode, prune in (("noise-confirm-all", None), ("noise", None), ("noise", 5.0)):
                r = gpu_hour(
                    trials, seed, mode, budget=budget, outside=outside, prune_sigma=prune,
                    mixture=mixture, regression_mean=regression,
                )  # fmt: skip
                name = (
                    "noise, confirm every gain (before)"
                    if mode == "noise-confirm-all"
                    else "noise (contenders)"
                )
                print(
                    f"| {name} | {outside:g} | {label} | {'off' if prune is None else f'> {prune:g} sigma'} "
                    f"| {r['attempts_per_gpu_hour']:.1f} | {r['runs_per_attempt']:.2f} "
                    f"| {r['false_keeps_per_night']:.2f} | {r['pruned_share']:.0%} | {r['true_improvement_sigma']:.1f} |"
                )


def seed_check(results_dir: Path, baseline_runs: int, trials: int, seed: int) -> dict[str, float] | None:
    """Apply the rule to the gpt experiment's measured run-to-run spread, if recorded."""
    for path in sorted(results_dir.glob("*spread*.json")) + sorted(results_dir.glob("*noise*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        values = data.get("val_bpb") or data.get("values")
        if isinstance(values, list) and len(values) >= 2 and all(isinstance(v, (int, float)) for v in values):
            mu = sum(values) / len(values)
            sigma = math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))
            rng = random.Random(seed)
            kept = 0
            for _ in range(trials):
                judge = NoiseAwareJudge("minimize")
                best = [mu + rng.gauss(0, sigma) for _ in range(baseline_runs)]
                kept += _attempt_scaled(judge, mu, sigma, best, rng)
            return {
                "file": str(path),
                "n": len(values),
                "mean": mu,
                "sigma": sigma,
                "keep_rate": kept / trials,
            }
    return None


def _attempt_scaled(
    judge: NoiseAwareJudge, mu: float, sigma: float, best: list[float], rng: random.Random
) -> bool:
    values = [mu + rng.gauss(0, sigma)]
    while (verdict := judge.decide(values, best)).status == "repeat":
        values.append(mu + rng.gauss(0, sigma))
    return verdict.status == "keep"


def baseline_runs_of(tsv: Path) -> list[tuple[float, float | None, float | None]]:
    """(value, steps, tokens/s) of each run of the baseline row of a night's TSV."""
    lines = tsv.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    for line in lines[1:]:
        row = dict(zip(header, line.split("\t"), strict=False))
        if row.get("description") == "baseline" and row.get("runs"):
            values = [float(v) for v in row["runs"].split(",")]
            steps = _per_run(row.get("num_steps", ""), len(values))
            speed = _per_run(row.get("tokens_per_s", ""), len(values))
            return list(zip(values, steps, speed, strict=True))
    raise SystemExit(f"{tsv}: no baseline row with runs")


def _per_run(cell: str, n: int) -> list[float | None]:
    parts = [p for p in cell.split(",")] if cell else []
    out = [float(p) if p.strip() else None for p in parts]
    return out if len(out) == n else [None] * n


def _sd(values: list[float]) -> float:
    mu = sum(values) / len(values)
    return math.sqrt(sum((v - mu) ** 2 for v in values) / (len(values) - 1))


def _corr(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < 3 or _sd(xs) == 0 or _sd(ys) == 0:
        return None
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (len(xs) - 1)
    return cov / (_sd(xs) * _sd(ys))


def scaled_table(
    sigma: float, gains: list[float], trials: int, baseline_runs: int, seed: int
) -> list[dict[str, float]]:
    """Per-attempt keep rates for true gains in the metric's units, noise `sigma` (same units)."""
    rng = random.Random(seed)
    table = []
    for gain in gains:
        kept = {"strict": 0, "noise3": 0, "night": 0}
        for _ in range(trials):
            best = [rng.gauss(0.0, sigma) for _ in range(baseline_runs)]
            judges: dict[str, _Judge] = {
                "strict": StrictJudge("minimize", 3),
                "noise3": _noise_judge_scaled(rng, 0, sigma),
                "night": _noise_judge_scaled(rng, 20, sigma),
            }
            for name, judge in judges.items():
                values = [-gain + rng.gauss(0.0, sigma)]
                while (verdict := judge.decide(values, best)).status == "repeat":
                    values.append(-gain + rng.gauss(0.0, sigma))
                kept[name] += verdict.status == "keep"
        table.append({"gain": gain} | {k: v / trials for k, v in kept.items()})
    return table


def _noise_judge_scaled(rng: random.Random, dof: int, sigma: float) -> NoiseAwareJudge:
    judge = NoiseAwareJudge("minimize")
    for _ in range(dof):
        a = 10.0 + rng.random()
        judge.observe([a + rng.gauss(0, sigma), a + rng.gauss(0, sigma)])
    return judge


def print_scaled(sigma: float, gains: list[float], trials: int, baseline_runs: int, seed: int) -> None:
    print(f"per-attempt keep rate, sigma = {sigma:g}, baseline runs = {baseline_runs}, {trials} trials each")
    print("| true gain | in sigma | strict keep | noise keep (3 runs of spread) | noise keep (night) |")
    print("|---|---|---|---|---|")
    for row in scaled_table(sigma, gains, trials, baseline_runs, seed):
        g = row["gain"]
        kind = " (false keep)" if g == 0 else " (a regression)" if g < 0 else ""
        print(
            f"| {g:+.6f}{kind} | {g / sigma:+.1f} | {row['strict']:.1%} | {row['noise3']:.1%} | {row['night']:.1%} |"
        )
    print("(a gain above 0 that is not kept is a missed gain: 1 - the keep rate)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20000)
    parser.add_argument("--baseline-runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--sigma", type=float, help="run-to-run noise in the metric's units")
    parser.add_argument("--sigma-from", type=Path, metavar="TSV", help="sigma of a night's baseline runs")
    parser.add_argument("--gains", type=float, nargs="+", help="true gains in the metric's units")
    parser.add_argument(
        "--budget", type=float, default=300.0, help="training seconds, for attempts per GPU-hour"
    )
    args = parser.parse_args(argv)
    if args.sigma_from is not None or args.sigma is not None:
        sigma = args.sigma
        if args.sigma_from is not None:
            runs = baseline_runs_of(args.sigma_from)
            values = [v for v, _, _ in runs]
            sigma = _sd(values)
            print(
                f"{args.sigma_from}: {len(values)} baseline runs, mean {sum(values) / len(values):.6f}, sigma {sigma:.6f}"
            )
            print("| run | value | steps | tokens/s |")
            print("|---|---|---|---|")
            for i, (v, st, sp) in enumerate(runs):
                print(
                    f"| {i} | {v:.6f} | {'-' if st is None else f'{st:.0f}'} | {'-' if sp is None else f'{sp:,.0f}'} |"
                )
            steps = [st for _, st, _ in runs if st is not None]
            if len(steps) == len(values):
                r = _corr(steps, values)
                print(
                    f"steps: {min(steps):.0f}..{max(steps):.0f}; correlation of steps with the value: "
                    + ("n/a" if r is None else f"{r:+.2f}")
                )
            print()
        assert sigma is not None
        gains = args.gains or [g * sigma for g in GAINS]
        print_scaled(sigma, gains, args.trials, args.baseline_runs, args.seed)
        return 0

    print(
        f"per-attempt keep rate, sigma = 1, baseline runs = {args.baseline_runs}, {args.trials} trials each"
    )
    print(
        "| true gain | strict keep | noise keep (3 runs of spread) | noise keep (night) | runs/attempt noise (night) |"
    )
    print("|---|---|---|---|---|")
    for row in attempt_table(args.trials, args.baseline_runs, args.seed):
        print(
            f"| {row['gain_sigma']:+.1f} sigma | {row['keep_strict']:.1%} | {row['keep_noise3']:.1%} "
            f"| {row['keep_night']:.1%} | {row['runs_night']:.2f} |"
        )
    nights = max(args.trials // 100, 50)
    print(
        f"\nnight of 100 runs (attempts: 70% null, 20% gains ~Exp(1 sigma), 10% regressions), {nights} nights"
    )
    print(
        "| judge | attempts | noise/worse changes kept | gains > 1 sigma missed | true improvement (sigma) | best looks better than it is by (sigma) |"
    )
    print("|---|---|---|---|---|---|")
    for mode in ("strict", "noise-confirm-all", "noise"):
        r = night(nights, args.seed, mode)
        print(
            f"| {mode} | {r['attempts']:.0f} | {r['false_keeps']:.1f} | {r['missed_gains_over_1sigma']:.1f} "
            f"| {r['true_improvement_sigma']:.1f} | {r['optimism_sigma']:.2f} |"
        )
    print_gpu_hour(max(args.trials // 100, 20), args.seed, args.budget)
    seed = seed_check(args.results, args.baseline_runs, args.trials, args.seed)
    if seed is None:
        print(
            f"\nno measured gpt spread under {args.results} (*spread*.json / *noise*.json with val_bpb list)"
        )
    else:
        print(
            f"\ngpt seed-only change, measured spread from {seed['file']}: n={seed['n']} "
            f"mean={seed['mean']:.6f} sigma={seed['sigma']:.6f} -> kept {seed['keep_rate']:.1%} of {args.trials}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
