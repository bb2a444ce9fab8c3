"""Novelty: one key per change, and a registry of the keys already tried or being tried.

`change_key(before, after)` names a change of the mutable files independently of how it is
written and of which version it was made on. Each file is normalised first: for Python, the
token stream of each logical line, joined by single spaces, with its indentation depth, and
without comments, blank lines and lone string statements (docstrings); for other files, each
non-blank line with its whitespace collapsed. The key is a hash of the normalised *diff*: the
removed and added lines of every changed region, without line numbers or context. So:

- reformatting, re-commenting or re-describing the same edit gives the same key;
- the same edit made on a later best (after an unrelated keep moved the lines) gives the same
  key: it is the same idea, and its earlier result is what the model needs to hear. This is also
  what lets workers whose bests differ (several GPUs, several hosts) recognise each other's claims;
- a change that only touches comments or whitespace has no key (None): it cannot change a run.

`Registry` is what a night asks: `claim` a key before a run (None: it is new and now in flight;
else the earlier `Entry`), `number` it once the loop gives it an attempt number, `settle` it
with its result, `release` it when it will not run after all. `FileRegistry` keeps the events as
JSON lines in one file under a lock, so several threads and processes (pipelined proposals, the
`--gpus` workers, a swarm on a shared folder) can share it; a claim is atomic. Nothing in it
assumes one process: owners are named strings, and `release_owner` frees what a dead owner held.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import threading
import time
import tokenize
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import filelock

from harness.store.atomic import file_lock

KEY_CHARS = 20  # 80 bits of sha256: no accidental collision in any number of nights
_SKIP_TOKENS = {tokenize.COMMENT, tokenize.NL, tokenize.ENCODING, tokenize.ENDMARKER}


# --- the key ---------------------------------------------------------------------------------


def normalise(path: str, text: str) -> list[str]:
    """The lines of `text` that can change what a run does, in a canonical spelling."""
    if path.endswith(".py"):
        try:
            return _python_lines(text)
        except (tokenize.TokenError, IndentationError, SyntaxError):
            pass  # not Python after all (the edit checks refuse that elsewhere): plain lines
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def _python_lines(text: str) -> list[str]:
    lines: list[str] = []
    depth = 0
    current: list[tokenize.TokenInfo] = []
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type in _SKIP_TOKENS:
            continue
        if tok.type == tokenize.INDENT:
            depth += 1
        elif tok.type == tokenize.DEDENT:
            depth -= 1
        elif tok.type == tokenize.NEWLINE:
            # A statement that is one string (a docstring) does nothing: leave it out.
            if current and not (len(current) == 1 and current[0].type == tokenize.STRING):
                lines.append("  " * depth + " ".join(t.string for t in current))
            current = []
        else:
            current.append(tok)
    if current:
        lines.append("  " * depth + " ".join(t.string for t in current))
    return lines


def change_key(before: Mapping[str, str], after: Mapping[str, str]) -> str | None:
    """The key of the change from `before` to `after` (path -> text), or None when, normalised,
    nothing changed (a change of comments or whitespace only)."""
    digest = hashlib.sha256()
    changed = False
    for path in sorted(set(before) | set(after)):
        old = normalise(path, before.get(path, ""))
        new = normalise(path, after.get(path, ""))
        if old == new:
            continue
        changed = True
        digest.update(f"\0file {path}\n".encode())
        matcher = difflib.SequenceMatcher(None, old, new, autojunk=False)
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                continue
            hunk = [f"-{line}" for line in old[i1:i2]] + [f"+{line}" for line in new[j1:j2]]
            digest.update(("\0hunk\n" + "\n".join(hunk)).encode())
    return digest.hexdigest()[:KEY_CHARS] if changed else None


# --- the registry ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One key that was claimed: in flight until it is settled."""

    key: str
    description: str
    owner: str  # who claimed it: a tag, a worker
    n: int | None = None  # its attempt number, once the owner's loop gave it one
    status: str = ""  # keep / discard / crash once settled; "" while in flight
    metric: float | None = None  # the settled row's metric (None for a crash)

    @property
    def in_flight(self) -> bool:
        return not self.status

    def label(self, own: str = "") -> str:
        """How a row or a prompt names it: `#7`, `#7 of <owner>` (another owner's), or
        `a proposal in flight [on <owner>]` (not numbered yet)."""
        theirs = self.owner not in ("", own)
        if self.n is None:
            return "a proposal in flight" + (f" on {self.owner}" if theirs else "")
        return f"#{self.n}" + (f" of {self.owner}" if theirs else "")


class Registry(Protocol):
    """The keys of a night (or of several workers sharing one registry)."""

    def claim(self, key: str, description: str) -> Entry | None:
        """Atomically: None if `key` was new (it is now in flight), else the earlier entry."""

    def number(self, key: str, n: int) -> None:
        """The in-flight `key` became attempt `n`."""

    def settle(self, key: str, n: int, status: str, metric: float | None) -> None:
        """Attempt `n` with `key` has its row: later claims of the key get this result."""

    def release(self, key: str) -> None:
        """Forget an in-flight `key` that will not run (a dropped or interrupted proposal)."""

    def lookup(self, key: str) -> Entry | None: ...

    def in_flight(self) -> list[Entry]:
        """Every key claimed and not yet settled, oldest first."""


class FileRegistry:
    """A `Registry` in an append-only JSON-lines file under a lock (threads and processes).

    Each line is one event (`claim`, `number`, `settle`, `release`); the state is their fold,
    brought up to date on every call from the lines appended since (any process may append). `owner` names the
    entries this object claims; `release_owner()` frees what an earlier process of the same
    owner left in flight (a harness that was killed).
    """

    def __init__(self, path: Path, owner: str) -> None:
        self.path = Path(path)
        self.owner = owner
        self._thread_lock = threading.Lock()
        self._entries: dict[str, Entry] = {}  # the fold of the file's first `_offset` bytes
        self._offset = 0
        self._file: tuple[int, int] | None = None  # (device, inode) of the file folded

    def _lock(self) -> filelock.FileLock:
        return file_lock(self.path.with_name(self.path.name + ".lock"))

    def _read(self) -> dict[str, Entry]:
        """The fold of every event so far. The file only grows, so only what was appended since
        the last call is read (a night's registry reaches thousands of lines); a file that was
        replaced or shrank is read again from the start."""
        try:
            with open(self.path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if (st.st_dev, st.st_ino) != self._file or st.st_size < self._offset:
                    self._entries, self._offset, self._file = {}, 0, (st.st_dev, st.st_ino)
                fh.seek(self._offset)
                new = fh.read()
        except FileNotFoundError:
            self._entries, self._offset, self._file = {}, 0, None
            return self._entries
        complete = new[: new.rfind(b"\n") + 1]  # a torn last line waits for its end (or is skipped)
        self._offset += len(complete)
        for line in complete.decode("utf-8", errors="replace").splitlines():
            try:
                event = json.loads(line)
                _apply(self._entries, str(event["key"]), str(event["op"]), event)
            except (ValueError, KeyError, TypeError):
                continue  # a torn line after a crash: the event never happened
        return self._entries

    def _append(self, event: dict[str, object]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({**event, "t": round(time.time(), 3)}, separators=(",", ":")) + "\n"
        with open(self.path, "a+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size:
                fh.seek(size - 1)
                if fh.read(1) != b"\n":
                    line = "\n" + line  # end a torn line first, so this event is a line of its own
            fh.write(line.encode("utf-8"))  # append mode: always at the end

    def claim(self, key: str, description: str) -> Entry | None:
        with self._thread_lock, self._lock():
            seen = self._read().get(key)
            if seen is not None:
                return seen
            self._append({"op": "claim", "key": key, "description": description[:200], "owner": self.owner})
            return None

    def number(self, key: str, n: int) -> None:
        with self._thread_lock, self._lock():
            self._append({"op": "number", "key": key, "n": n})

    def settle(self, key: str, n: int, status: str, metric: float | None) -> None:
        with self._thread_lock, self._lock():
            self._append({"op": "settle", "key": key, "n": n, "status": status, "metric": metric})

    def release(self, key: str) -> None:
        with self._thread_lock, self._lock():
            self._append({"op": "release", "key": key})

    def release_owner(self) -> int:
        """Free every key this owner left in flight; returns how many."""
        with self._thread_lock, self._lock():
            stale = [e for e in self._read().values() if e.in_flight and e.owner == self.owner]
            if stale:
                self._append({"op": "release_owner", "key": "*", "owner": self.owner})
            return len(stale)

    def lookup(self, key: str) -> Entry | None:
        with self._thread_lock, self._lock():
            return self._read().get(key)

    def in_flight(self) -> list[Entry]:
        with self._thread_lock, self._lock():
            return [e for e in self._read().values() if e.in_flight]


def _apply(entries: dict[str, Entry], key: str, op: str, event: Mapping[str, object]) -> None:
    """Fold one event of the registry file into `entries`."""
    entry = entries.get(key)
    if op == "claim" and entry is None:
        entries[key] = Entry(key, str(event.get("description", "")), str(event.get("owner", "")))
    elif op == "number" and entry is not None:
        entries[key] = replace(entry, n=_int(event.get("n")))
    elif op == "settle":
        base = entry or Entry(key, str(event.get("description", "")), str(event.get("owner", "")))
        metric = event.get("metric")
        entries[key] = replace(
            base,
            n=_int(event.get("n")),
            status=str(event.get("status", "")) or "discard",
            metric=float(metric) if isinstance(metric, int | float) else None,
        )
    elif op == "release" and entry is not None and entry.in_flight:
        del entries[key]
    elif op == "release_owner":
        owner = str(event.get("owner", ""))
        for k in [k for k, e in entries.items() if e.in_flight and e.owner == owner]:
            del entries[k]


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
