"""`--gpus 0,1,...`: one worker process per GPU of this host, one family, no Ray.

The supervisor (this process) starts `autoresearch run ... --tag <tag>-gpu<i> --worker gpu<i>
--family <tag>` with CUDA_VISIBLE_DEVICES=<i> for each GPU, prefixes their output with
`[gpu<i>]`, forwards Ctrl-C and SIGTERM, and returns the worst exit code. The workers share the
family's ledger in results/<tag>.tsv and results/<tag>/ (`harness.store.family`): every row
lands in the merged TSV too, a change one GPU runs is not run by another, and a worker behind
the family's best adopts it. When a worker ends without logging the attempt it had in flight
(killed, out of memory), the supervisor logs it `interrupted` and frees its claims; the others
go on. `--resume` resumes every worker's tag.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import IO

from harness.errors import ConfigError, RepoError
from harness.options import OPTIONS
from harness.settings import Settings
from harness.store.family import Coordinator, worker_tag


def worker_argv(
    args: argparse.Namespace, worker: str, family: str, coordinator: str = "", python: str = sys.executable
) -> list[str]:
    """The command line of one worker: every flag given, its own tag and name, the family it
    joins (and, on Ray, the address of its coordinator), on CUDA unless a device was given.

    The AUTORESEARCH_* variables reach the worker through its inherited environment."""
    own: dict[str, object] = {
        "tag": worker_tag(family, worker), "worker": worker, "family": family,
        "coordinator": coordinator or None, "gpus": None, "ray": None,
    }  # fmt: skip
    if args.device in (None, "auto"):
        own["device"] = "cuda"
    argv = [python, "-m", "harness.commands.main", "run"]
    for opt in OPTIONS:
        if opt.flag is None:
            continue
        value = own[opt.dest] if opt.dest in own else getattr(args, opt.dest)
        if value is True:
            argv.append(opt.flag)
        elif value not in (None, False):
            argv += [opt.flag, str(value)]
    return argv


def check_family(settings: Settings) -> None:
    """Bad input before any worker starts: a family that exists without --resume, or --resume of none."""
    paths = settings.paths
    if not settings.resume and paths.recorded():
        raise RepoError(
            f"tag {settings.tag!r} already exists ({paths.tsv}); continue it with --resume or pick another --tag"
        )
    if settings.resume and not paths.tsv.exists():
        raise ConfigError(f"tag {settings.tag!r} has no results to resume ({paths.tsv} is missing)")


def run_local(settings: Settings, args: argparse.Namespace) -> int:
    check_family(settings)
    workers = [f"gpu{g}" for g in settings.gpus]
    print(
        f"autoresearch run: {len(workers)} workers, tags "
        + ", ".join(worker_tag(settings.tag, w) for w in workers)
        + f"; the family's ledger is {settings.paths.tsv}",
        flush=True,
    )
    coordinator = Coordinator(settings.repo_root, settings.tag, settings.metric, settings.direction)
    procs: list[tuple[str, subprocess.Popen[str]]] = []
    threads: list[threading.Thread] = []
    for gpu, worker in zip(settings.gpus, workers, strict=True):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(gpu))
        proc = subprocess.Popen(
            worker_argv(args, worker, settings.tag), env=env, cwd=os.getcwd(), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
        )  # fmt: skip
        procs.append((worker, proc))
        assert proc.stdout is not None
        t = threading.Thread(target=relay_lines, args=(f"[{worker}] ", proc.stdout), daemon=True)
        t.start()
        threads.append(t)
    stop = _stop_on_sigterm()
    codes: dict[str, int] = {}
    try:
        _wait(procs, codes, coordinator)
    except KeyboardInterrupt:
        for _, proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        _wait(procs, codes, coordinator)
    finally:
        stop()
    for t in threads:
        t.join(timeout=5)
    return max(codes.values(), default=0)


def _wait(
    procs: list[tuple[str, subprocess.Popen[str]]], codes: dict[str, int], coordinator: Coordinator
) -> None:
    """Until every worker has ended; each one is settled as soon as it ends, so a change it was
    running (its claim) is free for the others at once. A worker killed by a signal counts as
    exit 128 + the signal's number."""
    while len(codes) < len(procs):
        for worker, proc in procs:
            code = proc.poll()
            if code is None or worker in codes:
                continue
            codes[worker] = 128 - code if code < 0 else code
            row = coordinator.lost(worker)  # a no-op for a worker that logged what it ran
            if row is not None:
                print(
                    f"[{worker}] ended (exit {code}) with attempt #{row.extra.get('n')} in flight: logged interrupted"
                )
        time.sleep(0.2)


def _stop_on_sigterm() -> Callable[[], None]:
    """While the workers run, SIGTERM stops them like Ctrl-C; returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)

    def undo() -> None:
        signal.signal(signal.SIGTERM, old)

    return undo


def relay_lines(prefix: str, stream: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(prefix + line)
        sys.stdout.flush()
