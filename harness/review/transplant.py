"""Carry another branch's kept changes into this night as proposals (`autoresearch transplant`).

    autoresearch transplant --from origin/autoresearch/nov21-h100 --tag nov21-a100

Each commit REF kept since its merge base with `autoresearch/<tag>` becomes one reply in the
reply format of ARCHITECTURE.md: its commit message is the Description, and the diff of its mutable
files becomes SEARCH/REPLACE blocks (each hunk with just enough context to be unique). The
replies are appended to `results/<tag>/queue.jsonl`, which the night serves before asking its
agent (`harness.agents.queue.QueuedAgent`), so each transplanted change is run and judged on
this machine like any other proposal. The queue is append-only, so a transplant can add to it
while a night is running; `--resume` does not serve a line twice.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, from PyPI (a dependency there)
    import tomli as tomllib

from harness.agents.queue import queue_lock
from harness.edits import apply_reply, parse_reply
from harness.errors import ConfigError, DataError, EditError
from harness.store.atomic import file_lock
from harness.store.git import BRANCH_PREFIX, CommitInfo, Repo

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


def mutable_paths(view: Repo, ref: str, paths: Sequence[str]) -> list[str]:
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


def build_replies(view: Repo, source: str, target: str) -> list[Transplanted]:
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


def plan(view: Repo, source: str, tag: str) -> tuple[str, list[Transplanted]]:
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


def _check(view: Repo, target: str, text: str, paths: Sequence[str]) -> tuple[bool, str]:
    """Whether the reply applies to the target's head as it is (it may only after earlier ones)."""
    files = {p: content for p in set(paths) if (content := view.read_file(target, p)) is not None}
    try:
        apply_reply(parse_reply(text), files, sorted(set(paths)))
    except EditError as exc:
        return False, str(exc)
    return True, ""


def append_queue(queue_path: Path, replies: Sequence[str]) -> None:
    """Append replies as `{"reply": ...}` lines, under the queue's lock (the night reads it under the same)."""
    data = "".join(json.dumps({"reply": r}) + "\n" for r in replies).encode("utf-8")
    with file_lock(queue_lock(queue_path)):
        fd = os.open(queue_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
