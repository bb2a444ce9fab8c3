"""A tag family's shared ledger: several workers (GPUs, hosts) on one night.

`autoresearch run --tag T --gpus 0,1` (or `--ray ADDRESS`) starts one worker per GPU; worker `w`
is an ordinary night on its own tag `T-w` and branch `autoresearch/T-w`. What they share is the
`Coordinator` of family `T`, kept in the files of tag `T`:

    results/T.tsv                 the merged ledger: every worker's rows, its `worker` column set,
                                  `n` the worker's own attempt number; one row per (worker, n)
    results/T/novelty.jsonl       the claims: the novelty registry (`harness.store.novelty`), one
                                  owner per worker (`T-w`), so no two workers run the same change
    results/T/inflight.json       the attempt each worker is running ({worker: its journal})
    results/T/family.lock         the lock every change of these files is made under

The family's best is read from the merged ledger: the best of the workers' current bests (each
worker's last keep). A worker that is behind it adopts it (`harness.night.adopt`).

One class serves both backends. With `--gpus` each worker process opens its own `Coordinator`
on the shared folder (the file lock orders them); on Ray one `Coordinator` lives in an actor on
the driver's host and the workers call it remotely. Workers reach it through a `Link`, which
turns a call into `coordinator.<method>(worker, ...)` and answers the `Registry` protocol, so a
night does not know which backend it runs on.

A worker that is lost (its process or its node died) is settled by whoever notices (the
supervisor, the Ray driver) with `lost(worker)`: the attempt it had in flight gets a crash row
`interrupted` in the merged ledger, and its claims are released. `logged` ignores a row whose
(worker, n) is already there, so a row reported twice (a worker that resends its ledger when it
resumes) is written once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.store.atomic import file_lock, write_atomic
from harness.store.ledger import NO_COMMIT, Ledger, Row, better
from harness.store.novelty import Entry, FileRegistry
from harness.store.paths import TagPaths


@dataclass(frozen=True)
class FamilyBest:
    """The best of the workers' current bests: who kept it, as which attempt, and its code."""

    worker: str
    n: int
    metric: float
    commit: str  # full or short sha on branch autoresearch/<family>-<worker>
    description: str

    def label(self) -> str:
        return f"{self.worker} #{self.n}"


def read_inflight(paths: TagPaths) -> dict[str, dict[str, Any]]:
    """What each worker of the family at `paths` is running ({worker: journal}); read without a lock
    (the file is replaced atomically), so `status` changes nothing."""
    try:
        data = json.loads((paths.dir / "inflight.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def worker_tag(family: str, worker: str) -> str:
    """The tag (and branch suffix) of one worker of a family."""
    return f"{family}-{worker}"


class Coordinator:
    """The shared ledger of family `family` in the checkout at `root` (see the module docstring).

    Every method is safe to call from several processes at once; each worker passes its name.
    """

    def __init__(self, root: Path, family: str, metric: str, direction: str) -> None:
        self.paths = TagPaths(Path(root), family)
        self.family = family
        self.metric = metric
        self.direction = direction
        self.inflight_file = self.paths.dir / "inflight.json"
        # Workers this coordinator settled as lost: a row, start or claim one of them still sends
        # (its harness outlives its node by a moment) comes after its `interrupted` row and is dropped. Rows
        # reach one coordinator object on Ray; a --gpus worker is settled only once it has exited.
        self._lost: set[str] = set()
        self._registries: dict[str, FileRegistry] = {}

    def _lock(self) -> Any:
        self.paths.dir.mkdir(parents=True, exist_ok=True)
        return file_lock(self.paths.dir / "family.lock")

    def _registry(self, worker: str) -> FileRegistry:
        if worker not in self._registries:
            self._registries[worker] = FileRegistry(self.paths.novelty, owner=worker_tag(self.family, worker))
        return self._registries[worker]

    # --- claims: the novelty registry, one owner per worker --------------------------------

    def claim(self, worker: str, key: str, description: str) -> Entry | None:
        if worker in self._lost:
            return None  # a late call of a settled worker: it will run nothing, so claims nothing
        return self._registry(worker).claim(key, description)

    def number(self, worker: str, key: str, n: int) -> None:
        self._registry(worker).number(key, n)

    def settle(self, worker: str, key: str, n: int, status: str, metric: float | None) -> None:
        self._registry(worker).settle(key, n, status, metric)

    def release(self, worker: str, key: str) -> None:
        self._registry(worker).release(key)

    def release_owner(self, worker: str) -> int:
        return self._registry(worker).release_owner()

    def lookup(self, worker: str, key: str) -> Entry | None:
        return self._registry(worker).lookup(key)

    def in_flight(self, worker: str) -> list[Entry]:
        return self._registry(worker).in_flight()

    # --- attempts and rows -------------------------------------------------------------------

    def _inflight(self) -> dict[str, dict[str, Any]]:
        return read_inflight(self.paths)

    def _write_inflight(self, data: dict[str, dict[str, Any]]) -> None:
        write_atomic(self.inflight_file, json.dumps(data, indent=1, sort_keys=True) + "\n")

    def started(self, worker: str, journal: dict[str, Any]) -> None:
        """Worker `worker` is running the attempt `journal` describes (what its pending.json holds).
        A worker already settled as lost starts nothing more (its harness outlived its node)."""
        if worker in self._lost:
            return
        with self._lock():
            data = self._inflight()
            data[worker] = {**journal, "since": round(time.time(), 3)}
            self._write_inflight(data)

    def logged(self, worker: str, row: Row) -> bool:
        """Append worker `worker`'s row to the merged ledger unless its (worker, n) is there;
        returns whether it was written. Clears the worker's in-flight attempt when it is this one.
        A worker already settled as lost writes nothing more."""
        if worker in self._lost:
            return False
        n = row.extra.get("n", "")
        with self._lock():
            ledger = Ledger(self.paths.tsv, self.metric)
            seen = any(r.extra.get("worker") == worker and r.extra.get("n") == n for r in ledger.rows())
            if not seen:
                ledger.append(Row(row.commit, row.metric, row.memory_gb, row.status, row.description,
                                  {**row.extra, "worker": worker}))  # fmt: skip
            data = self._inflight()
            if str(data.get(worker, {}).get("n")) == n:
                del data[worker]
                self._write_inflight(data)
            return not seen

    def lost(self, worker: str, why: str = "interrupted") -> Row | None:
        """Worker `worker` is gone: its attempt in flight gets a crash row (reason `why`) unless it
        has a row, and its claims are released. Returns the row written, if any."""
        written: Row | None = None
        self._lost.add(worker)
        if not self.paths.dir.exists():
            return None  # the family never started: nothing to settle, nothing to create
        with self._lock():
            data = self._inflight()
            journal = data.pop(worker, None)
            if journal is not None:
                n = str(journal.get("n", ""))
                ledger = Ledger(self.paths.tsv, self.metric)
                if not any(r.extra.get("worker") == worker and r.extra.get("n") == n for r in ledger.rows()):
                    extra = {
                        "n": n,
                        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
                        "agent": str(journal.get("agent", "")),
                        "model": str(journal.get("model", "")),
                        "cost_usd": f"{float(journal.get('cost_usd', 0) or 0):.6f}",
                        "worker": worker,
                        "reason": why,
                        "parent": str(journal.get("parent", ""))[:7],
                    }
                    commit = str(journal.get("commit") or "")[:7] or NO_COMMIT
                    written = ledger.append(
                        Row(commit, 0.0, 0.0, "crash", str(journal.get("description", "")), extra)
                    )
                self._write_inflight(data)
        self._registry(worker).release_owner()
        return written

    def rows_of(self, worker: str) -> list[Row]:
        """Worker `worker`'s rows in the merged ledger (to rebuild its own ledger on another host)."""
        with self._lock():
            rows = Ledger(self.paths.tsv, self.metric).rows() if self.paths.tsv.exists() else []
        return [r for r in rows if r.extra.get("worker") == worker]

    def running(self) -> dict[str, dict[str, Any]]:
        """What each worker is running now ({worker: journal})."""
        with self._lock():
            return self._inflight()

    def best(self) -> FamilyBest | None:
        """The family's best: the best metric among the workers' last keeps (None before any)."""
        with self._lock():
            rows = Ledger(self.paths.tsv, self.metric).rows() if self.paths.tsv.exists() else []
        return family_best(rows, self.direction)


def family_best(rows: list[Row], direction: str) -> FamilyBest | None:
    """The best of each worker's last keep in `rows` (a merged ledger)."""
    last: dict[str, Row] = {}
    for row in rows:
        if row.status == "keep":
            last[row.extra.get("worker", "")] = row
    best: Row | None = None
    for row in last.values():
        if best is None or better(row.metric, best.metric, direction):
            best = row
    if best is None:
        return None
    n = best.extra.get("n", "")
    return FamilyBest(
        best.extra.get("worker", ""),
        int(n) if n.isdigit() else -1,
        best.metric,
        best.commit,
        best.description,
    )


class Link:
    """A worker's end of the family: `call(method, *args)` reaches the `Coordinator` (in this
    process, or a Ray actor), with the worker's name put first. It is also the worker's novelty
    `Registry`. `remote` names the git remote kept commits are pushed to and other workers'
    commits are fetched from (Ray: the clone's origin), or None when the workers share one
    repository (--gpus)."""

    def __init__(self, call: Callable[..., Any], worker: str, remote: str | None = None) -> None:
        self._call = call
        self.worker = worker
        self.remote = remote

    def claim(self, key: str, description: str) -> Entry | None:
        return self._call("claim", self.worker, key, description)

    def number(self, key: str, n: int) -> None:
        self._call("number", self.worker, key, n)

    def settle(self, key: str, n: int, status: str, metric: float | None) -> None:
        self._call("settle", self.worker, key, n, status, metric)

    def release(self, key: str) -> None:
        self._call("release", self.worker, key)

    def release_owner(self) -> int:
        return int(self._call("release_owner", self.worker))

    def lookup(self, key: str) -> Entry | None:
        return self._call("lookup", self.worker, key)

    def in_flight(self) -> list[Entry]:
        return list(self._call("in_flight", self.worker))

    def started(self, journal: dict[str, Any]) -> None:
        self._call("started", self.worker, journal)

    def logged(self, row: Row) -> None:
        self._call("logged", self.worker, row)

    def best(self) -> FamilyBest | None:
        return self._call("best")


def local_link(root: Path, family: str, worker: str, metric: str, direction: str) -> Link:
    """The link of a worker that shares the family's folder (--gpus): its own Coordinator object."""
    coordinator = Coordinator(root, family, metric, direction)

    def call(method: str, *args: Any) -> Any:
        return getattr(coordinator, method)(*args)

    return Link(call, worker)
