"""evaluate_bpb against values computed independently, on the real arithmetic validation rows."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from support.evalutil import TorchTable, all_rows

from prepare import datasets, evaluate
from prepare.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    datasets.prepare_dataset("arithmetic", root)
    return root


@pytest.fixture
def tok(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Tokenizer:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    monkeypatch.setenv("AUTORESEARCH_DATASET", "arithmetic")
    monkeypatch.setenv("AUTORESEARCH_DEVICE", "cpu")
    return Tokenizer.load()


def test_zero_logits_give_ln_v(tok: Tokenizer) -> None:
    V = tok.vocab_size
    bpb = evaluate.evaluate_bpb(TorchTable(np.zeros((V, V))), tok, 16)
    _, y = all_rows(tok)
    tb = np.array(tok.token_bytes)[y]
    targets, nbytes = int((tb > 0).sum()), int(tb.sum())
    assert targets < y.size  # BOS targets exist and are masked out
    assert bpb == pytest.approx(math.log(V) * targets / (math.log(2) * nbytes), rel=1e-6)  # float32 CE
    assert y.size == 32768  # the cpu profile's EVAL_TOKENS


def test_bigram_model_matches_a_hand_computation(tok: Tokenizer) -> None:
    V = tok.vocab_size
    table = np.random.default_rng(0).normal(0, 2, (V, V))
    bpb = evaluate.evaluate_bpb(TorchTable(table), tok, 7)
    x, y = all_rows(tok)
    t32 = table.astype(np.float32).astype(np.float64)
    nats = 0.0
    nbytes = 0
    for a, b in zip(x.ravel().tolist(), y.ravel().tolist(), strict=True):
        w = tok.token_bytes[b]
        if w == 0:
            continue
        row = t32[a]
        m = row.max()
        nats += m + math.log(np.exp(row - m).sum()) - row[b]
        nbytes += w
    assert bpb == pytest.approx(nats / (math.log(2) * nbytes), rel=1e-6)


def test_special_token_targets_are_masked(tok: Tokenizer) -> None:
    V = tok.vocab_size
    table = np.zeros((V, V))
    table[:, tok.bos_id] = -1e9  # a BOS target would cost ~1e9 nats if it were counted
    bpb = evaluate.evaluate_bpb(TorchTable(table), tok, 32)
    _, y = all_rows(tok)
    tb = np.array(tok.token_bytes)[y]
    assert bpb == pytest.approx(math.log(V - 1) * (tb > 0).sum() / (math.log(2) * tb.sum()), rel=1e-6)


def test_independent_of_batch_size_and_deterministic(tok: Tokenizer) -> None:
    table = np.random.default_rng(1).normal(0, 1, (tok.vocab_size, tok.vocab_size))
    model = TorchTable(table)
    values = [evaluate.evaluate_bpb(model, tok, b) for b in (128, 5, 128)]
    assert values[0] == values[2]
    assert values[1] == pytest.approx(values[0], rel=1e-9)


def test_padded_vocab_is_accepted_and_short_one_refused(tok: Tokenizer) -> None:
    V = tok.vocab_size
    padded = np.full((V, V + 60), -1e9)
    padded[:, :V] = 0
    assert evaluate.evaluate_bpb(TorchTable(padded), tok, 64) == pytest.approx(
        evaluate.evaluate_bpb(TorchTable(np.zeros((V, V))), tok, 64), rel=1e-9
    )
    with pytest.raises(TypeError, match="classes"):
        evaluate.evaluate_bpb(TorchTable(np.zeros((V, V - 1))), tok, 64)


def test_model_must_return_logits_and_training_mode_is_restored(tok: Tokenizer) -> None:
    class Bad(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor, None]:
            return idx.float(), None

    model = Bad().train()
    with pytest.raises(TypeError, match=r"model\(idx\) must return logits"):
        evaluate.evaluate_bpb(model, tok, 8)
    assert model.training


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_and_cpu_agree(tok: Tokenizer) -> None:
    table = np.random.default_rng(2).normal(0, 1, (tok.vocab_size, tok.vocab_size))
    cpu = evaluate.evaluate_bpb(TorchTable(table), tok, 16)
    gpu = evaluate.evaluate_bpb(TorchTable(table).cuda(), tok, 16)
    assert gpu == pytest.approx(cpu, rel=1e-5)
