"""`autoresearch run`: resolve the settings, build the agent, prepare data, run the night, publish.

A night that ends normally is published again when its branch tracks a remote (a first manual
`autoresearch publish` sets that up).

With `--gpus 0,1,...` this process becomes a supervisor: it starts one worker per GPU
(`autoresearch run ... --tag <tag>-gpu<i>` with CUDA_VISIBLE_DEVICES=<i>), each on its own
branch and TSV, prefixes their output with `[gpu<i>]`, forwards Ctrl-C, and returns the
worst exit code. Each worker is an ordinary single-GPU harness, so `--resume` and `status`
work per worker tag.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from types import FrameType
from typing import IO

from harness import settings as config
from harness.agents import create_agent
from harness.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tag", required=True, help="name of this night: branch autoresearch/<tag>, results/<tag>.tsv"
    )
    p.add_argument(
        "--experiment", help="a name under experiments/ or a path to a folder with experiment.toml"
    )
    p.add_argument("--dataset", help="arithmetic, climbmix or text:PATH (default: climbmix if prepared)")
    p.add_argument("--device", default="auto", choices=["auto", *config.DEVICES])
    p.add_argument("--agent", default="auto", help="auto, claude, openai, search or replay:FILE")
    p.add_argument("--model", help="the LLM to ask (default: the agent's own)")
    p.add_argument("--budget", type=float, metavar="SECONDS", help="training seconds per run (recorded)")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="hard kill of a run after this long")
    p.add_argument("--max-experiments", type=int, metavar="N", help="stop after N attempts past the baseline")
    p.add_argument("--max-cost", type=float, metavar="USD", help="stop once the LLM calls cost this much")
    p.add_argument("--resume", action="store_true", help="continue an existing tag")
    p.add_argument("--gpus", metavar="LIST", help="one worker per GPU, e.g. 0,1,2,3 (tags <tag>-gpu<i>)")
    p.add_argument(
        "--cache-dir", metavar="DIR", help="cache root (default $AUTORESEARCH_CACHE or ~/.cache/autoresearch)"
    )
    p.add_argument(
        "--judge", default="noise", choices=["noise", "strict"],
        help="noise: keep only gains that stand out from run-to-run noise (default); strict: any gain",
    )  # fmt: skip
    p.add_argument(
        "--baseline-runs", type=int, metavar="N", help="runs of the baseline (default: noise 3, strict 1)"
    )
    p.add_argument("--worker", default="", help=argparse.SUPPRESS)


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> Settings:
    return config.resolve(
        tag=args.tag,
        experiment=args.experiment,
        dataset=args.dataset,
        device=args.device,
        agent=args.agent,
        model=args.model,
        budget=args.budget,
        timeout=args.timeout,
        max_experiments=args.max_experiments,
        max_cost=args.max_cost,
        resume=args.resume,
        gpus=args.gpus,
        worker=args.worker,
        cache_dir=args.cache_dir,
        judge=args.judge,
        baseline_runs=args.baseline_runs,
        env=env,
    )


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if settings.gpus and not settings.worker:
        return run_workers(settings, args)
    # Validate everything that can be bad input before anything is written.
    agent = create_agent(settings.agent, settings=settings)
    print("autoresearch run", flush=True)
    for line in settings.describe():
        print(f"  {line}", flush=True)
    built = config.ensure_dataset(settings)
    if built:
        print(built, flush=True)
    from harness.night.loop import Night
    from harness.review.publish import publish_if_upstream

    _sigterm_is_interrupt()
    code = Night(settings, agent).run()
    if code == 0:
        publish_if_upstream(settings.repo_root, settings.tag)  # only if the branch tracks a remote
    return code


def _sigterm_is_interrupt() -> None:
    # `kill <pid>` / tmux kill-session: stop like Ctrl-C, so the attempt in flight gets its row.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def worker_argv(args: argparse.Namespace, gpu: int) -> list[str]:
    """The command line of the worker for one GPU: the same flags, its own tag."""
    argv = [
        sys.executable,
        "-m",
        "harness.commands.main",
        "run",
        "--tag",
        f"{args.tag}-gpu{gpu}",
        "--worker",
        f"gpu{gpu}",
    ]
    argv += ["--device", "cuda" if args.device == "auto" else args.device]
    for flag in (
        "experiment",
        "dataset",
        "agent",
        "model",
        "budget",
        "timeout",
        "max_experiments",
        "max_cost",
        "cache_dir",
        "judge",
        "baseline_runs",
    ):
        value = getattr(args, flag)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    if args.resume:
        argv.append("--resume")
    return argv


def run_workers(settings: Settings, args: argparse.Namespace) -> int:
    print(
        f"autoresearch run: {len(settings.gpus)} workers, tags "
        + ", ".join(f"{settings.tag}-gpu{g}" for g in settings.gpus)
    )
    procs: list[tuple[int, subprocess.Popen[str]]] = []
    threads: list[threading.Thread] = []
    for gpu in settings.gpus:
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
        proc = subprocess.Popen(
            worker_argv(args, gpu), env=env, cwd=os.getcwd(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
        )  # fmt: skip
        procs.append((gpu, proc))
        assert proc.stdout is not None
        t = threading.Thread(target=_relay, args=(f"[gpu{gpu}] ", proc.stdout), daemon=True)
        t.start()
        threads.append(t)
    try:
        codes = [proc.wait() for _, proc in procs]
    except KeyboardInterrupt:
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = [proc.wait() for _, proc in procs]
    for t in threads:
        t.join(timeout=5)
    return max(codes) if codes else 0


def _relay(prefix: str, stream: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()
