"""A GPU night, measured: how much of a night's wall clock the GPU spends training.

The one script run on the device machine (no network, calls of at most 10 minutes, at most 8
result files). It installs what the machine lacks from local files, builds a text corpus from
the machine's own Python sources, prepares it, starts `autoresearch run --agent search` in the
background on a fresh copy of this repository, samples nvidia-smi every second, and later
reports:

* GPU busy: the share of one-second samples with a kernel running (utilization.gpu > 0) and
  the mean utilisation, from the first run's start to the last run's end, per GPU;
* seconds outside the budget per run (wall clock of the run and its evaluation minus the
  training the harness measured), for the cold first run and for the warm ones;
* GPU idle between runs: from the end of one run's training (its hand-off) to the first batch
  of the next one on the same GPU (the harness's timeline, which every run's log ends with);
* tokens/s (the harness's clock) and MFU (the run's summary), median over runs;
* attempts per hour and per GPU-hour, runs per attempt (confirmations), and the attempts per
  GPU-hour they imply at a 300 s budget.

Verbs (the work folder, default /tmp/gpu_night, carries state from one call to the next):

    python bench/gpu_night.py start [--budget 120] [--experiments 8] [--gpus 0,1] [--hold S] [-- ARGS]
    python bench/gpu_night.py wait [--max 540]     # until the night ends (at most --max s), then collect
    python bench/gpu_night.py collect              # the report now (the night may still run)
    python bench/gpu_night.py stop                 # stop the night (as Ctrl-C would), then collect

`start` installs: every wheel in `.whl/` with `pip install --no-index --find-links .whl`
(optuna and its dependencies, gitpython/gitdb/smmap, rustbpe, tenacity, platformdirs, and for LLM
agents pydantic and genai-prices: whatever the machine's interpreter lacks), falling back to `--target <work>/site` when the interpreter's
environment is read-only; and bubblewrap from `.dev/*.deb` (bubblewrap, libcap2) unpacked with
`dpkg -x` and put on PATH / LD_LIBRARY_PATH when no `bwrap` is installed. Arguments after
`--` go to `autoresearch run` as they are (e.g. `-- --judge strict`).

Results go to $OUT (or --out): report.txt, report.json, results.tsv (every worker's rows),
night.out (the night's output, each line with its epoch time), smi.csv (the samples) and
logs.tar.gz (every run's log): six files. Without nvidia-smi (a CPU smoke run) the report says
so and gives everything else.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tarfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent.parent
TIMING_PREFIX = "[autoresearch] timing "
#: what `autoresearch run --agent search` imports (genai-prices and pydantic only price LLM replies)
NEEDED = ("optuna", "git", "rustbpe", "tenacity", "platformdirs", "filelock", "rich", "tiktoken", "numpy")
NEEDED += ("pyarrow", "torch")
PIP_NAMES = ("optuna", "gitpython", "rustbpe", "tenacity", "platformdirs", "pydantic", "genai-prices")
#: what is never copied into the night's repository
SKIP = {".git", ".whl", ".dev", "results", ".autoresearch", "__pycache__", ".mypy_cache", ".ruff_cache"}


def say(text: str) -> None:
    print(f"[gpu_night {time.strftime('%H:%M:%S')}] {text}", flush=True)


# --- start ---------------------------------------------------------------------------------------


def install(source: Path, work: Path, env: dict[str, str]) -> list[str]:
    """Wheels from .whl/ and bwrap from .dev/*.deb; returns what was done, one line each."""
    done: list[str] = []
    wheels = sorted((source / ".whl").glob("*.whl"))
    if wheels:
        base = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            str(source / ".whl"),
        ]
        have = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
        names = [n for n in PIP_NAMES if n in have]
        r = subprocess.run([*base, *names], capture_output=True, text=True)
        if r.returncode != 0:
            site = work / "site"
            r = subprocess.run(
                [*base, "--no-deps", "--upgrade", "--target", str(site), *map(str, wheels)],
                capture_output=True,
                text=True,
            )
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
            done.append(f"wheels: {len(wheels)} from .whl/ into {site} (the environment is read-only)")
        else:
            done.append(f"wheels: pip install --no-index --find-links .whl {' '.join(names)}")
        if r.returncode != 0:
            done.append(f"wheels FAILED: {r.stderr.strip()[-400:]}")
    else:
        done.append("wheels: no .whl/ folder, using what the interpreter has")
    debs = sorted((source / ".dev").glob("*.deb"))
    if shutil.which("bwrap", path=env.get("PATH")) is None and debs:
        root = work / "dev"
        for deb in debs:
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
        env["PATH"] = f"{root / 'usr/bin'}{os.pathsep}{env.get('PATH', '')}"
        libs = [str(root / d) for d in ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu", "usr/lib64")]
        env["LD_LIBRARY_PATH"] = os.pathsep.join([*libs, *filter(None, [env.get("LD_LIBRARY_PATH")])])
        done.append(f"bwrap: {len(debs)} .deb unpacked into {root}")
    else:
        found = shutil.which("bwrap", path=env.get("PATH"))
        done.append(f"bwrap: {found or 'none (the night runs without the sandbox and says so)'}")
    return done


def missing_modules(env: dict[str, str]) -> list[str]:
    # imported, not just found: a package whose own dependency is missing fails here, not mid-night
    code = (
        "import importlib, sys\n"
        "for m in sys.argv[1:]:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as exc:\n"
        "        print(f'{m}({type(exc).__name__}:{exc})'.replace(' ', '_'))\n"
    )
    r = subprocess.run([sys.executable, "-c", code, *NEEDED], env=env, capture_output=True, text=True)
    return r.stdout.split()


def build_corpus(out_dir: Path, limit_chars: int) -> str:
    """`.txt` files of the interpreter's installed Python sources (text:PATH reads .txt), in a
    fixed order so that two machines with the same packages build the same corpus."""
    out_dir.mkdir(parents=True, exist_ok=True)
    root = sysconfig.get_paths()["purelib"]
    total = n = size = 0
    chunk: list[str] = []

    def flush() -> None:
        nonlocal n, chunk, size
        if chunk:
            (out_dir / f"py_{n:03d}.txt").write_text("".join(chunk), encoding="utf-8")
            n, chunk, size = n + 1, [], 0

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".py") or total > limit_chars:
                continue
            try:
                text = Path(dirpath, name).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            chunk.append(text + "\n\n")
            total += len(text)
            size += len(text)
            if size > 25_000_000:
                flush()
        if total > limit_chars:
            break
    flush()
    return f"corpus: {total / 1e6:.1f} M characters of Python from {root} in {n} files"


def corpus(args: argparse.Namespace) -> int:
    """The corpus alone, into --out (the other device scripts build theirs with this verb)."""
    print(build_corpus(args.out, int(args.corpus_mb * 1e6)))
    return 0


def copy_repo(source: Path, dest: Path) -> None:
    """A fresh git repository holding this repository's files (the night commits in it)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(
        source, dest, ignore=lambda _d, names: [n for n in names if n in SKIP or n.endswith(".pyc")]
    )
    git = ["git", "-c", "user.name=gpu-night", "-c", "user.email=gpu-night@localhost"]
    for argv in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["commit", "-q", "--no-verify", "-m", "gpu night"],
    ):
        subprocess.run([*git, *argv], cwd=dest, check=True)


def start(args: argparse.Namespace) -> int:
    work: Path = args.work
    if (work / "night.pid").exists() and not (work / "night.json").exists():
        print(f"a night is already running in {work} (stop it first)", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("night.pid", "night.json", "night.out", "smi.csv"):
        (work / stale).unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    steps = install(args.source, work, env)
    for line in steps:
        say(line)
    if shutil.which("git", path=env.get("PATH")) is None:
        print("no git executable on PATH (the night commits every attempt)", file=sys.stderr)
        return 2
    missing = missing_modules(env)
    if missing:
        print(f"missing modules: {' '.join(missing)} (carry their wheels in .whl/)", file=sys.stderr)
        return 2
    corpus, cache, repo = work / "corpus", work / "cache", work / "repo"
    t = time.monotonic()
    if not any(corpus.glob("*.txt")):
        steps.append(build_corpus(corpus, int(args.corpus_mb * 1e6)))
        say(steps[-1])
    dataset = f"text:{corpus}"
    prep = [sys.executable, "-m", "prepare", "--dataset", dataset, "--cache-dir", str(cache), "--no-progress"]
    prep += ["--max-chars", str(args.max_chars)]
    r = subprocess.run(prep, cwd=args.source, env={**env, "PYTHONPATH": _pythonpath(args.source, env)})
    if r.returncode != 0:
        print(f"prepare failed (exit {r.returncode})", file=sys.stderr)
        return 2
    steps.append(f"corpus + prepare: {time.monotonic() - t:.0f} s")
    say(steps[-1])
    copy_repo(args.source, repo)
    night = [sys.executable, "-m", "harness", "run", "--tag", args.tag, "--agent", "search"]
    night += ["--experiment", args.experiment, "--device", args.device, "--budget", f"{args.budget:g}"]
    night += ["--max-experiments", str(args.experiments), "--dataset", dataset, "--cache-dir", str(cache)]
    if args.gpus:
        night += ["--gpus", args.gpus]
    night += args.rest
    env["PYTHONPATH"] = _pythonpath(repo, env)
    (work / "setup.json").write_text(
        json.dumps(
            {"argv": night, "steps": steps, "gpus": args.gpus, "budget": args.budget, "device": args.device}
        )
    )
    gpus = args.gpus or "0"
    supervisor = [
        sys.executable,
        str(Path(__file__).resolve()),
        "_night",
        "--work",
        str(work),
        "--gpus",
        gpus,
    ]
    with open(work / "supervisor.err", "wb") as err:
        proc = subprocess.Popen(
            [*supervisor, "--", *night],
            cwd=repo,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    (work / "night.pid").write_text(str(proc.pid))
    say(f"night started (pid {proc.pid}): {' '.join(night)}")
    while time.monotonic() - t0 < args.hold and proc.poll() is None:
        time.sleep(2)
    return 0


def _pythonpath(first: Path, env: dict[str, str]) -> str:
    return os.pathsep.join(p for p in (str(first), env.get("PYTHONPATH", "")) if p)


# --- the background supervisor -------------------------------------------------------------------


def sample_gpus(out: Path, stop: threading.Event) -> str:
    """nvidia-smi every second into `out` (epoch, index, utilization %, memory MiB) until `stop`."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        out.write_text("")
        return "nvidia-smi not found: GPU busy % is not measured"
    query = [exe, "--query-gpu=index,utilization.gpu,memory.used", "--format=csv,noheader,nounits"]
    with open(out, "w", encoding="utf-8") as fh:
        while not stop.is_set():
            t = time.time()
            r = subprocess.run(query, capture_output=True, text=True)
            for line in r.stdout.splitlines():
                fh.write(f"{t:.3f},{line.replace(' ', '')}\n")
            fh.flush()
            stop.wait(max(0.0, 1.0 - (time.time() - t)))
    return f"nvidia-smi sampled every second ({exe})"


def supervise(args: argparse.Namespace) -> int:
    """Runs the night, stamps each of its lines with the epoch time, samples the GPUs meanwhile."""
    work: Path = args.work
    stop = threading.Event()
    note: list[str] = []
    sampler = threading.Thread(target=lambda: note.append(sample_gpus(work / "smi.csv", stop)), daemon=True)
    sampler.start()
    started = time.time()
    # A job started in the background by a non-interactive shell ignores SIGINT, and the night
    # would inherit that: it gets SIGINT's default back, and `stop` sends SIGTERM, which the
    # harness turns into the same clean stop as Ctrl-C.
    proc = subprocess.Popen(
        args.rest,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: proc.send_signal(signal.SIGTERM))
    assert proc.stdout is not None
    with open(work / "night.out", "w", encoding="utf-8") as out:
        for raw in proc.stdout:
            out.write(f"{time.time():.3f} {raw.decode('utf-8', 'replace').rstrip()}\n")
            out.flush()
    rc = proc.wait()
    stop.set()
    sampler.join(timeout=5)
    (work / "night.json").write_text(
        json.dumps({"start": started, "end": time.time(), "rc": rc, "smi": note})
    )
    return 0


# --- collect --------------------------------------------------------------------------------------


def timings(logs: list[Path]) -> list[dict[str, Any]]:
    """Each run's timeline (the last timing line of its log), with its worker and log name."""
    runs = []
    for log in logs:
        found = None
        with open(log, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith(TIMING_PREFIX):
                    found = json.loads(line[len(TIMING_PREFIX) :])
        if found is not None:
            found |= {"worker": log.parent.parent.name, "log": log.name, "warmup": ".warmup." in log.name}
            runs.append(found)
    runs.sort(key=lambda r: r["start"])
    for worker in {r["worker"] for r in runs}:
        own = [r for r in runs if r["worker"] == worker]
        for a, b in zip(own, own[1:], strict=False):
            a["next_start"] = b["start"]
    return runs


def breakdown(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Where a run's time outside the budget goes (medians over `runs`): start-up (start to the
    first batch: interpreter, imports, tokenizer, data, model build), after training (hand-off to
    the end of the process: export of the model, exit), evaluation (the evaluator process), and
    the harness's own gap before the next run of the same worker starts (judge, git, proposal)."""
    parts: dict[str, list[float]] = {
        "startup": [],
        "hand_off_to_exit": [],
        "evaluation": [],
        "harness_gap": [],
    }
    for run in runs:
        if run.get("first_batch") is not None:
            parts["startup"].append(float(run["first_batch"]))
        if run.get("hand_off") is not None:
            parts["hand_off_to_exit"].append(float(run["run_end"]) - float(run["hand_off"]))
        parts["evaluation"].append(float(run["end"]) - float(run["run_end"]))
        if run.get("next_start") is not None:
            parts["harness_gap"].append(float(run["next_start"]) - (run["start"] + float(run["end"])))
    return {k: (round(statistics.median(v), 2) if v else None) for k, v in parts.items()}


def _training(run: dict[str, Any]) -> float | None:
    if run.get("first_batch") is None or run.get("hand_off") is None:
        return None
    return float(run["hand_off"]) - float(run["first_batch"])


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def analyse(work: Path) -> dict[str, Any]:
    setup = json.loads((work / "setup.json").read_text()) if (work / "setup.json").exists() else {}
    night = json.loads((work / "night.json").read_text()) if (work / "night.json").exists() else {}
    results = work / "repo" / "results"
    runs = timings(sorted(results.glob("*/runs/*.log")))
    rows: list[dict[str, str]] = []
    for tsv in sorted(results.glob("*.tsv")):
        with open(tsv, encoding="utf-8") as fh:
            rows += [dict(r, tag=tsv.stem) for r in csv.DictReader(fh, delimiter="\t")]
    report: dict[str, Any] = {"setup": setup, "finished": bool(night), "rc": night.get("rc")}
    # outside the budget: cold = each worker's first run (its warm-up run on cuda), warm = the rest
    cold, warm = [], []
    first_of: dict[str, float] = {}
    for run in runs:
        trained = _training(run)
        if trained is None:
            continue
        outside = float(run["end"]) - trained
        (warm if run["worker"] in first_of else cold).append(outside)
        first_of.setdefault(run["worker"], run["start"])
    report["outside_cold_s"] = [round(v, 1) for v in cold]
    report["outside_warm_median_s"] = _median(warm)
    report["outside_warm_max_s"] = max(warm) if warm else None
    # the GPU's idle gap between runs of one worker: hand-off of one to the first batch of the next
    gaps = []
    for worker in {r["worker"] for r in runs}:
        own = [r for r in runs if r["worker"] == worker and r.get("first_batch") is not None]
        for a, b in zip(own, own[1:], strict=False):
            if a.get("hand_off") is not None:
                gaps.append(b["start"] + b["first_batch"] - (a["start"] + a["hand_off"]))
    report["idle_between_runs_median_s"] = _median(gaps)
    report["runs_timed"] = len(runs)
    report["breakdown_warm_median_s"] = breakdown(
        [r for r in runs if r["worker"] in first_of and not r["warmup"]]
    )
    report["breakdown_cold_s"] = breakdown([next(r for r in runs if r["worker"] == w) for w in first_of])
    tok = [float(v) for r in rows for v in r.get("tokens_per_s", "").split(",") if v.strip()]
    mfu = []
    for r in rows:
        summary = json.loads(r["summary"]) if r.get("summary") else {}
        if isinstance(summary.get("mfu_percent"), (int, float)):
            mfu.append(float(summary["mfu_percent"]))
    report["tokens_per_s_median"] = _median(tok)
    report["mfu_percent_median"] = _median(mfu)
    # attempts and runs per hour, over the night's wall clock (or until now while it runs)
    start = night.get("start") or (min(r["start"] for r in runs) if runs else None)
    end = night.get("end") or time.time()
    n_gpus = max(1, len([g for g in str(setup.get("gpus") or "0").split(",") if g]))
    attempts = [r for r in rows if r.get("description") != "baseline"]
    n_runs = sum(len([v for v in r.get("runs", "").split(",") if v.strip()]) or 1 for r in rows)
    report["rows"], report["attempts"], report["runs"] = len(rows), len(attempts), n_runs
    statuses: dict[str, int] = {}
    for r in rows:
        key = r["status"] + (f" ({r['reason']})" if r.get("reason") == "pruned" else "")
        statuses[key] = statuses.get(key, 0) + 1
    report["statuses"] = statuses
    if start:
        hours = (end - start) / 3600
        report["night_minutes"] = round(hours * 60, 1)
        report["attempts_per_hour"] = len(rows) / hours if hours > 0 else None
        report["attempts_per_gpu_hour"] = len(rows) / hours / n_gpus if hours > 0 else None
    runs_per_attempt = n_runs / len(rows) if rows else None
    report["runs_per_attempt"] = runs_per_attempt
    if runs_per_attempt and report["outside_warm_median_s"] is not None:
        per_run = 300 + report["outside_warm_median_s"]
        report["derived_attempts_per_gpu_hour_at_300s"] = 3600 / (per_run * runs_per_attempt)
    report["gpu"] = gpu_busy(work / "smi.csv", runs, setup.get("gpus"), night.get("smi") or [])
    # the GPU's idle seconds per run stay what they are at a longer budget: project the busy share
    budget = float(setup.get("budget") or 0)
    outside = report["outside_warm_median_s"]
    for key, value in report["gpu"].items():
        if key.startswith("gpu") and isinstance(value, dict) and outside is not None and budget > 0:
            idle = (1 - value["busy_percent"] / 100) * (budget + outside)
            value["projected_busy_percent_at_300s"] = round(100 * (1 - idle / (300 + outside)), 1)
    return report


def gpu_busy(smi: Path, runs: list[dict[str, Any]], gpus: str | None, note: list[str]) -> dict[str, Any]:
    """Per GPU: the share of samples with utilization > 0 and the mean utilization, between the
    first run's start and the last run's end."""
    text = smi.read_text() if smi.exists() else ""
    if not text.strip():
        return {"measured": False, "note": (note or ["nvidia-smi not found: GPU busy % is not measured"])[0]}
    if not runs:
        return {"measured": False, "note": "no run has ended yet"}
    lo = min(r["start"] for r in runs)
    hi = max(r["start"] + r["end"] for r in runs)
    wanted = {int(g) for g in (gpus or "0").split(",") if g}
    util: dict[int, list[float]] = {}
    for line in text.splitlines():
        t, index, used, *_ = line.split(",")
        if lo <= float(t) <= hi and int(index) in wanted:
            util.setdefault(int(index), []).append(float(used))
    out: dict[str, Any] = {"measured": True, "window_s": round(hi - lo, 1)}
    for index, values in sorted(util.items()):
        out[f"gpu{index}"] = {
            "busy_percent": round(100 * sum(v > 0 for v in values) / len(values), 1),
            "mean_util_percent": round(statistics.fmean(values), 1),
            "samples": len(values),
        }
    return out


def render(report: dict[str, Any]) -> str:
    def num(v: Any, fmt: str = "{:.1f}") -> str:
        return "n/a" if v is None else fmt.format(v)

    setup = report.get("setup", {})
    lines = [
        f"gpu night: {' '.join(setup.get('argv', [])[2:])}",
        f"finished: {report['finished']} (rc {report.get('rc')}), {report.get('night_minutes', 'n/a')} minutes",
        *(f"setup: {s}" for s in setup.get("steps", [])),
        f"rows {report['rows']}, attempts {report['attempts']}, runs {report['runs']}, statuses {report['statuses']}",
        f"attempts/hour {num(report.get('attempts_per_hour'))}, per GPU-hour {num(report.get('attempts_per_gpu_hour'))}, "
        f"runs/attempt {num(report.get('runs_per_attempt'), '{:.2f}')}, "
        f"derived attempts/GPU-hour at 300 s {num(report.get('derived_attempts_per_gpu_hour_at_300s'))}",
        f"outside the budget: cold {report['outside_cold_s']} s, warm median "
        f"{num(report['outside_warm_median_s'])} s (max {num(report['outside_warm_max_s'])})",
        f"GPU idle between runs (hand-off -> next first batch): median {num(report['idle_between_runs_median_s'])} s",
        f"tokens/s median {num(report['tokens_per_s_median'], '{:,.0f}')}, MFU median "
        f"{num(report['mfu_percent_median'])} %",
        "outside the budget, warm (median s): "
        + ", ".join(f"{k} {num(v, '{:.2f}')}" for k, v in report["breakdown_warm_median_s"].items()),
        "outside the budget, cold (s): "
        + ", ".join(f"{k} {num(v, '{:.2f}')}" for k, v in report["breakdown_cold_s"].items()),
    ]
    gpu = report["gpu"]
    if not gpu.get("measured"):
        lines.append(f"GPU busy: not measured ({gpu['note']})")
    else:
        for key, v in gpu.items():
            if key.startswith("gpu"):
                lines.append(
                    f"GPU busy {key}: {v['busy_percent']} % of {v['samples']} samples, mean util "
                    f"{v['mean_util_percent']} %, projected at a 300 s budget "
                    f"{v.get('projected_busy_percent_at_300s', 'n/a')} %"
                )
    return "\n".join(lines)


def collect(args: argparse.Namespace) -> int:
    work: Path = args.work
    if not (work / "setup.json").exists():
        print(f"no night in {work}: run `start` first", file=sys.stderr)
        return 2
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    report = analyse(work)
    text = render(report)
    (out / "report.txt").write_text(text + "\n")
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    results = work / "repo" / "results"
    with open(out / "results.tsv", "w", encoding="utf-8") as fh:
        for tsv in sorted(results.glob("*.tsv")):
            fh.write(f"# {tsv.name}\n{tsv.read_text()}")
    for name in ("night.out", "smi.csv"):
        if (work / name).exists():
            shutil.copy(work / name, out / name)
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for log in sorted(glob.glob(str(results / "*/runs/*.log"))):
            tar.add(log, arcname=str(Path(log).relative_to(results)))
        if (work / "supervisor.err").exists():
            tar.add(work / "supervisor.err", arcname="supervisor.err")
    print(text)
    return 0


def wait(args: argparse.Namespace) -> int:
    end = time.monotonic() + args.max
    while time.monotonic() < end and not (args.work / "night.json").exists():
        time.sleep(2)
    return collect(args)


def stop(args: argparse.Namespace) -> int:
    pid_file = args.work / "night.pid"
    if pid_file.exists() and not (args.work / "night.json").exists():
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
        end = time.monotonic() + 60
        while time.monotonic() < end and not (args.work / "night.json").exists():
            time.sleep(1)
    return collect(args)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    rest: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, rest = argv[:i], argv[i + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("verb", choices=("start", "wait", "collect", "stop", "corpus", "_night"))
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu_night"))
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu_night_out")))
    parser.add_argument(
        "--source", type=Path, default=HERE, help="the repository to copy (default: this one)"
    )
    parser.add_argument("--experiment", default="gpt")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--budget", type=float, default=120.0)
    parser.add_argument("--experiments", type=int, default=8, help="--max-experiments of the night")
    parser.add_argument("--gpus", default="", help="e.g. 0,1: one worker per GPU")
    parser.add_argument("--tag", default="gpunight")
    parser.add_argument(
        "--corpus-mb", type=float, default=250.0, help="characters of Python source, millions"
    )
    parser.add_argument("--max-chars", type=int, default=50_000_000, help="prepare's --max-chars")
    parser.add_argument("--hold", type=float, default=0.0, help="start: return only after this many seconds")
    parser.add_argument("--max", type=float, default=540.0, help="wait: at most this many seconds")
    args = parser.parse_args(argv)
    args.rest = rest
    verbs = {
        "start": start,
        "wait": wait,
        "collect": collect,
        "stop": stop,
        "corpus": corpus,
        "_night": supervise,
    }
    return verbs[args.verb](args)


if __name__ == "__main__":
    sys.exit(main())
