"""experiments/kernel: the refusal without a GPU, and the correctness gate of prepare.kernel_bench.

Without a GPU the Triton kernels run under Triton's CPU interpreter (TRITON_INTERPRET=1, set in
child processes from their start: Triton decides at import what it interprets). Planted wrong
kernels, each a plausible bug or shortcut, must be the crash `incorrect`; the end-to-end night
shows the gate is what stops a fast wrong kernel: with `--no-gate` the same kernel is kept.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.commands.main import main
from harness.errors import ConfigError
from harness.experiment import load_experiment
from harness.integrity.budget import Marker
from harness.night.measure import crash_reason
from harness.night.runner import RunResult
from tests.conftest import git
from tests.support.gitrepo import snapshot

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENT = ROOT / "experiments" / "kernel"
SHIPPED = (EXPERIMENT / "kernel.py").read_text()
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")


def bench(
    kernel_dir: Path, *args: str, interpret: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT)
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "prepare.kernel_bench", *args], cwd=kernel_dir, env=env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def planted(tmp_path: Path, old: str, new: str) -> Path:
    """A copy of the shipped kernel with one edit (the edit must apply)."""
    assert old in SHIPPED, old
    folder = tmp_path / "planted"
    folder.mkdir(exist_ok=True)
    (folder / "kernel.py").write_text(SHIPPED.replace(old, new, 1))
    return folder


# ---------------------------------------------------------------------------------------------
# without a GPU: one clear line, exit 2, nothing changed
# ---------------------------------------------------------------------------------------------


@no_gpu
@pytest.mark.parametrize("device", [[], ["--device", "cpu"]])
def test_a_night_of_the_kernel_experiment_is_refused_without_a_gpu(
    project_repo: Path, capsys: pytest.CaptureFixture[str], device: list[str]
) -> None:
    before = snapshot(project_repo)
    code = main(
        [
            "run",
            "--tag",
            "k",
            "--experiment",
            "kernel",
            "--agent",
            "search",
            "--max-experiments",
            "1",
            *device,
        ]
    )
    err = capsys.readouterr().err
    assert code == 2, err
    assert (
        err.count("\n") == 1
        and "experiment kernel needs a CUDA GPU" in err
        and "this run's device is cpu" in err
    )
    assert snapshot(project_repo) == before
    assert not (project_repo / "results").exists()


@no_gpu
def test_the_benchmark_itself_refuses_without_a_gpu(tmp_path: Path) -> None:
    proc = bench(EXPERIMENT, interpret=False, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("kernel_bench: needs a CUDA GPU"), (
        proc.stderr
    )


def test_the_devices_key_is_checked(tmp_path: Path) -> None:
    exp = tmp_path / "e"
    exp.mkdir()
    (exp / "k.py").write_text("")
    (exp / "experiment.toml").write_text('mutable = ["k.py"]\nrun = "python k.py"\ndevices = ["tpu"]\n')
    with pytest.raises(ConfigError, match="key 'devices' must be a non-empty list of cuda, mlx, cpu"):
        load_experiment(exp)
    assert load_experiment(EXPERIMENT).devices == ("cuda",)


def test_an_incorrect_marker_is_the_crash_reason(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("gate\n@@autoresearch incorrect ragged tiles: y[0, 256, 1] = 0, want 1.5\n")
    marker = Marker(1.0, "incorrect", "ragged tiles: y[0, 256, 1] = 0, want 1.5")
    result = RunResult(1, False, None, 2.0, log, None, (marker,))
    assert crash_reason(result, None, "gbps") == "incorrect: ragged tiles: y[0, 256, 1] = 0, want 1.5"
    assert crash_reason(RunResult(1, False, None, 2.0, log, None, ()), None, "gbps") != "incorrect"


# ---------------------------------------------------------------------------------------------
# the gate, under Triton's interpreter
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow  # 10-30 s: 22 cases under Triton's interpreter, in a new process
def test_the_shipped_kernel_passes_the_gate_and_reports_its_rate() -> None:
    pytest.importorskip("triton")
    proc = bench(EXPERIMENT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "gate: 22 cases correct" in proc.stdout
    from harness.night.metrics import parse_summary

    summary = parse_summary(proc.stdout)
    assert summary is not None and isinstance(summary["gbps"], float) and summary["gbps"] > 0
    assert summary["gate_cases"] == 22


WRONG_KERNELS = {
    # the last partial tile of tokens is never launched: right on every multiple of 64
    "forgets the ragged tail": (
        "grid = (B * triton.cdiv(T, BLOCK_T), triton.cdiv(C, BLOCK_C))",
        "grid = (B * max(1, T // BLOCK_T), triton.cdiv(C, BLOCK_C))",
    ),
    # reads one token ahead: a look-ahead that trains beautifully and is worthless
    "reads the next token": ("src = t - (K - 1 - k)", "src = t - (K - 1 - k) + 1"),
    # accumulates in bfloat16: faster on some GPUs, off by more than rounding the result once
    "accumulates in bfloat16": (
        "acc += xv.to(tl.float32) * wv.to(tl.float32)[None, :]",
        "acc += (xv.to(tl.bfloat16) * wv.to(tl.bfloat16)[None, :]).to(tl.float32).to(tl.bfloat16).to(tl.float32)",
    ),
    # remembers the answer per input buffer: right on first sight, stale once the buffer changes
    "remembers answers": (
        "def causal_conv1d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:\n",
        "_seen = {}\n\n\ndef causal_conv1d(x, weight, bias):\n"
        "    key = (x.data_ptr(), tuple(x.shape))\n"
        "    if key not in _seen:\n"
        "        _seen[key] = _conv(x, weight, bias)\n"
        "    return _seen[key]\n\n\n"
        "def _conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:\n",
    ),
}


@pytest.mark.slow  # 20-50 s each under Triton's interpreter on a loaded 2-core machine
@pytest.mark.parametrize("bug", list(WRONG_KERNELS))
def test_a_wrong_kernel_is_incorrect(tmp_path: Path, bug: str) -> None:
    pytest.importorskip("triton")
    folder = planted(tmp_path, *WRONG_KERNELS[bug])
    proc = bench(folder)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("@@autoresearch incorrect ")]
    assert len(lines) == 1, proc.stdout[-2000:]
    assert "---" not in proc.stdout.splitlines()  # no summary: nothing to read a metric from
    if bug == "remembers answers":
        assert "after the timing, on new data in a timed buffer" in lines[0]


# ---------------------------------------------------------------------------------------------
# through the night: the gate off keeps a fast wrong kernel, the gate on makes it a crash
# ---------------------------------------------------------------------------------------------

ZEROS = "Description: skip the work\nexperiments/kernel/kernel.py\n<<<<<<< SEARCH\n    B, T, C = x.shape\n    y = torch.empty_like(x)\n=======\n    return torch.zeros_like(x)\n    B, T, C = x.shape\n    y = torch.empty_like(x)\n>>>>>>> REPLACE\n"


@pytest.mark.slow  # four benchmark runs under Triton's interpreter
@pytest.mark.timeout(900)  # several minutes on a loaded shared machine
@pytest.mark.parametrize("gate", ["on", "off"])
def test_a_fast_wrong_kernel_is_a_crash_incorrect_and_kept_with_the_gate_off(
    project_repo: Path, tmp_path: Path, gate: str
) -> None:
    pytest.importorskip("triton")
    toml = project_repo / "experiments" / "kernel" / "experiment.toml"
    text = toml.read_text().replace('devices = ["cuda"]', 'devices = ["cuda", "cpu"]')  # the interpreter
    if gate == "off":
        text = text.replace("prepare.kernel_bench kernel.py", "prepare.kernel_bench --no-gate kernel.py")
    toml.write_text(text)
    git(project_repo, "commit", "-qam", "kernel on the cpu interpreter")
    replies = tmp_path / "replies.jsonl"
    replies.write_text(json.dumps({"reply": ZEROS}) + "\n")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": str(ROOT)}
    argv = [
        sys.executable, "-m", "harness", "run", "--tag", "k", "--experiment", "kernel", "--device", "cpu",
        "--agent", f"replay:{replies}", "--judge", "strict",
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=project_repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = (project_repo / "results" / "k.tsv").read_text().splitlines()
    rows = [dict(zip(lines[0].split("\t"), ln.split("\t"), strict=False)) for ln in lines[1:]]
    assert [r["description"] for r in rows] == ["baseline", "skip the work"], rows
    assert rows[0]["status"] == "keep" and float(rows[0]["gbps"]) > 0
    if gate == "on":
        assert rows[1]["status"] == "crash" and rows[1]["reason"].startswith("incorrect: "), rows[1]
    else:
        assert rows[1]["status"] == "keep" and float(rows[1]["gbps"]) > float(rows[0]["gbps"]), rows[1]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_shipped_kernel_passes_the_gate_on_cuda_and_a_look_ahead_does_not(tmp_path: Path) -> None:
    assert bench(EXPERIMENT, interpret=False).returncode == 0
    proc = bench(planted(tmp_path, *WRONG_KERNELS["reads the next token"]), interpret=False)
    assert proc.returncode == 1 and "@@autoresearch incorrect " in proc.stdout, proc.stdout[-2000:]
