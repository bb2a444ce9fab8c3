"""The replay agent: replies read from a JSONL file, in order, one `{"reply": "..."}` per line.

It is how tests and reproductions drive the loop without an LLM (`--agent replay:FILE`).
The whole file is read and checked when the agent is built, so a malformed line is reported
(with its line number) before anything starts. Blank lines are skipped; an empty file is
valid and means the baseline alone. On `--resume` the replies already used are skipped:
every used reply left exactly one TSV row with agent `replay`, so their count is the index
of the next reply. Replies are fixed text, so a reply whose edit does not apply is not
asked again (`edit_retries = 0`): it becomes a `bad edit` crash row and the next one follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from harness.agents.base import Agent, Context, Reply
from harness.errors import AgentError, DataError
from harness.store.schema import REPLAY_LIMIT, read_text, reply_lines

if TYPE_CHECKING:
    from harness.settings import Settings


def load_replies(path: Path) -> list[str]:
    """Every reply of a replay file; AgentError naming the file and line for a malformed one.

    Read through the replay schema (`harness.store.schema.ReplyLine`): bytes that are not UTF-8
    are replaced (with a warning), a folder or an oversized file is refused.
    """
    if not path.exists():
        raise AgentError(f"replay file {path} does not exist")
    fix = "fix that line or pass another file with --agent replay:FILE"
    try:
        text = read_text(path, limit=REPLAY_LIMIT, fix=fix, what="replay file")
    except DataError as exc:
        raise AgentError(f"replay file {exc}") from None
    return [reply for _, reply in reply_lines(text or "", f"replay file {path}", fix, error=AgentError)]


class ReplayAgent(Agent):
    """Serves the replies of a file in order; None when they run out."""

    name: ClassVar[str] = "replay"
    edit_retries = 0

    def __init__(self, path: Path, replies: list[str]) -> None:
        self.path = path
        self.replies = replies
        self._next: int | None = None

    @classmethod
    def from_file(cls, path: Path) -> ReplayAgent:
        return cls(path, load_replies(path))

    @classmethod
    def from_settings(cls, settings: Settings) -> ReplayAgent:
        if not settings.agent.startswith("replay:"):
            raise AgentError(f"the replay agent needs --agent replay:FILE, not {settings.agent!r}")
        return cls.from_file(Path(settings.agent[len("replay:") :]))

    def propose(self, ctx: Context) -> Reply | None:
        if self._next is None:
            # First call of this harness: skip what an earlier harness on this tag already used.
            self._next = sum(
                1
                for row in ctx.history
                if row.extra.get("agent") == self.name and row.description != "baseline"
            )
        if self._next >= len(self.replies):
            return None
        index = self._next
        self._next += 1
        return Reply(text=self.replies[index], model=f"replay:{self.path.name}", meta={"index": index})
