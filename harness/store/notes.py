"""The research notes of a night: `results/<tag>/notes.md`, a short log of insights and dead ends.

Three writers share the file, like program.md's person and the loop share that one:
- the loop appends the model's `Note:` line of each attempt once its row is written
  (`append`: `- #7 (discard, 0.995100): warmup above 300 steps hurts at this budget`);
- every N attempts a reflection call rewrites the whole file from the history (`rewrite`);
- the person edits it whenever they like; it is re-read before every prompt.

Every write holds the notes' lock (`notes.md.lock`) and replaces the file atomically. A rewrite
is based on the text the reflection read; if only notes were appended since, they are kept after
the new text; if anything else changed (the person edited it), the rewrite is dropped: the
person's words win. `for_prompt` bounds what a prompt gets (`MAX_NOTES_CHARS`), keeping the
head (the reflection's summary) and the newest lines.
"""

from __future__ import annotations

from pathlib import Path

import filelock

from harness.store.atomic import file_lock, write_atomic

MAX_NOTE_CHARS = 300  # one `Note:` line
MAX_NOTES_CHARS = 4_000  # what a prompt gets of the file; a reflection is asked to stay under it
_HEADER = (
    "# Research notes: {tag}\n\n"
    "Insights and dead ends of this night, from the research agent (its `Note:` lines and a periodic\n"
    "reflection) and from you: edit freely, the file goes into every prompt.\n\n"
)


def clean_note(text: str) -> str:
    """One line, at most MAX_NOTE_CHARS."""
    line = " ".join(text.split())
    return line if len(line) <= MAX_NOTE_CHARS else line[: MAX_NOTE_CHARS - 3] + "..."


class Notes:
    """The notes file of one tag."""

    def __init__(self, path: Path, tag: str) -> None:
        self.path = Path(path)
        self.tag = tag

    def _lock(self) -> filelock.FileLock:
        return file_lock(self.path.with_name(self.path.name + ".lock"))

    def read(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def append(self, line: str) -> None:
        """Add one bullet line (a note with its attempt), creating the file with its header."""
        with self._lock():
            text = self.read() or _HEADER.format(tag=self.tag)
            if not text.endswith("\n"):
                text += "\n"
            write_atomic(self.path, text + f"- {clean_note(line)}\n")

    def rewrite(self, new: str, based_on: str) -> bool:
        """Replace the notes by `new`, made from `based_on`; False (nothing written) when the file
        changed since other than by appended lines (the person edited it)."""
        with self._lock():
            current = self.read()
            if current == based_on:
                appended = ""
            elif current.startswith(based_on):
                appended = current[len(based_on) :]
            else:
                return False
            body = bound(new.strip(), MAX_NOTES_CHARS)
            if not body.startswith("#"):
                body = _HEADER.format(tag=self.tag) + body
            write_atomic(self.path, body + "\n" + appended.lstrip("\n"))
            return True


def bound(text: str, limit: int = MAX_NOTES_CHARS) -> str:
    """`text` within `limit` characters: its head and its newest lines, whole lines only."""
    if len(text) <= limit:
        return text
    lines = text.splitlines()
    head_budget, tail_budget = limit // 3, limit - limit // 3 - 60
    head: list[str] = []
    used = 0
    for line in lines:
        if used + len(line) + 1 > head_budget:
            break
        head.append(line)
        used += len(line) + 1
    tail: list[str] = []
    used = 0
    for line in reversed(lines[len(head) :]):
        if used + len(line) + 1 > tail_budget:
            break
        tail.insert(0, line)
        used += len(line) + 1
    omitted = len(lines) - len(head) - len(tail)
    return "\n".join([*head, f"... ({omitted} lines of the notes left out here) ...", *tail])


def for_prompt(text: str) -> str:
    """What a prompt shows of the notes."""
    return bound(text.strip(), MAX_NOTES_CHARS)
