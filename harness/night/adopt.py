"""Adoption: a worker that is behind its family's best takes that code and judges it itself.

A worker of a family (`--gpus`, `--ray`) asks the family's shared ledger for its best before it
asks its agent for the next change. When another worker's best is better than this worker's
best (by the metric, in the experiment's direction) and this worker has not tried it yet, the
next attempt is that code: the mutable files at the other worker's kept commit (fetched from
the family's git remote first, on Ray), committed as an ordinary child of this worker's best,
described `adopt <worker> #<n>: <its description>`, with agent `adopt`. It then runs and is
judged like any attempt, so a gain measured on another GPU or host is kept only when this
worker's own judge confirms it on its own hardware; a discard leaves the branch where it was.

Each (worker, n) is tried once per night; the ledger's `adopt ...` rows say which were tried, so
a resumed worker does not try them again. Adoptions are not claimed in the novelty registry:
every worker must be free to confirm the same best on its own hardware.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from harness.errors import RepoError
from harness.night.attempt import Attempt
from harness.store.family import FamilyBest, Link, worker_tag
from harness.store.git import BRANCH_PREFIX, Ratchet
from harness.store.ledger import Ledger, better

AGENT = "adopt"
_ADOPTED = re.compile(r"^adopt (\S+) #(\d+):")


def description(best: FamilyBest) -> str:
    return f"adopt {best.label()}: {best.description}"


class Adopter:
    """Turns the family's best into this worker's next attempt when this worker is behind it."""

    def __init__(
        self, link: Link, family: str, ratchet: Ratchet, ledger: Ledger, direction: str,
        notify: Callable[[str], None],
    ) -> None:  # fmt: skip
        self.link = link
        self.family = family
        self.ratchet = ratchet
        self.ledger = ledger
        self.direction = direction
        self.notify = notify
        self.tried: set[tuple[str, int]] = set()
        for row in ledger.rows():
            match = _ADOPTED.match(row.description)
            if match:
                self.tried.add((match.group(1), int(match.group(2))))

    def next(self, own_best: float | None) -> Attempt | None:
        """The adoption to run now, or None (nothing better elsewhere, or already tried)."""
        best = self.link.best()
        if best is None or best.worker == self.link.worker or (best.worker, best.n) in self.tried:
            return None
        if own_best is not None and not better(best.metric, own_best, self.direction):
            return None
        self.tried.add((best.worker, best.n))
        files = self._files(best)
        if files is None:
            return None
        current = {p: self.ratchet.tree.read_file("HEAD", p) or "" for p in self.ratchet.mutable}
        if files == current:
            return None  # this worker is at that code already (it adopted it, or kept the same)
        self.notify(
            f"the family's best is {best.label()} ({best.metric:.6f}): adopting it, to be judged here"
        )
        # No novelty key: not claimed, since every worker confirms the family's best on its own hardware.
        return Attempt(description(best), AGENT, files=files)

    def _files(self, best: FamilyBest) -> dict[str, str] | None:
        """The mutable files at `best`'s commit; on Ray after fetching its worker's branch."""
        repo = self.ratchet.repo
        if self.link.remote is not None:
            branch = BRANCH_PREFIX + worker_tag(self.family, best.worker)
            try:
                repo.git(
                    "fetch", "-q", self.link.remote, f"+refs/heads/{branch}:refs/autoresearch-family/{branch}"
                )
            except RepoError as exc:
                self.notify(f"cannot fetch {branch} to adopt {best.label()}: {exc}")
                return None
        files: dict[str, str] = {}
        for path in self.ratchet.mutable:
            text = repo.read_file(best.commit, path)
            if text is None:
                self.notify(f"cannot read {path} at {best.commit} to adopt {best.label()}: not adopted")
                return None
            files[path] = text
        return files
