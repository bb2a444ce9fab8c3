"""Carry another branch's kept changes into this night as proposals (`autoresearch transplant`).

    autoresearch transplant --from origin/autoresearch/nov21-h100 --tag nov21-a100

Each commit REF kept since its merge base with `autoresearch/<tag>` becomes one reply in the
reply format (ARCHITECTURE.md, "The agent's reply"): its commit message is the Description,
and the diff of its mutable files becomes SEARCH/REPLACE blocks (each hunk with just enough
context to be unique). The
replies are appended to `results/<tag>/queue.jsonl`; the loop wraps its agent in `QueuedAgent`,
which serves queued replies before asking the agent, so each transplanted change is run and
judged on this machine like any other proposal. A change that does not apply any more is sent
back like any bad edit; the queue then moves on (the next proposal is not about a reply the
inner agent never made).

The queue is append-only; `queue.served` next to it counts the lines already served, so a
transplant can add to the queue while a night is running, and `--resume` does not serve a
line twice.
"""

from __future__ import annotations

import dataclasses
import difflib
import fcntl
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomllib

from harness.agents.base import Agent, Context, Reply
from harness.edits import apply_reply, parse_reply
from harness.errors import ConfigError, DataError, EditError
from harness.store.atomic import write_atomic
from harness.store.gitview import BRANCH_PREFIX, CommitInfo, GitView
from harness.store.ledger import Row

CONTEXT_STEPS = (1, 2, 3, 5, 8, 13)  # context lines tried until every SEARCH is unique


@dataclass(frozen=True)
class Transplanted:
    """One queued change, and whether it applies to the target branch's head as it is now."""

    commit: CommitInfo
    reply: str
    applies_now: bool
    note: str = ""


def _blocks(old: str, new: str) -> list[tuple[str, str]]:
    """(search, replace) pairs turning `old` into `new`, each search unique in `old`."""
    a, b = old.splitlines(keepends=True), new.splitlines(keepends=True)
    pairs: list[tuple[str, str]] = []
    for n in CONTEXT_STEPS:
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        pairs = []
        for group in matcher.get_grouped_opcodes(n):
            i1, j1 = group[0][1], group[0][3]
            i2, j2 = group[-1][2], group[-1][4]
            pairs.append(("".join(a[i1:i2]), "".join(b[j1:j2])))
        if all(search.strip() and old.count(search) == 1 for search, _ in pairs):
            break
    return pairs


def _reply_text(description: str, edits: Sequence[tuple[str, str, str]]) -> str:
    parts = [f"Description: {description}"]
    for path, search, replace in edits:
        parts.append(path)
        parts.append("<<<<<<< SEARCH")
        parts.append(search.rstrip("\n"))
        parts.append("=======")
        if replace:
            parts.append(replace.rstrip("\n"))
        parts.append(">>>>>>> REPLACE")
    return "\n".join(parts) + "\n"


def mutable_paths(view: GitView, ref: str, paths: Sequence[str]) -> list[str]:
    """The subset of `paths` (repo-relative) that some experiment.toml at `ref` declares mutable."""
    out = []
    for path in paths:
        parts = path.split("/")
        # An experiment folder is any ancestor folder holding an experiment.toml.
        for depth in range(len(parts) - 1, 0, -1):
            folder = "/".join(parts[:depth])
            text = view.read_file(ref, f"{folder}/experiment.toml")
            if text is None:
                continue
            try:
                mutable = tomllib.loads(text).get("mutable", [])
            except tomllib.TOMLDecodeError:
                mutable = []
            if "/".join(parts[depth:]) in mutable:
                out.append(path)
            break
    return out


def build_replies(view: GitView, source: str, target: str) -> list[Transplanted]:
    """One reply per commit `source` kept since its merge base with `target`, oldest first."""
    source_sha, target_sha = view.require(source), view.require(target)
    base = view.merge_base([source_sha, target_sha])
    if base is None:
        raise ConfigError(
            f"{source} and {target} share no history; transplant between branches of one repository"
        )
    out: list[Transplanted] = []
    for commit in view.log(base, source_sha):
        if commit.parent is None:
            continue
        edits: list[tuple[str, str, str]] = []
        skipped: list[str] = []
        for path in mutable_paths(view, commit.sha, view.changed_paths(commit.parent, commit.sha)):
            old, new = view.read_file(commit.parent, path), view.read_file(commit.sha, path)
            if not old or new is None:
                skipped.append(path)  # created or deleted files are not SEARCH/REPLACE edits
                continue
            edits += [(path, s, r) for s, r in _blocks(old, new)]
        if not edits:
            continue
        description = f"{commit.subject} (transplant of {commit.short} from {source})"
        text = _reply_text(description, edits)
        applies, note = _check(view, target_sha, text, [p for p, _, _ in edits])
        if skipped:
            note = (note + "; " if note else "") + f"left out created/deleted files: {', '.join(skipped)}"
        out.append(Transplanted(commit, text, applies, note))
    return out


def plan(view: GitView, source: str, tag: str) -> tuple[str, list[Transplanted]]:
    """(the tag's branch, one reply per kept change of `source` it lacks).

    A missing branch is a ConfigError; nothing to carry over is a DataError.
    """
    target = BRANCH_PREFIX + tag
    if view.resolve(f"refs/heads/{target}") is None:
        raise ConfigError(f"no branch {target} here; start it with `autoresearch run --tag {tag}` first")
    items = build_replies(view, source, target)
    if not items:
        raise DataError(f"{source} has no kept changes to mutable files that {target} lacks; nothing queued")
    return target, items


def _check(view: GitView, target: str, text: str, paths: Sequence[str]) -> tuple[bool, str]:
    """Whether the reply applies to the target's head as it is (it may only after earlier ones)."""
    files = {p: content for p in set(paths) if (content := view.read_file(target, p)) is not None}
    try:
        apply_reply(parse_reply(text), files, sorted(set(paths)))
    except EditError as exc:
        return False, str(exc)
    return True, ""


def append_queue(queue_path: Path, replies: Sequence[str]) -> None:
    """Append replies as `{"reply": ...}` lines, under the queue's lock."""
    queue_path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps({"reply": r}) + "\n" for r in replies).encode("utf-8")
    with _locked(queue_path):
        fd = os.open(queue_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


class _locked:
    """An exclusive flock on `<queue>.lock`, shared by the transplant command and QueuedAgent."""

    def __init__(self, queue_path: Path) -> None:
        self.path = queue_path.with_name(queue_path.name + ".lock")
        self.fd = -1

    def __enter__(self) -> None:
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)


class QueuedAgent(Agent):
    """Serves queued replies (results/<tag>/queue.jsonl) first, then asks `inner`.

    The count of served lines lives in `queue.served`, so a restarted night continues after
    the last served line and lines appended mid-night are picked up at the next proposal.
    """

    name = "transplant"

    def __init__(self, inner: Agent, queue_path: Path) -> None:
        self.inner = inner
        self.queue_path = Path(queue_path)
        self.served_path = self.queue_path.with_name(self.queue_path.name + ".served")
        self._last_queued = False
        self._set_name(inner.name)

    def _set_name(self, name: str) -> None:
        # The loop records `agent.name` in the TSV's agent column: "transplant" for a queued
        # reply, the inner agent's name otherwise. An instance attribute shadows the ClassVar.
        self.__dict__["name"] = name

    def _next(self) -> str | None:
        if not self.queue_path.is_file():
            return None
        with _locked(self.queue_path):
            served = int(self.served_path.read_text().strip() or 0) if self.served_path.is_file() else 0
            lines = self.queue_path.read_text(encoding="utf-8").splitlines()
            while served < len(lines):
                line = lines[served]
                served += 1
                try:
                    reply = json.loads(line)["reply"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    print(
                        f'{self.queue_path}:{served}: not a {{"reply": ...}} line; skipped', file=sys.stderr
                    )
                    continue
                if isinstance(reply, str) and reply.strip():
                    write_atomic(self.served_path, f"{served}\n")
                    return reply
            return None

    def propose(self, ctx: Context) -> Reply | None:
        if ctx.feedback is not None and self._last_queued:
            # The feedback is about a queued reply; the queue cannot rewrite it, so move on,
            # and do not hand the inner agent feedback on a reply it never made.
            ctx = dataclasses.replace(ctx, feedback=None)
        text = self._next()
        if text is not None:
            self._last_queued = True
            self._set_name("transplant")
            return Reply(text=text, model="transplant", meta={"queued": True})
        self._last_queued = False
        self._set_name(self.inner.name)
        return self.inner.propose(ctx)

    def observe(self, reply: Reply, row: Row) -> None:
        if not reply.meta.get("queued"):
            self.inner.observe(reply, row)

    def __getattr__(self, attr: str) -> object:
        # Anything else the loop asks of the agent (settings, stats) is the inner agent's.
        if attr == "inner":  # not set yet (during construction or unpickling)
            raise AttributeError(attr)
        return getattr(self.inner, attr)


def queue_path_for(root: Path, tag: str) -> Path:
    return root / "results" / tag / "queue.jsonl"
