"""bench/gpu_night.py's CPU path: a real (tiny) night started in the background, then collected.

The experiment is a stand-in train file that prints the marker lines, progress lines and a
summary: the script under test is the benchmark's plumbing (install step, corpus, prepare,
background night, sampler, report), not the GPT. Without nvidia-smi the report must say so and
still give the timing figures, which come from the harness's timeline in every run's log.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "bench" / "gpu_night.py"

TRAIN = """\
import time
LR = 0.01
WIDTH = 64
print("@@autoresearch first-batch", flush=True)
t0 = time.time()
budget = 0.6
step = 0
while time.time() - t0 < budget:
    step += 1
    pct = 100 * (time.time() - t0) / budget
    print(f"step {step:05d} ({pct:.1f}%) | loss: {3.0 - pct / 100:.4f}", flush=True)
    time.sleep(0.1)
print(f"@@autoresearch hand-off tokens={step * 1000}", flush=True)
print("---")
print(f"val_bpb: {1.0 + abs(LR - 0.02) + WIDTH * 1e-5:.6f}")
print("mfu_percent: 12.5")
print(f"num_steps: {step}")
"""

TOML = """\
name = "tiny"
mutable = ["train.py"]
run = "python train.py"
metric = "val_bpb"
direction = "minimize"
"""


def _source(tmp: Path) -> Path:
    src = tmp / "src"
    for name in ("harness", "prepare", "constants.py", "pyproject.toml", "program.md"):
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (src).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, src / name)
    (src / "experiments" / "tiny").mkdir(parents=True)
    (src / "experiments" / "tiny" / "train.py").write_text(TRAIN)
    (src / "experiments" / "tiny" / "experiment.toml").write_text(TOML)
    return src


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=240
    )


def test_a_cpu_night_is_started_in_the_background_and_reported(tmp_path: Path) -> None:
    src, work, out = _source(tmp_path), tmp_path / "work", tmp_path / "out"
    # no nvidia-smi on this PATH (the interpreter's folder and the system's tools only)
    path = os.pathsep.join([str(Path(sys.executable).parent), "/usr/bin", "/bin"])
    assert shutil.which("nvidia-smi", path=path) is None
    env = {**os.environ, "PATH": path, "OUT": str(out)}
    common = ["--work", str(work), "--source", str(src)]
    started = _run(
        "start", *common, "--experiment", "tiny", "--device", "cpu", "--budget", "1",
        "--experiments", "2", "--corpus-mb", "0.3", "--max-chars", "300000",
        "--", "--judge", "strict", "--sandbox", "off", env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr + started.stdout
    assert "night started" in started.stdout
    assert "wheels: no .whl/ folder" in started.stdout
    assert list((work / "corpus").glob("py_*.txt")), "the corpus was built"

    waited = _run("wait", *common, "--max", "200", env=env)
    assert waited.returncode == 0, waited.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["finished"] and report["rc"] == 0, (work / "night.out").read_text()
    assert report["rows"] == 3  # the baseline and two attempts
    assert report["gpu"] == {"measured": False, "note": "nvidia-smi not found: GPU busy % is not measured"}
    assert "GPU busy: not measured (nvidia-smi not found" in waited.stdout
    # one cold run (the first), the others warm; each spent its 0.6 s training and some start-up
    assert len(report["outside_cold_s"]) == 1 and report["outside_cold_s"][0] > 0
    assert report["outside_warm_median_s"] is not None and report["outside_warm_median_s"] > 0
    assert report["idle_between_runs_median_s"] is not None and report["idle_between_runs_median_s"] > 0
    assert report["tokens_per_s_median"] > 0 and report["mfu_percent_median"] == 12.5
    assert report["attempts_per_hour"] > 0 and report["runs_per_attempt"] == 1.0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["logs.tar.gz", "night.out", "report.json", "report.txt", "results.tsv", "smi.csv"]
    # every line of the night's output carries its epoch time
    first = (out / "night.out").read_text().splitlines()[0]
    assert float(first.split(" ", 1)[0]) > 1e9


def test_collect_without_a_night_is_one_line_and_exit_2(tmp_path: Path) -> None:
    r = _run(
        "collect", "--work", str(tmp_path / "none"), "--out", str(tmp_path / "out"), env=dict(os.environ)
    )
    assert r.returncode == 2 and r.stderr.strip().startswith("no night in")
    assert not (tmp_path / "out").exists()


def _load_script():  # the bench script as a module (bench/ is not a package)
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_night", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_report_arithmetic_on_a_made_up_night(tmp_path: Path) -> None:
    """Two runs 100 s apart on one GPU: cold and warm outside seconds, the idle gap, the breakdown,
    GPU busy from the samples in the runs' window, and its projection at 300 s."""
    g = _load_script()
    work = tmp_path / "work"
    runs = work / "repo" / "results" / "t" / "runs"
    runs.mkdir(parents=True)
    (work / "setup.json").write_text(json.dumps({"argv": ["py", "-m", "harness"], "gpus": "", "budget": 60}))
    (work / "night.json").write_text(json.dumps({"start": 1000.0, "end": 1200.0, "rc": 0, "smi": []}))
    timing = (
        g.TIMING_PREFIX + '{{"start": {}, "first_batch": {}, "hand_off": {}, "run_end": {}, "end": {}}}\n'
    )
    (runs / "0.warmup.log").write_text("step\n" + timing.format(1000.0, 10.0, 70.0, 75.0, 85.0))
    (runs / "0.log").write_text(timing.format(1100.0, 5.0, 65.0, 67.0, 75.0))
    header = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\tn\truns\ttokens_per_s\tsummary\treason\n"
    row = 'abc\t1.0\t1.0\tkeep\tbaseline\t0\t1.0\t1000000\t{"mfu_percent":40.0}\t\n'
    (work / "repo" / "results" / "t.tsv").write_text(header + row)
    # busy (util > 0) in 150 of the 175 samples from 1000 to 1175 (the first start to the last end)
    smi = [f"{1000 + i}.0,0,{0 if 85 <= i < 110 else 90},1000" for i in range(0, 200)]
    (work / "smi.csv").write_text("\n".join(smi) + "\n")
    r = g.analyse(work)
    assert r["outside_cold_s"] == [25.0]  # 85 s of wall, 60 s of training
    assert r["outside_warm_median_s"] == 15.0  # 75 - 60
    assert r["idle_between_runs_median_s"] == 1105.0 - 1070.0
    assert r["breakdown_cold_s"] == {
        "startup": 10.0,
        "hand_off_to_exit": 5.0,
        "evaluation": 10.0,
        "harness_gap": 15.0,
    }
    assert (
        r["breakdown_warm_median_s"]["startup"] == 5.0 and r["breakdown_warm_median_s"]["harness_gap"] is None
    )
    assert r["tokens_per_s_median"] == 1e6 and r["mfu_percent_median"] == 40.0
    assert r["attempts_per_hour"] == pytest.approx(1 / (200 / 3600))
    gpu = r["gpu"]["gpu0"]
    assert gpu["samples"] == 176 and gpu["busy_percent"] == round(100 * 151 / 176, 1)
    idle = (1 - gpu["busy_percent"] / 100) * 75
    assert gpu["projected_busy_percent_at_300s"] == round(100 * (1 - idle / 315), 1)


def test_the_sampler_reads_nvidia_smi_every_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g = _load_script()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, 42, 1000'\necho '1, 0, 10'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    stop = threading.Event()
    timer = threading.Timer(2.5, stop.set)
    timer.start()
    note = g.sample_gpus(tmp_path / "smi.csv", stop)
    lines = (tmp_path / "smi.csv").read_text().splitlines()
    assert note.startswith("nvidia-smi sampled every second") and 4 <= len(lines) <= 8
    assert lines[0].split(",")[1:] == ["0", "42", "1000"] and lines[1].split(",")[1:] == ["1", "0", "10"]


@pytest.mark.slow  # two background nights' worth of start-up on a 2-core machine
def test_stop_ends_a_running_night_cleanly_and_reports(tmp_path: Path) -> None:
    src, work, out = _source(tmp_path), tmp_path / "work", tmp_path / "out"
    (src / "experiments" / "tiny" / "train.py").write_text(TRAIN.replace("budget = 0.6", "budget = 2.0"))
    env = {**os.environ, "OUT": str(out)}
    common = ["--work", str(work), "--source", str(src)]
    started = _run(
        "start", *common, "--experiment", "tiny", "--device", "cpu", "--budget", "3", "--experiments", "100",
        "--corpus-mb", "0.3", "--max-chars", "300000", "--hold", "8", "--", "--judge", "strict", "--sandbox", "off",
        env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    assert not (work / "night.json").exists(), "the night still runs after --hold"
    deadline = time.monotonic() + 90  # past the harness's start-up (a loaded CI machine is slow)
    night_out = work / "night.out"
    while time.monotonic() < deadline and not (night_out.exists() and "#1 start" in night_out.read_text()):
        time.sleep(0.5)
    stopped = _run("stop", *common, env=env)
    assert stopped.returncode == 0, stopped.stderr
    report = json.loads((out / "report.json").read_text())
    assert (
        report["finished"] and report["rc"] == 130
    )  # the harness's Ctrl-C exit: the attempt in flight logged
    assert "interrupted" in (work / "night.out").read_text()
