"""evaluate_bpb_mlx (prepare/evaluate_mlx.py) on the real arithmetic validation rows.

Checked against values computed independently (all-zero logits give ln V per target), against
the torch path of evaluate_bpb on the same weights, for batch-size independence, for bounded
memory (the logits are evaluated a slice of rows at a time).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")
torch = pytest.importorskip("torch")

from support.evalutil import TorchTable, all_rows  # noqa: E402

from prepare import datasets, evaluate  # noqa: E402
from prepare.evaluate_mlx import CHUNK_ELEMENTS, evaluate_bpb_mlx  # noqa: E402
from prepare.tokenizer import Tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    datasets.prepare_dataset("arithmetic", root, progress=False)
    return root


@pytest.fixture
def tok(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Tokenizer:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    monkeypatch.setenv("AUTORESEARCH_DATASET", "arithmetic")
    monkeypatch.setenv("AUTORESEARCH_DEVICE", "cpu")  # 128 rows of 256 tokens: seconds on a laptop core
    return Tokenizer.load()


class MlxTable:
    """An MLX model: logits[b, t] = table[idx[b, t]] (a bigram model; a zero table is uniform)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = mx.array(table.astype(np.float32))
        self.calls: list[tuple[int, ...]] = []

    def __call__(self, idx):  # type: ignore[no-untyped-def]
        self.calls.append(tuple(idx.shape))
        return self.table[idx]


def test_zero_logits_give_ln_v_per_target_over_bytes(tok: Tokenizer) -> None:
    V = tok.vocab_size
    bpb = evaluate_bpb_mlx(MlxTable(np.zeros((V, V))), tok, 16)
    x, y = all_rows(tok)
    tb = np.array(tok.token_bytes)[y]
    targets, nbytes = int((tb > 0).sum()), int(tb.sum())
    assert targets < y.size  # BOS targets exist and must be masked out
    assert bpb == pytest.approx(math.log(V) * targets / (math.log(2) * nbytes), rel=1e-6)
    assert x.size == 32768  # every row of the cpu profile


def test_matches_the_torch_path_on_the_same_weights(tok: Tokenizer) -> None:
    V = tok.vocab_size
    table = np.random.default_rng(0).normal(0.0, 2.0, (V, V))
    via_torch = evaluate.evaluate_bpb(TorchTable(table), tok, 32)
    via_dispatch = evaluate.evaluate_bpb(MlxTable(table), tok, 32)  # not a torch module -> the MLX path
    direct = evaluate_bpb_mlx(MlxTable(table), tok, 7)
    assert via_dispatch == pytest.approx(via_torch, rel=1e-5)
    assert direct == pytest.approx(via_torch, rel=1e-5)
    assert via_torch > 1.0  # a random table is far from the data: not a degenerate agreement


def test_batch_size_does_not_change_the_result(tok: Tokenizer) -> None:
    V = tok.vocab_size
    table = np.random.default_rng(1).normal(0.0, 1.0, (V, V))
    values = [evaluate_bpb_mlx(MlxTable(table), tok, bs) for bs in (1, 5, 128, 1000)]
    assert max(values) - min(values) < 1e-6 * values[0]


def test_wide_logits_are_evaluated_a_slice_of_rows_at_a_time(tok: Tokenizer) -> None:
    # A 16,384-wide output (extra classes beyond the tokenizer's ids, as padded vocabularies have):
    # the whole 128-row batch would be 2 GiB of float32 logits; 16-row slices keep it far below that.
    V, wide = tok.vocab_size, 16384
    table = np.zeros((V, wide), dtype=np.float32)
    model = MlxTable(table)
    mx.eval(model.table)
    full_batch_bytes = 128 * 256 * wide * 4
    mx.reset_peak_memory()
    bpb = evaluate_bpb_mlx(model, tok, 128)
    peak = mx.get_peak_memory()
    x, y = all_rows(tok)
    tb = np.array(tok.token_bytes)[y]
    assert bpb == pytest.approx(
        math.log(wide) * int((tb > 0).sum()) / (math.log(2) * int(tb.sum())), rel=1e-6
    )
    assert max(rows for rows, _ in model.calls) <= max(1, CHUNK_ELEMENTS // (256 * wide))
    assert sum(rows for rows, _ in model.calls) == x.shape[0]
    assert peak < full_batch_bytes / 2, (
        f"peak {peak / 2**20:.0f} MiB for a {full_batch_bytes / 2**20:.0f} MiB batch"
    )


def test_logits_of_the_wrong_shape_are_refused(tok: Tokenizer) -> None:
    class Flat:
        def __call__(self, idx):  # type: ignore[no-untyped-def]
            return mx.zeros((idx.shape[0] * idx.shape[1], tok.vocab_size))

    class Narrow:
        def __call__(self, idx):  # type: ignore[no-untyped-def]
            return mx.zeros((*idx.shape, tok.vocab_size - 1))

    with pytest.raises(TypeError, match=r"shape \(batch, seq_len, vocab\)"):
        evaluate_bpb_mlx(Flat(), tok, 8)
    with pytest.raises(TypeError, match="classes but the tokenizer has"):
        evaluate_bpb_mlx(Narrow(), tok, 8)
