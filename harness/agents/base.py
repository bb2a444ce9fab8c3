"""The one interface every agent implements: LLM providers, the offline search, replay.

The loop builds a `Context` for each proposal and calls `Agent.propose`; the agent
answers with a `Reply` whose text is in the reply format (a Description line and
SEARCH/REPLACE blocks, parsed by harness.edits), or None when it has nothing more to propose, which
ends the night. After the attempt is judged the loop calls `observe` with its row, so
agents that learn from outcomes (the search agent's TPE) can.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from harness.errors import AgentError

if TYPE_CHECKING:
    from harness.settings import Settings
    from harness.store.attempts import AttemptRecord
    from harness.store.ledger import Row


@dataclass(frozen=True)
class CrashReport:
    """The last crash, sent back when the model is asked to fix it."""

    description: str
    reason: str
    log_tail: str  # at most 50 lines


@dataclass(frozen=True)
class InFlight:
    """A proposal being tried now: running, queued to run, or still being written by the model."""

    state: str  # e.g. "#12 running", "queued", "being written"
    description: str = ""  # "" while it is being written


@dataclass(frozen=True)
class NearMiss:
    """A recent attempt close to the best, with its change: something to build on (`Parent: #n`)."""

    n: int
    status: str
    metric: float
    description: str
    diff: str


@dataclass
class Context:
    """Everything an agent may look at to propose the next experiment."""

    program: str  # program.md, re-read before every experiment
    files: dict[str, str]  # mutable path (relative to the repo root) -> content at the current best
    history: list[Row]  # this tag's rows so far, oldest first
    metric: str = "val_bpb"
    direction: str = "minimize"
    budget_seconds: float = 300.0
    device: str = "cpu"  # the device profile: cuda, mlx or cpu
    hardware: str = ""  # e.g. "NVIDIA H100 80GB HBM3"
    crash: CrashReport | None = None  # set when asking for a fix of the last crash
    feedback: str | None = None  # set when the previous reply's edit did not apply
    notes: str = ""  # results/<tag>/notes.md, re-read before every proposal
    records: Mapping[int, AttemptRecord] = field(default_factory=dict)  # diagnostics, by attempt n
    in_flight: tuple[InFlight, ...] = ()  # proposals being tried now (pipelined, other workers)
    writing: tuple[int, int] | None = None  # (k, m): this request is the k-th of m written at once
    near_misses: tuple[NearMiss, ...] = ()


@dataclass
class Reply:
    """One answer from an agent. `meta` carries agent-private bookkeeping (replay index, trial)."""

    text: str
    model: str = ""
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    agent: str = ""  # who made it (the TSV's agent column) when not the agent asked: a transplant


class Agent(ABC):
    """An agent proposes edits. Subclasses set `name` and, if they need one, `key_env_var`.

    `edit_retries` bounds how often a reply whose edit does not apply goes back to this agent
    with feedback: 3 for LLMs; 0 for agents whose replies are fixed text (replay, search),
    which would only give the same answer again.
    """

    name: ClassVar[str]
    key_env_var: ClassVar[str | None] = None
    edit_retries: int = 3

    @classmethod
    def from_settings(cls, settings: Settings) -> Agent:
        """Build the agent from the resolved settings (every registered agent implements it)."""
        raise AgentError(f"the {cls.name} agent cannot be built from the settings")

    @abstractmethod
    def propose(self, ctx: Context) -> Reply | None:
        """Return the next proposal, or None when there is nothing more to try."""

    def preflight(self) -> str | None:
        """Check, before the baseline, that the agent can answer at all (one cheap call for the
        LLM agents); raise AgentError when it cannot. Returns a line to print, or None."""
        return None

    def observe(self, reply: Reply, row: Row) -> None:  # noqa: B027 - optional hook
        """Learn from the judged outcome of `reply`. Default: nothing."""
