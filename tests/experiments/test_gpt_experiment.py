"""experiments/gpt/train.py: the CPU smoke run end to end, and its parts on tiny shapes.

The smoke run is a real child process started the way the harness starts it (cwd = the
experiment folder, PYTHONPATH = the repo root, AUTORESEARCH_* set, a hand-off folder) on the
`arithmetic` dataset; it must hand its model off and end with a summary block holding the 8
training keys, and the evaluator (its own process, as the harness starts it) must score the
handed-off model. The unit tests import train.py as a module (its training
loop only runs under __main__). GPU-only checks are marked `gpu` and skip without CUDA.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from harness.night.metrics import parse_summary  # noqa: E402
from prepare.datasets import prepare_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "gpt"
SUMMARY_KEYS = (  # the train run's summary: val_bpb is the evaluator's
    "training_seconds",
    "total_seconds",
    "peak_vram_mb",
    "mfu_percent",
    "total_tokens_M",
    "num_steps",
    "num_params_M",
    "depth",
)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    prepare_dataset("arithmetic", root, progress=False)
    return root


@pytest.fixture(scope="module")
def train():
    """train.py as a module (the CPU profile: no CUDA here, or AUTORESEARCH_DEVICE=cpu)."""
    spec = importlib.util.spec_from_file_location("gpt_train_under_test", EXPERIMENT / "train.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_env(cache_root: Path, tmp_path: Path, budget: float) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        AUTORESEARCH_DEVICE="cpu",
        AUTORESEARCH_TIME_BUDGET=str(budget),
        AUTORESEARCH_DATASET="arithmetic",
        AUTORESEARCH_CACHE=str(cache_root),
        AUTORESEARCH_HAND_OFF=str(tmp_path / "hand-off"),
    )
    return env


# ---------------------------------------------------------------------------------------------
# the smoke run, as CI runs it through the loop (--device cpu --budget 10)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # over 20 s on a 2-core machine
def test_cpu_smoke_run_hands_off_and_the_evaluator_scores_it(cache_root: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "train.py"],
        cwd=EXPERIMENT,
        env=run_env(cache_root, tmp_path, 10),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    summary = parse_summary(proc.stdout)
    assert summary is not None, proc.stdout[-2000:]
    for key in SUMMARY_KEYS:
        assert isinstance(summary.get(key), float), (key, summary)
    assert summary["depth"] == 2  # the tiny CPU configuration was selected automatically
    assert summary["num_steps"] >= 2
    assert 9.5 <= summary["training_seconds"] < 60  # the budget was honoured, not skipped
    assert summary["total_seconds"] >= summary["training_seconds"]
    assert "val_bpb" not in summary and "@@autoresearch hand-off" in proc.stdout
    done = subprocess.run(
        [sys.executable, "-m", "prepare.evaluate_program", str(tmp_path / "hand-off")],
        cwd=ROOT, env=run_env(cache_root, tmp_path, 10), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1].split(" ", 2)[2])
    assert 0 < result["val_bpb"] < 8  # bytes of arithmetic text: log2(260) is ~8 bits at chance
    assert result["probes"] == 4 and result["max_probe_diff"] == 0.0  # the real GPT is causal
    progress = [line for line in proc.stdout.splitlines() if line.startswith("step ")]
    assert progress and all("loss: " in line and "%)" in line for line in progress)


def test_nan_loss_prints_fail_and_exits_1(cache_root: Path, tmp_path: Path) -> None:
    # the kind of edit an agent could make: it poisons the residual stream with NaN
    work = tmp_path / "gpt"
    shutil.copytree(EXPERIMENT, work)
    src = (work / "train.py").read_text()
    target = "x = norm(self.wte(idx).to(dtype))"
    assert target in src
    (work / "train.py").write_text(src.replace(target, target + " * float('nan')"))
    proc = subprocess.run(
        [sys.executable, "train.py"],
        cwd=work,
        env=run_env(cache_root, tmp_path, 10),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[-1] == "FAIL"
    assert parse_summary(proc.stdout) is None


# ---------------------------------------------------------------------------------------------
# the parts
# ---------------------------------------------------------------------------------------------


def tiny_model(train, vocab=64, seq_len=32, depth=4, dim=64, head_dim=16, backend="sdpa"):
    windows = train.window_sizes(depth, "SSSL", 8, seq_len)
    torch.manual_seed(0)
    model = train.GPT(vocab, seq_len, depth, dim, head_dim, windows, backend)
    model.init_weights()
    train.build_attention_masks(backend, seq_len, windows, torch.device("cpu"))
    return model


@pytest.mark.slow  # over 20 s on a 2-core machine (12-22 s measured)
def test_a_few_steps_on_a_fixed_batch_reduce_the_loss(train) -> None:
    model = tiny_model(train)
    optimizers = train.build_optimizers(model)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (4, 32), generator=g)
    y = torch.randint(0, 64, (4, 32), generator=g)
    losses = []
    for step in range(25):
        loss = model(x, y)
        loss.backward()
        train.apply_schedules(optimizers, step / 100)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert math.isclose(losses[0], math.log(64), rel_tol=0.05)  # zero-init projections: uniform start
    assert losses[-1] < 0.5 * losses[0], losses


def test_every_parameter_is_trained_by_exactly_one_optimizer(train) -> None:
    model = tiny_model(train)
    adamw, muon = train.build_optimizers(model)
    seen = [id(p) for opt in (adamw, muon) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters())
    assert all(p.ndim == 2 for g in muon.param_groups for p in g["params"])
    lm_head_lr = next(g["lr"] for g in adamw.param_groups if g["params"][0] is model.lm_head.weight)
    assert math.isclose(lm_head_lr, train.UNEMBEDDING_LR * (64 / 768) ** -0.5)  # scaled by width


def test_model_design_points(train) -> None:
    model = tiny_model(train)
    assert not any(name.endswith("bias") for name, _ in model.named_parameters())
    assert sorted(model.value_embeds) == ["1", "3"]  # alternating layers, the last one included
    assert model.windows == [8, 8, 8, 32]
    for block in model.blocks:
        assert torch.count_nonzero(block.attn.c_proj.weight) == 0
        assert torch.count_nonzero(block.mlp.c_proj.weight) == 0
    logits = model(torch.randint(0, 64, (2, 32)))
    assert logits.shape == (2, 32, 64)
    model.lm_head.weight.data.normal_(std=100.0)
    assert model(torch.randint(0, 64, (2, 32))).abs().max() <= train.LOGIT_SOFTCAP


def test_window_sizes_follow_the_pattern_and_end_full(train) -> None:
    assert train.window_sizes(8, "SSSL", 1024, 2048) == [1024] * 3 + [2048] + [1024] * 3 + [2048]
    assert train.window_sizes(3, "S", 5, 16) == [5, 5, 16]


def dense_reference(q, k, v, window):
    T = q.size(-2)
    i = torch.arange(T)
    allowed = (i[:, None] >= i[None, :]) & (i[:, None] - i[None, :] < window)
    scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.size(-1))
    scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v.double()


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
@pytest.mark.parametrize("window", [1, 5, 16, 200, 256])
def test_window_masks_match_a_dense_reference(train, backend: str, window: int) -> None:
    g = torch.Generator().manual_seed(window)
    q, k, v = (torch.randn(2, 3, 256, 16, generator=g) for _ in range(3))
    train.build_attention_masks(backend, 256, [window], torch.device("cpu"))
    attend = train.flex_attention if backend == "flex" else train.sdpa_attention
    out = attend(q, k, v, window).double()
    ref = dense_reference(q, k, v, window)
    assert (out - ref).norm() / ref.norm() < 1e-4
    if window == 1:  # each query sees only itself
        assert torch.allclose(out, v.double(), atol=1e-5)


def test_muon_orthogonalisation_is_near_orthogonal(train) -> None:
    g = torch.Generator().manual_seed(3)
    for shape in [(64, 64), (128, 32), (32, 128), (3, 64, 48)]:
        G = torch.randn(*shape, generator=g)
        X = train.orthogonalize(G, 5).double()
        sv = torch.linalg.svdvals(X)
        # five quintic steps push singular values into roughly [0.7, 1.2]; only the tiny tail of a
        # random square matrix stays below (Muon does not need an exact orthogonalisation)
        assert sv.max() < 1.3, (shape, sv.max())
        assert ((sv > 0.5) & (sv < 1.3)).double().mean() > 0.9, (shape, sv)
        U, _, Vh = torch.linalg.svd(G.double(), full_matrices=False)
        polar = U @ Vh
        cos = (X * polar).sum() / (X.norm() * polar.norm())
        assert cos > 0.95  # the same directions as the exact U V^T
    # a matrix with condition number 10: every singular value lands near 1
    Q1, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    Q2, _ = torch.linalg.qr(torch.randn(64, 64, generator=g))
    G = Q1 @ torch.diag(torch.linspace(0.1, 1.0, 64)) @ Q2
    sv = torch.linalg.svdvals(train.orthogonalize(G, 5).double())
    assert sv.min() > 0.6 and sv.max() < 1.3, (sv.min(), sv.max())
    # the scale of the gradient does not matter, only its directions (bf16: up to rounding)
    a, b = train.orthogonalize(G, 5).double(), train.orthogonalize(7 * G, 5).double()
    assert (a - b).norm() / a.norm() < 0.1


def test_schedules_follow_progress(train) -> None:
    assert train.lr_multiplier(0.0) == 1.0
    assert train.lr_multiplier(1.0) == pytest.approx(train.FINAL_LR_FRAC)
    assert train.lr_multiplier(1 - train.WARMDOWN_RATIO / 2) == pytest.approx(0.5 + 0.5 * train.FINAL_LR_FRAC)
    assert train.muon_momentum(0.0) == train.MUON_MOMENTUM[0]
    assert train.muon_momentum(1.0) == train.MUON_MOMENTUM[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU configuration")
def test_cpu_configuration_follows_the_top_level_knobs(tmp_path: Path) -> None:
    """An edit to DEPTH, the width or the lr (an agent's, the search agent's) must change what a
    CPU smoke run trains, not be overridden by the tiny CPU configuration."""
    source = (EXPERIMENT / "train.py").read_text()
    edited = tmp_path / "train.py"
    edited.write_text(
        source.replace("DEPTH = 8  #", "DEPTH = 4  #", 1)
        .replace("ASPECT_RATIO = 64  #", "ASPECT_RATIO = 128  #", 1)
        .replace("MATRIX_LR = 0.04  #", "MATRIX_LR = 0.08  #", 1)
    )
    spec = importlib.util.spec_from_file_location("gpt_train_edited", edited)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (module.DEPTH, module.ASPECT_RATIO, module.MATRIX_LR) == (1, 64, 0.04)


def test_mfu_table_never_guesses(train) -> None:
    assert train.gpu_peak_flops("NVIDIA H100 80GB HBM3") == pytest.approx(989.4e12)
    assert train.gpu_peak_flops("NVIDIA H100 NVL") == pytest.approx(835.5e12)
    assert train.gpu_peak_flops("Some Future Accelerator 9000") == 0.0


# ---------------------------------------------------------------------------------------------
# GPU only (run on the device machine: python -m pytest -m gpu tests/test_gpt_experiment.py)
# ---------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("window", [64, 1024, 2048])
def test_flex_matches_sdpa_on_cuda(train, window: int) -> None:
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(window)
    q, k, v = (torch.randn(2, 4, 2048, 128, generator=g, device=dev, dtype=torch.bfloat16) for _ in range(3))
    for backend in ("flex", "sdpa"):
        train.build_attention_masks(backend, 2048, [window], dev)
    flex = train.flex_attention(q, k, v, window).float()
    sdpa = train.sdpa_attention(q, k, v, window).float()
    ref = dense_reference(q[:1].cpu().float(), k[:1].cpu().float(), v[:1].cpu().float(), window).float()
    assert (flex[:1].cpu() - ref).norm() / ref.norm() < 1e-2  # bf16 inputs
    assert (flex - sdpa).norm() / sdpa.norm() < 1e-2


@pytest.mark.gpu
@needs_cuda
def test_compiled_muon_step_matches_eager_on_cuda(train) -> None:
    dev = torch.device("cuda")
    compiled = torch.compile(train.muon_update, dynamic=False, fullgraph=True)
    results = []
    for fn in (train.muon_update, compiled):
        torch.manual_seed(0)
        params = [torch.randn(256, 64, device=dev) for _ in range(3)]
        grads = [torch.randn(256, 64, device=dev) for _ in range(3)]
        buf = torch.zeros(3, 256, 64, device=dev)
        scalars = [torch.tensor(v, device=dev) for v in (0.9, 0.02, 0.1)]
        fn(params, grads, buf, *scalars, 5)
        results.append(torch.stack(params))
    assert (results[0] - results[1]).norm() / results[0].norm() < 1e-3
