"""NoiseAwareJudge: the rule, its spread estimate and its error rates on simulated noise."""

from __future__ import annotations

import random

import pytest

from harness.commands.main import main
from harness.errors import ConfigError
from harness.night.judge import Judge, NoiseAwareJudge, StrictJudge, make_judge, t_quantile
from harness.store.ledger import Row
from tests.conftest import Toy, git


def _judge(**kw: object) -> NoiseAwareJudge:
    return NoiseAwareJudge("minimize", **kw)  # type: ignore[arg-type]


def test_implements_the_judge_protocol_with_noise_as_default_runs() -> None:
    judge: Judge = _judge()
    assert judge.baseline_runs == 3
    assert _judge(baseline_runs=5).baseline_runs == 5


def test_bad_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        NoiseAwareJudge("sideways")
    with pytest.raises(ConfigError):
        _judge(baseline_runs=0)
    with pytest.raises(ConfigError):
        _judge(z=1.0, repeat_z=2.0)


def test_first_result_is_kept_and_worse_is_discarded() -> None:
    judge = _judge()
    assert judge.decide([1.0], []).status == "keep"
    assert judge.decide([1.1], [1.0, 1.0, 1.0]).status == "discard"


def test_pooled_spread_from_baseline_and_confirmations() -> None:
    judge = _judge()
    judge.observe([1.00, 1.02, 0.98])  # ss = 0.0008, dof 2
    judge.observe([2.00, 2.04])  # ss = 0.0008, dof 1
    assert judge.sigma() == pytest.approx((0.0016 / 3) ** 0.5)
    # a growing sequence replaces its shorter self instead of being counted twice
    judge.observe([1.00, 1.02, 0.98, 1.00])
    assert judge.sigma() == pytest.approx((0.0016 / 4) ** 0.5)


def test_big_gain_kept_at_once_marginal_gain_repeated_noise_discarded() -> None:
    judge = _judge()
    best = [1.000, 1.010, 0.990]  # sigma 0.01 from 2 dof; a few more dof from other commits
    for k in range(10):
        judge.observe([5.0 + k, 5.0 + k + 0.01414])  # each pair: sd 0.01
    big = judge.decide([0.95], best)
    assert big.status == "keep" and "SE" in big.reason
    marginal = judge.decide([0.98], best)  # 1.7 SE now; 2.4 SE if three runs held this mean
    assert marginal.status == "repeat"
    # a gain that could not clear the threshold even if confirmed is not confirmed
    hopeless = judge.decide([0.99], best)  # 0.9 SE now, 1.2 SE after three runs at this mean
    assert hopeless.status == "discard" and "would not clear" in hopeless.reason
    # confirmation runs that fall back to the best's level: discarded as noise
    assert judge.decide([0.99, 1.005, 1.0], best).status == "discard"
    # confirmation runs that hold the gain: kept on the mean
    assert judge.decide([0.975, 0.978, 0.976], best).status == "keep"


def test_unknown_spread_asks_for_a_repeat_then_judges() -> None:
    judge = _judge(baseline_runs=1)
    assert judge.decide([0.9], [1.0]).status == "repeat"
    # one degree of freedom: t is huge, so the third run is needed; then it is judged
    assert judge.decide([0.9, 0.91], [1.0]).status == "repeat"
    assert judge.decide([0.9, 0.91, 0.905], [1.0]).status == "keep"


def test_maximize_direction() -> None:
    judge = NoiseAwareJudge("maximize", sigma=0.01)
    assert judge.decide([1.2], [1.0, 1.0, 1.0]).status == "keep"
    assert judge.decide([0.8], [1.0, 1.0, 1.0]).status == "discard"


def test_nan_is_discarded() -> None:
    assert _judge().decide([float("nan")], [1.0]).status == "discard"


def test_t_quantile_matches_tables() -> None:
    assert t_quantile(0.975, 2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(0.975, 10) == pytest.approx(2.228, abs=1e-3)
    assert t_quantile(0.975, 10**6) == pytest.approx(1.960, abs=1e-3)


def test_priming_from_the_runs_cells_of_earlier_rows() -> None:
    """On --resume the loop hands the judge each earlier row's runs; unreadable cells count for nothing."""
    judge = _judge()
    assert judge.sigma() is None
    for cell in ["1.0,1.2", "", "junk,1", "0.7"]:
        judge.observe(Row("abc1234", 1.0, 0.0, "keep", "x", {"runs": cell}).runs())
    assert judge.sigma() == pytest.approx(0.1414, abs=1e-3)  # only the pair 1.0,1.2 has a spread
    strict = StrictJudge("minimize")
    strict.observe([1.0, 1.2])  # the strict rule keeps no noise estimate and never re-measures
    assert not strict.wants_remeasure(10**6) and _judge(remeasure_every=10).wants_remeasure(10)


def _attempt(judge: Judge, true: float, best: list[float], rng: random.Random) -> bool:
    values = [true + rng.gauss(0, 1)]
    while (verdict := judge.decide(values, best)).status == "repeat":
        values.append(true + rng.gauss(0, 1))
    return verdict.status == "keep"


def test_error_rates_on_simulated_noise() -> None:
    """Null changes (a new seed) are rarely kept; big real gains almost always are."""
    rng = random.Random(7)
    trials = 1500
    null_noise = null_strict = big = 0
    for _ in range(trials):
        best = [rng.gauss(0, 1) for _ in range(3)]
        null_noise += _attempt(_judge(), 0.0, best, rng)
        null_strict += _attempt(StrictJudge("minimize", 3), 0.0, best, rng)
        big += _attempt(_judge(), -5.0, best, rng)
    assert null_noise / trials < 0.09  # documented: about 5 %
    assert null_strict / trials > 0.4  # the strict rule keeps about half
    assert big / trials > 0.97


def test_seed_only_change_within_measured_spread_is_discarded() -> None:
    """A seed change whose value lies within one sigma of the best's mean is never kept."""
    judge = _judge()
    best = [0.9979, 0.9983, 0.9975]
    sigma = 0.0004
    for delta in (-sigma, -0.5 * sigma, 0.0, 0.5 * sigma):
        values = [0.9979 + delta]
        verdict = judge.decide(values, best)
        while verdict.status == "repeat":
            values.append(0.9979 + delta / 2)
            verdict = judge.decide(values, best)
        assert verdict.status == "discard", (delta, verdict)


def test_make_judge_names_and_defaults() -> None:
    assert isinstance(make_judge("noise", "minimize"), NoiseAwareJudge)
    assert make_judge("noise", "minimize").baseline_runs == 3
    strict = make_judge("strict", "maximize", 2)
    assert isinstance(strict, StrictJudge) and strict.baseline_runs == 2
    with pytest.raises(ConfigError, match="--judge"):
        make_judge("lenient", "minimize")


NOISY_TOY = '''"""A toy whose metric is 1.0 plus Gaussian noise (sd 0.01) drawn from SEED and the run's name."""

import os
import random

SEED = 42
LEVEL = 1.0

# HOME is the run's own scratch folder, named after its log (0, 0.r1, 0.r2, 1, ...): a different,
# reproducible draw for every run without writing a counter anywhere (the run's folder is
# read-only). n counts the runs in order for nights of three runs per attempt at most.
attempt, _, repeat = os.path.basename(os.environ["HOME"]).partition(".r")
n = 3 * int(attempt) + int(repeat or 0)
rng = random.Random(SEED * 7919 + n)
print("---")
print(f"val_bpb:          {LEVEL + rng.gauss(0.0, 0.01):.6f}")
'''


def test_seed_only_change_is_discarded_through_the_loop(toy_experiment: Toy) -> None:
    """Through the real loop: the baseline runs 3 times, a seed-only change is judged against the
    measured spread and discarded, a real gain of 10 sigma is kept at once."""
    toy = toy_experiment
    toy.train.write_text(NOISY_TOY)
    git(toy.repo, "commit", "-q", "-am", "noisy toy")
    replies = [
        toy.reply("random seed 42 to 111", "SEED = 42", "SEED = 111"),
        toy.reply("a real improvement", "LEVEL = 1.0", "LEVEL = 0.9"),
    ]
    assert (
        main(["run", "--device", "cpu", "--tag", "seed", "--agent", f"replay:{toy.replay_file(replies)}"])
        == 0
    )
    rows = toy.tsv("seed")
    assert [r["description"] for r in rows] == ["baseline", "random seed 42 to 111", "a real improvement"]
    assert len(rows[0]["runs"].split(",")) == 3 and float(rows[0]["spread"]) > 0
    # its first run beat the baseline's mean (strict would have kept it), by too little to become
    # the best even if confirmed: discarded without spending confirmation runs on it
    seed_runs = [float(v) for v in rows[1]["runs"].split(",")]
    assert seed_runs[0] < float(rows[0]["val_bpb"]) and len(seed_runs) == 1
    assert rows[1]["status"] == "discard"
    assert rows[2]["status"] == "keep" and len(rows[2]["runs"].split(",")) == 1
