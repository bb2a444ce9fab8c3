"""prepare.causality: where the probe rows go, what they contain, and how they are compared."""

from __future__ import annotations

import numpy as np
import pytest

from prepare import causality
from prepare.causality import Ledger, NonCausal, make_plan, probe_count, probe_tokens, program_batch


def _rows_in_order(plan: causality.Plan) -> list[int]:
    return [i for entries in plan.batches for kind, i in entries if kind == "row"]


@pytest.mark.parametrize(("n_rows", "batch"), [(128, 4), (10240, 64), (1024, 4), (100, 3), (7, 1)])
def test_every_batch_is_full_and_every_row_comes_once_in_order(n_rows: int, batch: int) -> None:
    plan = make_plan(n_rows, batch, 64, np.random.default_rng(0))
    assert all(len(entries) == batch for entries in plan.batches)
    assert _rows_in_order(plan) == list(range(n_rows))
    n_probes = probe_count(n_rows, batch)
    assert len(plan.probes) == n_probes
    assert causality.PROBE_FRACTION * n_rows <= n_probes < causality.PROBE_FRACTION * n_rows + batch + 1


def test_probes_sit_in_later_batches_than_their_originals_never_the_first() -> None:
    plan = make_plan(1024, 8, 64, np.random.default_rng(1))
    batch_of_row = {i: k for k, entries in enumerate(plan.batches) for kind, i in entries if kind == "row"}
    slots = set()
    for k, entries in enumerate(plan.batches):
        for slot, (kind, j) in enumerate(entries):
            if kind != "probe":
                continue
            probe = plan.probes[j]
            assert k > 0 and batch_of_row[probe.orig] < k and batch_of_row[probe.donor] < k
            assert probe.donor != probe.orig and 0 <= probe.cut <= 62
            assert plan.last_use[probe.orig] >= k and plan.last_use[probe.donor] >= k
            slots.add(slot)
    assert len(slots) > 1  # at random slots, not always the last ones


def test_plans_differ_between_evaluations() -> None:
    a = make_plan(1024, 8, 64, np.random.default_rng(1))
    b = make_plan(1024, 8, 64, np.random.default_rng(2))
    assert a.probes != b.probes


def test_the_test_switches_turn_the_defence_off() -> None:
    same = make_plan(256, 8, 64, np.random.default_rng(3), same_batch=True)
    batch_of_row = {i: k for k, entries in enumerate(same.batches) for kind, i in entries if kind == "row"}
    for k, entries in enumerate(same.batches):
        for kind, j in entries:
            if kind == "probe":
                assert batch_of_row[same.probes[j].orig] == k
    off = make_plan(100, 8, 64, np.random.default_rng(3), probes=False)
    assert not off.probes and _rows_in_order(off) == list(range(100))
    assert sum(kind == "fill" for entries in off.batches for kind, _ in entries) == 4  # 100 -> 104


def test_the_batch_is_capped_so_probes_stay_a_few_percent() -> None:
    assert program_batch(64, 10240) == 64  # cuda profile: the train file's batch
    assert program_batch(16, 128) == 4  # cpu profile: 128 // 32
    assert program_batch(16, 10) == 1
    for n_rows, requested in ((10240, 64), (1024, 16), (128, 16)):
        b = program_batch(requested, n_rows)
        assert probe_count(n_rows, b) / n_rows <= 0.032


def test_a_probe_row_keeps_the_prefix_and_always_changes_the_token_after_the_cut() -> None:
    orig = np.arange(10, dtype=np.int32)
    donor = orig.copy()  # a donor that agrees everywhere: the token after the cut is still changed
    row = probe_tokens(orig, donor, 3, 50)
    assert (row[:4] == orig[:4]).all() and row[4] != orig[4]
    other = np.arange(100, 110, dtype=np.int32)
    row = probe_tokens(orig, other, 6, 200)
    assert (row[:7] == orig[:7]).all() and (row[7:] == other[7:]).all()
    row = probe_tokens(orig, None, 0, 10)  # no donor: every later token shifted by one id
    assert row[0] == 0 and (row[1:] == (orig[1:] + 1) % 10).all()


def _ledger_with_one_probe(cut: int = 5) -> tuple[Ledger, np.ndarray]:
    plan = causality.Plan(1, [[("row", 0)], [("row", 1)], [("probe", 0)]], [causality.Probe(0, 1, cut)])
    plan.last_use = {0: 2, 1: 2}
    ledger = Ledger(plan)
    losses = np.linspace(0.5, 3.0, 12).astype(np.float32)
    ledger.original(0, losses)
    return ledger, losses


def test_equal_prefix_losses_pass_and_later_positions_are_not_compared() -> None:
    ledger, losses = _ledger_with_one_probe()
    probe = losses.copy()
    probe[6:] += 5.0  # after the cut anything may change
    ledger.probe(0, probe)
    assert ledger.compared == 1 and ledger.max_diff == 0.0


def test_a_changed_loss_before_the_cut_is_non_causal_and_says_where() -> None:
    ledger, losses = _ledger_with_one_probe()
    probe = losses.copy()
    probe[5] -= 0.25
    with pytest.raises(NonCausal, match=r"position 5 of evaluation row 0 .* after position 5"):
        ledger.probe(0, probe)


def test_the_tolerance_admits_float32_reordering_noise_only() -> None:
    ledger, losses = _ledger_with_one_probe()
    noisy = losses * (1 + 2**-20)  # a few ulps: passes
    ledger.probe(0, noisy)
    ledger, losses = _ledger_with_one_probe()
    leak = losses.copy()
    leak[2] -= 1e-3  # a leak worth 1e-3 nats per token: caught
    with pytest.raises(NonCausal):
        ledger.probe(0, leak)
    ledger, losses = _ledger_with_one_probe()
    nan = losses.copy()
    nan[0] = np.nan
    with pytest.raises(NonCausal):
        ledger.probe(0, nan)
