"""The compile caches live under the cache root, shared by every tag's runs (and --gpus workers),
writable inside the sandbox; the evaluator never gets them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Toy, git

from harness.commands.main import main
from harness.integrity import evaluation, sandbox

CACHE_TOY = '''"""Appends its tag's name to a file in the inductor cache and prints what the file held."""
import os
from pathlib import Path

cache = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
seen = (cache / "entries").read_text() if (cache / "entries").exists() else ""
with open(cache / "entries", "a") as fh:
    fh.write(os.environ["HOME"].split("/results/")[1].split("/")[0] + ";")
print("seen:", seen or "nothing", "in", cache, "triton:", os.environ["TRITON_CACHE_DIR"])
print("---")
print("val_bpb: 1.0")
'''


@pytest.mark.parametrize("mode", ["off", "on"])
def test_two_tags_share_one_compile_cache_under_the_cache_root(
    toy_experiment: Toy, clean_env: Path, mode: str
) -> None:
    if mode == "on" and not sandbox.probe()[0]:
        pytest.skip("bubblewrap does not work here")
    toy = toy_experiment
    toy.train.write_text(CACHE_TOY)
    git(toy.repo, "commit", "-q", "-am", "cache toy")
    for tag in ("first", "second"):
        empty = toy.replay_file([], f"{tag}.jsonl")
        assert (
            main(
                [
                    "run",
                    "--device",
                    "cpu",
                    "--tag",
                    tag,
                    "--judge",
                    "strict",
                    "--sandbox",
                    mode,
                    "--agent",
                    f"replay:{empty}",
                ]
            )
            == 0
        )
    cache = clean_env / "compile-cache"
    assert (cache / "inductor" / "entries").read_text() == "first;second;"
    log = (toy.repo / "results" / "second" / "runs" / "0.log").read_text()
    assert f"seen: first; in {cache / 'inductor'} triton: {cache / 'triton'}" in log
    assert not (toy.repo / "results" / "first" / "compile-cache").exists()


def test_the_evaluator_environment_has_no_compile_cache_of_the_harness() -> None:
    base = {
        "PATH": os.environ["PATH"],
        "TORCHINDUCTOR_CACHE_DIR": "/poisoned",
        "TRITON_CACHE_DIR": "/poisoned",
    }
    run_env = {"TORCHINDUCTOR_CACHE_DIR": "/shared", "AUTORESEARCH_DEVICE": "cpu"}
    env = evaluation.environment(base, run_env)
    assert not [k for k in env if k.startswith(("TORCHINDUCTOR_", "TRITON_"))]
    assert env["AUTORESEARCH_DEVICE"] == "cpu" and env["PATH"] == os.environ["PATH"]


MLX_TOY = '''"""Stands in for MLX's CPU backend: compiles a "kernel" into $TMPDIR/mlx/ unless it is there."""
import os
from pathlib import Path

kernel = Path(os.environ["TMPDIR"]) / "mlx" / "0.0.0" / "cpu" / "libkernel.so"
print("kernel:", "found" if kernel.exists() else "compiled")
if not kernel.exists():
    kernel.parent.mkdir(parents=True, exist_ok=True)
    kernel.write_bytes(b"compiled once")
print("---")
print("val_bpb: 1.0")
'''


@pytest.mark.parametrize("mode", ["off", "on"])
def test_mlx_cpu_kernels_compile_once_per_machine(toy_experiment: Toy, clean_env: Path, mode: str) -> None:
    pytest.importorskip("mlx.core")
    if mode == "on" and not sandbox.probe()[0]:
        pytest.skip("bubblewrap does not work here")
    toy = toy_experiment
    toy.train.write_text(MLX_TOY)
    git(toy.repo, "commit", "-q", "-am", "mlx toy")
    for tag in ("first", "second"):
        empty = toy.replay_file([], f"{tag}.jsonl")
        argv = ["run", "--device", "mlx", "--tag", tag, "--judge", "strict", "--sandbox", mode]
        assert main([*argv, "--agent", f"replay:{empty}"]) == 0
    first = (toy.repo / "results" / "first" / "runs" / "0.log").read_text()
    second = (toy.repo / "results" / "second" / "runs" / "0.log").read_text()
    assert "kernel: compiled" in first and "kernel: found" in second, second
    shared = clean_env / "compile-cache" / "mlx" / "0.0.0" / "cpu" / "libkernel.so"
    assert shared.read_bytes() == b"compiled once"
    assert not list(shared.parent.glob(".libkernel.so.*"))  # no temporary left
