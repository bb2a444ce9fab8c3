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
from pathlib import Path

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
