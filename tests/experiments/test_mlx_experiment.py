"""experiments/gpt-mlx on MLX's CPU backend (mlx[cpu]): model, optimizer, real runs, the real loop.

The train file is imported as a module for the model/optimizer tests (its `main()` only runs as
a script) and started as a real child process for the rest. Runs use the `cpu` device profile
(256-token rows, 32,768 evaluation tokens): under the `mlx` profile (2,048-token rows, 2 M
evaluation tokens, sized for an Apple GPU) one evaluation takes tens of minutes on a CPU, so
the MLX train file is smoke-tested here under the CPU profile's constants. The first compiled
step pays MLX's one-time JIT of its CPU kernels (cached under $TMPDIR/mlx afterwards).
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

mx = pytest.importorskip("mlx.core")

from harness.night.metrics import parse_summary, read_summary  # noqa: E402
from prepare import datasets  # noqa: E402
from tests.conftest import PROJECT  # noqa: E402

TRAIN = PROJECT / "experiments" / "gpt-mlx" / "train.py"
# The runs' device profile (see the module docstring): "mlx" once that profile is CPU-sized without Metal.
PROFILE = "cpu"
# the train run's summary: val_bpb is not among them, the evaluator computes it
SUMMARY_KEYS = {
    "training_seconds", "total_seconds", "peak_vram_mb", "mfu_percent", "total_tokens_M", "num_steps",
    "num_params_M", "depth",
}  # fmt: skip
PROGRESS = re.compile(
    r"^step \d{5} \(\d+\.\d%\) \| loss: \d+\.\d{6} \| lrm: .* \| mfu: 0\.0% \| .*remaining: \d+s$"
)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    datasets.prepare_dataset("arithmetic", root, progress=False)
    return root


def load_module(path: Path, name: str) -> ModuleType:
    """A train file as a module, under the CPU profile (its constants are read at import)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTORESEARCH_DEVICE", PROFILE)
    mp.delenv("AUTORESEARCH_TIME_BUDGET", raising=False)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        mp.undo()
    return module


@pytest.fixture(scope="module")
def train() -> ModuleType:
    return load_module(TRAIN, "gpt_mlx_train")


def child_env(cache: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    env.update(
        PYTHONPATH=str(PROJECT),
        PYTHONUNBUFFERED="1",
        AUTORESEARCH_DEVICE=PROFILE,
        AUTORESEARCH_DATASET="arithmetic",
        AUTORESEARCH_CACHE=str(cache),
        AUTORESEARCH_TIME_BUDGET="5",
        AUTORESEARCH_HAND_OFF=str(tmp_path / "hand-off"),  # as the harness runs it
    )
    return env


# ---------------------------------------------------------------------------
# Model and optimizer, in process
# ---------------------------------------------------------------------------


def test_loss_falls_on_a_fixed_batch(train: ModuleType) -> None:
    mx.random.seed(0)
    model = train.build_model(32)
    optimizer = train.MuonAdamW(model)
    grad_fn = train.make_grad_fn(model)
    rows = np.random.default_rng(0).integers(0, 32, (4, train.MAX_SEQ_LEN + 1)).astype(np.int32)
    batch = (rows[:, :-1], rows[:, 1:], 0)
    loader = itertools.repeat(batch)  # the same batch every time
    losses = []
    for step in range(12):
        loss, _, _ = train.train_step(model, optimizer, grad_fn, loader, batch, 2, progress=step / 24)
        mx.eval(model.parameters(), optimizer.state, loss)
        losses.append(loss.item())
    assert losses[0] == pytest.approx(math.log(32), rel=0.05)  # tiny lm_head at init: near uniform
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses  # memorising the batch: 3.47 -> ~2.5 in 12 steps


def test_architecture_is_causal_with_zero_init_projections_and_no_biases(train: ModuleType) -> None:
    mx.random.seed(1)
    model = train.build_model(40)
    depth = model.config.n_layer
    names = [name for name, _ in train.tree_flatten(model.parameters())]
    assert all(n.endswith(".weight") or n in ("resid_lambdas", "x0_lambdas") for n in names)  # no biases
    for block in model.blocks:
        assert not mx.any(block.attn.c_proj.weight).item() and not mx.any(block.mlp.c_proj.weight).item()
    assert sorted(model.value_embeds) == [str(i) for i in range(depth) if i % 2 == (depth - 1) % 2]
    assert str(depth - 1) in model.value_embeds  # the last layer always has a value embedding
    assert model.config.windows[-1] == train.MAX_SEQ_LEN  # the last layer sees the whole context
    # Give the projections weights so every block mixes positions, then perturb one token:
    # logits before it must not move (causal), logits from it on must.
    for block in model.blocks:
        for lin in (block.attn.c_proj, block.mlp.c_proj):
            lin.weight = 0.05 * mx.random.normal(lin.weight.shape)
    idx = np.random.default_rng(1).integers(0, 40, (1, train.MAX_SEQ_LEN)).astype(np.int32)
    changed = idx.copy()
    p = train.MAX_SEQ_LEN // 2
    changed[0, p] = (changed[0, p] + 1) % 40
    a, b = model(mx.array(idx)), model(mx.array(changed))
    assert a.dtype == mx.float32 and a.shape == (1, train.MAX_SEQ_LEN, 40)
    assert mx.allclose(a[:, :p], b[:, :p], atol=1e-6).item()
    assert mx.max(mx.abs(a[:, p + 1 :] - b[:, p + 1 :])).item() > 1e-4
    assert mx.max(mx.abs(a)).item() <= train.LOGIT_SOFTCAP  # soft-capped


def load_gpt_or_skip(train: ModuleType) -> ModuleType:
    """experiments/gpt/train.py as a module, or skip when it is missing or configured differently."""
    path = PROJECT / "experiments" / "gpt" / "train.py"
    if not path.exists():
        pytest.skip("experiments/gpt/train.py is not in this checkout")
    gpt = load_module(path, "gpt_torch_train")
    names = ("build_model", "build_optimizers", "apply_schedules", "DEPTH", "WINDOW_PATTERN", "SHORT_WINDOW")
    if not all(hasattr(gpt, name) for name in names):
        pytest.skip("experiments/gpt/train.py no longer has the names this comparison uses")
    config = (
        "DEPTH",
        "ASPECT_RATIO",
        "HEAD_DIM",
        "WINDOW_PATTERN",
        "SHORT_WINDOW",
        "MATRIX_LR",
        "EMBEDDING_LR",
    )
    if any(getattr(gpt, c) != getattr(train, c) for c in config):
        pytest.skip("the two files' CPU configurations differ (an experiment changed one of them)")
    return gpt


def twin_models(train: ModuleType, gpt: ModuleType, V: int, seed: int) -> tuple:  # type: ignore[type-arg]
    """The MLX GPT with random weights everywhere (also where init puts zeros) and its PyTorch copy."""
    import torch

    mx.random.seed(seed)
    model = train.build_model(V)
    params = dict(train.tree_flatten(model.parameters()))
    randomised = ("c_proj.weight", "ve_gate.weight", "lm_head.weight")  # zero or tiny at init
    params = {k: 0.3 * mx.random.normal(v.shape) if k.endswith(randomised) else v for k, v in params.items()}
    params["x0_lambdas"] = mx.array(np.linspace(0.05, 0.3, model.config.n_layer, dtype=np.float32))
    model.update(train.tree_map_with_path(lambda path, _: params[path], model.parameters()))
    reference = gpt.build_model(V, torch.device("cpu"))
    theirs = dict(reference.named_parameters())
    assert set(theirs) == set(params), "parameter names differ between the two GPTs"
    with torch.no_grad():
        for name, value in params.items():
            theirs[name].copy_(torch.from_numpy(np.array(value)))
    return model, reference


def test_same_logits_as_the_pytorch_gpt_on_the_same_weights(train: ModuleType) -> None:
    """The architecture is the PyTorch file's: copy random weights across by name, compare logits."""
    torch = pytest.importorskip("torch")
    gpt = load_gpt_or_skip(train)
    model, reference = twin_models(train, gpt, V=48, seed=3)
    idx = np.random.default_rng(3).integers(0, 48, (2, train.MAX_SEQ_LEN))
    with torch.no_grad():
        expected = reference(torch.from_numpy(idx).long()).numpy()
    got = np.array(model(mx.array(idx.astype(np.int32))))
    assert got.shape == expected.shape
    assert np.abs(expected).std() > 0.5  # the logits carry signal: not a trivially equal pair
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()


def test_one_optimizer_step_matches_the_pytorch_optimizers(train: ModuleType) -> None:
    """Same weights, same batch: the MLX Muon+AdamW step moves every parameter like the PyTorch one."""
    torch = pytest.importorskip("torch")
    gpt = load_gpt_or_skip(train)
    model, reference = twin_models(train, gpt, V=48, seed=4)
    rows = np.random.default_rng(4).integers(0, 48, (2, train.MAX_SEQ_LEN + 1))
    before = {k: np.array(v) for k, v in train.tree_flatten(model.parameters())}
    # PyTorch: its own loss, backward, schedules at progress 0, both optimizers
    optimizers = gpt.build_optimizers(reference)
    loss = reference(torch.from_numpy(rows[:, :-1]).long(), torch.from_numpy(rows[:, 1:]).long())
    loss.backward()
    gpt.apply_schedules(optimizers, 0.0)
    for opt in optimizers:
        opt.step()
    theirs = {k: v.detach().numpy() for k, v in reference.named_parameters()}
    # MLX: the train file's compiled gradient and update
    batch = (rows[:, :-1].astype(np.int32), rows[:, 1:].astype(np.int32), 0)
    mine_loss, _, _ = train.train_step(
        model, train.MuonAdamW(model), train.make_grad_fn(model), iter([batch]), batch, 1, 0.0
    )
    mx.eval(model.parameters(), mine_loss)
    assert mine_loss.item() == pytest.approx(loss.item(), rel=1e-4)
    for name, new in train.tree_flatten(model.parameters()):
        step_mine, step_theirs = np.array(new) - before[name], theirs[name] - before[name]
        norm_mine, norm_theirs = np.linalg.norm(step_mine), np.linalg.norm(step_theirs)
        assert norm_theirs > 0, f"{name} did not move in the PyTorch step"
        cosine = float((step_mine * step_theirs).sum() / (norm_mine * norm_theirs))
        if name.startswith("blocks."):  # Muon: the PyTorch file orthogonalises in bf16, this one in float32
            assert cosine > 0.99 and norm_mine / norm_theirs == pytest.approx(1.0, abs=0.03), name
        else:  # AdamW: the same arithmetic
            assert np.abs(step_mine - step_theirs).max() < 1e-3 * np.abs(step_theirs).max(), name


def test_sliding_window_masks(train: ModuleType) -> None:
    band = np.array(train.attention_mask(8, 3))
    i, j = np.indices((8, 8))
    assert (band == ((j <= i) & (i - j < 3))).all()
    assert train.attention_mask(8, 8) == "causal"
    assert train.window_sizes(5, "SL", 4, 16) == (4, 16, 4, 16, 16)


def test_muon_takes_the_block_matrices_and_adamw_the_rest(train: ModuleType) -> None:
    model = train.build_model(40)
    opt = train.MuonAdamW(model)
    muon = {path for paths in opt.muon.values() for path in paths}
    params = dict(train.tree_flatten(model.parameters()))
    assert muon == {p for p, a in params.items() if p.startswith("blocks.") and a.ndim == 2}
    assert all(params[path].shape == shape for shape, paths in opt.muon.items() for path in paths)
    assert set(opt.adam) == set(params) - muon
    assert {"wte.weight", "lm_head.weight", "resid_lambdas", "x0_lambdas"} <= set(opt.adam)
    stacked = train.orthogonalize(mx.random.normal((3, 48, 16)), 5)  # a stack of tall matrices
    for m in np.array(stacked):
        s = np.linalg.svd(m, compute_uv=False)
        assert s.min() > 0.5 and s.max() < 1.3  # Newton-Schulz pushes singular values toward 1


# ---------------------------------------------------------------------------
# The train file as a real child process
# ---------------------------------------------------------------------------


@pytest.mark.slow  # over 20 s on a 2-core machine
def test_train_file_runs_to_a_valid_summary(cache: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(TRAIN)], cwd=TRAIN.parent, env=child_env(cache, tmp_path),
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = parse_summary(out.stdout)
    assert summary is not None and set(summary) >= SUMMARY_KEYS
    assert out.stdout.rstrip().splitlines()[-len(summary) - 1] == "---"
    progress = [line for line in out.stdout.splitlines() if line.startswith("step ")]
    assert progress and all(PROGRESS.match(line) for line in progress), progress[:3]
    assert float(summary["training_seconds"]) >= 5.0 and int(summary["num_steps"]) == len(progress)
    assert float(summary["peak_vram_mb"]) > 0 and float(summary["mfu_percent"]) == 0.0
    assert "val_bpb" not in summary and "@@autoresearch hand-off" in out.stdout
    # the handed-off model, scored by the evaluator in its own process
    done = subprocess.run(
        [sys.executable, "-m", "prepare.evaluate_program", str(tmp_path / "hand-off")],
        cwd=PROJECT, env=child_env(cache, tmp_path), capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1].split(" ", 2)[2])
    assert 0 < result["val_bpb"] < 8.1 and result["probes"] >= 4  # below ln(260)/ln(2)/1 byte: it learned


def test_a_diverging_run_prints_fail_and_exits_1(cache: Path, tmp_path: Path) -> None:
    source = TRAIN.read_text()
    assert "EMBEDDING_LR = 0.6" in source
    broken = tmp_path / "train.py"
    broken.write_text(source.replace("EMBEDDING_LR = 0.6", 'EMBEDDING_LR = float("nan")', 1))
    out = subprocess.run(
        [sys.executable, str(broken)], cwd=tmp_path, env=child_env(cache, tmp_path),
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.rstrip().splitlines()[-1] == "FAIL"
    assert parse_summary(out.stdout) is None


# ---------------------------------------------------------------------------
# Through the real loop (the CI check)
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_loop_runs_gpt_mlx_with_the_search_agent(project_repo: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "harness.commands.main", "run", "--tag", "mlx", "--experiment", "gpt-mlx",
         "--device", "mlx", "--agent", "search", "--judge", "strict", "--max-experiments", "2", "--budget", "5"],
        cwd=project_repo, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    if sys.platform != "darwin":  # no Metal: MLX's CPU backend gets the cpu profile's sizes
        assert re.search(r"^\s*profile:\s+cpu\b", out.stdout, re.M), out.stdout[-3000:]
    lines = (project_repo / "results" / "mlx.tsv").read_text().splitlines()
    rows = [line.split("\t") for line in lines[1:]]
    summary_col = lines[0].split("\t").index("summary")  # columns follow it (device, hardware, ...)
    assert len(rows) == 3 and rows[0][4] == "baseline"
    assert all(row[4].startswith("search: ") for row in rows[1:])
    for n, row in enumerate(rows):
        log = project_repo / "results" / "mlx" / "runs" / f"{n}.log"
        summary = json.loads(row[summary_col])  # the run's summary and the evaluator's keys, as the TSV keeps them
        assert set(summary) >= {*SUMMARY_KEYS, "val_bpb", "causal_probes"}, log.read_text()[-2000:]
        assert float(row[1]) == pytest.approx(summary["val_bpb"], abs=1e-6)
        assert "[autoresearch] evaluator: prepare.evaluate_program" in log.read_text()
