"""The evaluator end to end: hand_off in one place, prepare.evaluate_program in another, same number.

The models are the real ones: experiments/gpt/train.py's GPT (cpu profile, SDPA with a sliding
window, float32 and bfloat16 autocast) and experiments/gpt-mlx/train.py's, with perturbed
weights so that the numbers mean something. The evaluator must give what the in-process
evaluate_bpb gives (within 1e-4 bits per byte), prove an honest model causal with no
difference at all, and catch a model that looks one token ahead.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

torch = pytest.importorskip("torch")

from prepare import datasets, evaluate_program, verdict  # noqa: E402
from prepare.causality import NonCausal  # noqa: E402
from prepare.evaluate import evaluate_bpb  # noqa: E402
from prepare.handoff import hand_off  # noqa: E402
from prepare.program import ProgramError  # noqa: E402
from prepare.tokenizer import Tokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    datasets.prepare_dataset("arithmetic", root, progress=False)
    return root


@pytest.fixture(scope="module")
def profile(cache: Path) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUTORESEARCH_CACHE", str(cache))
        mp.setenv("AUTORESEARCH_DATASET", "arithmetic")
        mp.setenv("AUTORESEARCH_DEVICE", "cpu")
        mp.delenv("AUTORESEARCH_HAND_OFF", raising=False)
        yield


@pytest.fixture(scope="module")
def tok(profile: None) -> Tokenizer:
    return Tokenizer.load()


def _module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpt(profile: None, tok: Tokenizer) -> torch.nn.Module:
    train = _module("gpt_train_for_evaluator", ROOT / "experiments" / "gpt" / "train.py")
    torch.manual_seed(0)
    model = train.build_model(tok.vocab_size, torch.device("cpu"))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # away from the zero-initialised start
    return model


def _handed_off(model: object, folder: Path, monkeypatch: pytest.MonkeyPatch, batch: int = 16) -> Path:
    monkeypatch.setenv("AUTORESEARCH_HAND_OFF", str(folder))
    hand_off(model, batch)
    monkeypatch.delenv("AUTORESEARCH_HAND_OFF")
    return folder


@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bfloat16"])
def test_the_gpt_program_scores_what_evaluate_bpb_scores(
    gpt: torch.nn.Module, tok: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, autocast: bool
) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        reference = evaluate_bpb(gpt, tok, 16)
        folder = _handed_off(gpt, tmp_path, monkeypatch)
    result = evaluate_program.evaluate(folder)
    assert abs(result["val_bpb"] - reference) < 1e-4, (result["val_bpb"], reference)
    assert 1.0 < reference < 9.0  # a perturbed model: neither perfect nor degenerate
    assert (
        result["probes"] == 4 and result["max_probe_diff"] == 0.0
    )  # an honest model: bit-identical prefixes
    assert result["eval_tokens"] == 32768 and result["bytes"] > 0


def test_the_evaluator_process_reports_on_its_last_line(
    gpt: torch.nn.Module, tok: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _handed_off(gpt, tmp_path / "hand-off", monkeypatch)
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-B", "-m", "prepare.evaluate_program", str(folder)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(verdict.RESULT_MARKER)
    result = json.loads(last[len(verdict.RESULT_MARKER) :])
    assert abs(result["val_bpb"] - evaluate_bpb(gpt, tok, 16)) < 1e-4
    assert "val_bpb:" in done.stdout  # the summary block people read


class LookAhead(torch.nn.Module):
    """A bigram table plus the next input token: logits at t see t+1, which is the target."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(vocab, vocab)
        torch.nn.init.zeros_(self.table.weight)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        nxt = torch.cat([idx[:, 1:], idx[:, -1:]], dim=1)
        return self.table(idx) + 20.0 * torch.nn.functional.one_hot(nxt, self.table.num_embeddings).float()


def test_a_look_ahead_model_is_non_causal_and_wins_without_the_probes(
    tok: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _handed_off(LookAhead(tok.vocab_size), tmp_path, monkeypatch)
    with pytest.raises(NonCausal, match="when the tokens after position"):
        evaluate_program.evaluate(folder)
    assert (
        evaluate_program.evaluate(folder, probes=False)["val_bpb"] < 0.2
    )  # what it would have scored (honest: ~8)


def test_the_program_must_fit_the_profile(
    gpt: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _handed_off(gpt, tmp_path, monkeypatch)
    header = json.loads((folder / "program.json").read_text())
    (folder / "program.json").write_text(json.dumps({**header, "batch": 128}))
    with pytest.raises(ProgramError, match="larger than 4, the most the probes allow"):
        evaluate_program.evaluate(folder)
    (folder / "program.json").write_text(json.dumps({**header, "seq_len": 64}))
    with pytest.raises(ProgramError, match="rows of 64 tokens; the profile evaluates 256"):
        evaluate_program.evaluate(folder)


def test_the_main_entry_turns_refusals_into_a_reason_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], profile: None
) -> None:
    (tmp_path / "program.json").write_text("[]")
    assert evaluate_program.main([str(tmp_path)]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last[len(verdict.RESULT_MARKER) :])["reason"].startswith("refused program: ")


# ---------------------------------------------------------------------------------------------
# MLX
# ---------------------------------------------------------------------------------------------


def test_the_mlx_program_scores_what_evaluate_bpb_scores(
    tok: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mx = pytest.importorskip("mlx.core")
    train = _module("gpt_mlx_train_for_evaluator", ROOT / "experiments" / "gpt-mlx" / "train.py")
    mx.random.seed(0)
    model = train.build_model(tok.vocab_size)
    from mlx.utils import tree_map

    model.update(tree_map(lambda p: p + 0.05 * mx.random.normal(p.shape), model.parameters()))
    reference = evaluate_bpb(model, tok, 16)
    result = evaluate_program.evaluate(_handed_off(model, tmp_path, monkeypatch))
    assert abs(result["val_bpb"] - reference) < 1e-4, (result["val_bpb"], reference)
    assert 1.0 < reference < 9.0 and result["max_probe_diff"] == 0.0 and result["probes"] >= 4


def test_an_mlx_program_that_draws_random_numbers_is_refused(
    tok: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mx = pytest.importorskip("mlx.core")

    class Noisy:
        def __call__(self, idx):  # type: ignore[no-untyped-def]
            return mx.random.normal((*idx.shape, tok.vocab_size))

    with pytest.raises(ProgramError, match="RandomBits"):
        evaluate_program.evaluate(_handed_off(Noisy(), tmp_path, monkeypatch))


def test_an_mlx_look_ahead_model_is_non_causal_and_wins_without_the_probes(
    tok: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The causality proof on MLX's side: an exported function whose logits at t are the input at
    t+1 (the target) is caught by the probes, and scores near 0 without them."""
    mx = pytest.importorskip("mlx.core")
    vocab = tok.vocab_size

    class MlxLookAhead:
        def __call__(self, idx):  # type: ignore[no-untyped-def]
            nxt = mx.concatenate([idx[:, 1:], idx[:, -1:]], axis=1)
            return 20.0 * (nxt[..., None] == mx.arange(vocab)).astype(mx.float32)

    folder = _handed_off(MlxLookAhead(), tmp_path, monkeypatch)
    with pytest.raises(NonCausal, match="when the tokens after position"):
        evaluate_program.evaluate(folder)
    assert evaluate_program.evaluate(folder, probes=False)["val_bpb"] < 0.2


class Flat(torch.nn.Module):
    """Returns one number per position instead of logits: exportable, but not a language model."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return idx.float() * self.w


def test_a_program_that_fails_while_running_is_an_evaluation_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], profile: None
) -> None:
    folder = _handed_off(Flat(), tmp_path, monkeypatch)
    assert evaluate_program.main([str(folder)]) == 1
    last = capsys.readouterr().out.strip().splitlines()[-1]
    reason = json.loads(last[len(verdict.RESULT_MARKER) :])["reason"]
    assert reason.startswith("evaluation failed: the program raised TypeError: model(idx) must return logits")


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_the_default_gpt_is_causal_to_the_bit_and_scores_what_evaluate_bpb_scores(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cuda profile (2,048-token rows, 10,240 of them) and the default depth-8 model under bf16
    autocast: the tolerance of the probes assumes an honest model's prefix losses are identical
    on the same batch shape; this is where that is measured on a GPU."""
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    monkeypatch.setenv("AUTORESEARCH_DATASET", "arithmetic")
    monkeypatch.setenv("AUTORESEARCH_DEVICE", "cuda")
    train = _module("gpt_train_on_cuda", ROOT / "experiments" / "gpt" / "train.py")
    tok = Tokenizer.load()
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = train.build_model(tok.vocab_size, device)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    model.backend = "sdpa"  # what train.py hands off
    train.build_attention_masks("sdpa", train.MAX_SEQ_LEN, model.windows, device)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        reference = evaluate_bpb(model, tok, train.EVAL_BATCH_SIZE)
        folder = _handed_off(model, tmp_path, monkeypatch, train.EVAL_BATCH_SIZE)
    result = evaluate_program.evaluate(folder)
    assert result["max_probe_diff"] == 0.0 and result["probes"] >= 205
    assert abs(result["val_bpb"] - reference) < 1e-4, (result["val_bpb"], reference)
