"""`--ray ADDRESS|auto`: one worker per GPU of a Ray cluster, one family, code through git.

The driver (this process, on a node of the cluster) connects to the cluster, pushes the
checkout's HEAD to the git remote `origin` as `autoresearch/<tag>` (the family's start), and
starts:

- a coordinator actor on its own node, owning the family's shared ledger in this checkout's
  results/ (`harness.store.family.Coordinator`, the same class `--gpus` uses on files);
- one `Worker` actor per GPU of the cluster (`num_gpus=1`; Ray places them, nothing here
  schedules). A worker clones the remote on its node (under `<cache-dir>/swarm/<tag>/<worker>`),
  checks out the family's start and runs `autoresearch run --tag <tag>-<worker>` there as a
  child process, connected to the coordinator through its actor (`harness.swarm.relay`). Its
  kept commits are pushed to `autoresearch/<tag>-<worker>` on the remote, where other workers
  fetch them to adopt the family's best.

A worker whose actor or node is lost gets its attempt in flight logged `interrupted` in the
merged ledger (`Coordinator.lost`) and the night goes on with the others; it is not restarted.
Ctrl-C or SIGTERM of the driver stops every worker like Ctrl-C stops a night (each logs its
attempt in flight); a driver killed outright takes its actors with it (Ray's ownership), and a
worker's harness follows its actor (a parent-death signal). `--resume` resumes the family: each
worker continues its branch from the remote, and a worker placed on another host than before
rebuilds its own ledger from its rows in the merged one.

Every host needs the same Python environment with autoresearch and its `[ray]` extra installed,
the dataset prepared, and access to `origin`; the driver must run on a node of the cluster.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from harness.errors import ConfigError, RepoError
from harness.settings import Settings
from harness.store.family import Coordinator, worker_tag
from harness.store.git import BRANCH_PREFIX, Repo
from harness.store.ledger import Ledger
from harness.store.paths import TagPaths
from harness.swarm import relay
from harness.swarm.local import check_family, worker_argv

REMOTE = "origin"
COORDINATOR = "coordinator"


def namespace(family: str) -> str:
    """The Ray namespace of a family's actors."""
    return f"autoresearch-{family}"


def run_ray(settings: Settings, args: argparse.Namespace) -> int:
    try:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    except ImportError:
        raise ConfigError(
            "--ray needs Ray: pip install 'autoresearch[ray]' (on every host of the cluster)"
        ) from None
    check_family(settings)
    repo = Repo.open(settings.repo_root)
    if REMOTE not in repo.remote_names():
        raise ConfigError(
            f"--ray moves code through the git remote {REMOTE!r}, which {repo.root} lacks: "
            f"git remote add {REMOTE} URL (a repository every host can fetch from and push to)"
        )
    url = repo.git("remote", "get-url", REMOTE)
    family = settings.tag
    if not settings.resume:
        dirty = repo.git("status", "--porcelain", "--", *settings.mutable)
        if dirty:
            raise RepoError(
                f"commit the mutable files first: the workers start from HEAD, and these differ:\n{dirty}"
            )
    try:
        ray.init(address=settings.ray, namespace=namespace(family), log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot connect to the Ray cluster at {settings.ray}: {exc}") from None
    try:
        gpus = int(ray.cluster_resources().get("GPU", 0))
        if gpus < 1:
            raise ConfigError(
                f"the Ray cluster at {settings.ray} has no GPUs (ray status shows its resources)"
            )
        if not settings.resume:
            repo.push(REMOTE, [f"+HEAD:refs/heads/{BRANCH_PREFIX}{family}"])
        here = ray.get_runtime_context().get_node_id()
        coordinator = (
            ray.remote(Coordinator)
            .options(
                name=COORDINATOR,
                num_cpus=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
            )
            .remote(settings.repo_root, family, settings.metric, settings.direction)
        )
        workers: dict[str, Any] = {
            f"w{i}": ray.remote(Worker)
            .options(name=f"w{i}", num_gpus=1, num_cpus=0, max_concurrency=2)
            .remote()
            for i in range(gpus)
        }
        print(
            f"autoresearch run: {gpus} workers on the Ray cluster ({', '.join(workers)}), tags "
            f"{worker_tag(family, 'w<i>')}; the family's ledger is {settings.paths.tsv}; code through {url}",
            flush=True,
        )
        home = settings.cache_root / "swarm" / family
        refs = {
            actor.run.remote(
                {
                    "url": url, "family": family, "worker": w, "home": str(home / w),
                    "resume": settings.resume, "metric": settings.metric,
                    "argv": worker_argv(args, w, family)[1:],
                },
                coordinator,
            ): w
            for w, actor in workers.items()
        }  # fmt: skip
        return _wait(ray, settings, refs, workers, coordinator)
    finally:
        ray.shutdown()


def _wait(
    ray: Any, settings: Settings, refs: dict[Any, str], workers: dict[str, Any], coordinator: Any
) -> int:
    """Wait for every worker; settle each one that ends (a lost one's attempt in flight)."""
    codes: dict[str, int] = {}
    pending = list(refs)

    def settle(done: list[Any]) -> None:
        for ref in done:
            w = refs[ref]
            try:
                codes[w] = int(ray.get(ref))
            except ray.exceptions.RayError as exc:
                codes[w] = 1
                why = (str(exc).strip().splitlines() or [""])[0][:300]
                print(f"[{w}] lost: {type(exc).__name__}: {why}", flush=True)
            row = ray.get(coordinator.lost.remote(w))
            if row is not None:
                print(f"[{w}] its attempt #{row.extra.get('n')} in flight was logged interrupted", flush=True)

    old = signal.signal(signal.SIGTERM, _interrupt) if _main_thread() else None
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            settle(done)
    except KeyboardInterrupt:
        print("stopping every worker (each logs its attempt in flight)", flush=True)
        for w, actor in workers.items():
            if w not in codes:
                actor.stop.remote()
        done, pending = ray.wait(pending, num_returns=len(pending), timeout=settings.timeout + 60)
        settle(done)
        return 130
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
    return max(codes.values(), default=0)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class Worker:
    """One GPU of the cluster: a checkout of the family's remote and a night in it (a Ray actor)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def run(self, spec: dict[str, Any], coordinator: Any) -> int:
        import ray

        family, worker, home = str(spec["family"]), str(spec["worker"]), Path(spec["home"])
        tag = worker_tag(family, worker)
        branch = BRANCH_PREFIX + tag
        argv = [sys.executable, *spec["argv"]]
        if not spec["resume"] and home.exists():
            shutil.rmtree(home)  # a checkout of an earlier family of this name
        if (home / ".git").exists():
            repo = Repo.open(home)
        else:
            home.parent.mkdir(parents=True, exist_ok=True)
            repo = Repo.clone(str(spec["url"]), home)
        repo.git(
            "fetch", "-q", REMOTE, f"+refs/heads/{BRANCH_PREFIX}*:refs/remotes/{REMOTE}/{BRANCH_PREFIX}*"
        )
        repo.git("checkout", "-q", "--detach", f"{REMOTE}/{BRANCH_PREFIX}{family}")
        if spec["resume"]:
            rows = ray.get(coordinator.rows_of.remote(worker))
            if not repo.has_branch(branch) and repo.resolve(f"{REMOTE}/{branch}") is not None:
                repo.git("branch", branch, f"{REMOTE}/{branch}")
            tsv = TagPaths(home, tag).tsv
            if rows and not tsv.exists():  # placed on another host than before: its rows follow it
                ledger = Ledger(tsv, str(spec["metric"]))
                for row in rows:
                    ledger.append(row)
            if not repo.has_branch(branch):
                argv.remove("--resume")  # a worker the family did not have before (a bigger cluster)

        def forward(method: str, *args: Any) -> Any:
            return ray.get(getattr(coordinator, method).remote(*args))

        address, key = relay.serve(forward)
        env = dict(os.environ, **{relay.KEY_ENV: key})
        self.proc = subprocess.Popen(
            [*argv, "--coordinator", address], cwd=home, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1, preexec_fn=_die_with_parent,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            print(f"[{worker}] {line}", end="", flush=True)
        return self.proc.wait()

    def stop(self) -> None:
        """Ctrl-C for this worker's night: its attempt in flight is logged, then it exits."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)


def _die_with_parent() -> None:
    """In the worker's harness, before exec: SIGTERM when the actor dies (Linux's parent-death
    signal), so a lost actor never leaves a night running on its own."""
    # Not Linux (no prctl): the harness ends at its next call to the lost coordinator instead.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
