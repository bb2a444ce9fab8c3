"""The harness's exception hierarchy, translated to a message and exit code by the CLI.

    HarnessError            anything the person must fix; the message says how
    ├── ConfigError         bad flags, unknown experiment, malformed experiment.toml
    ├── RepoError           not a git repo, dirty mutable file, existing tag without --resume
    ├── DataError           dataset not prepared, cache mismatch, corrupt results TSV
    ├── AgentError          an agent cannot be built (missing key, malformed replay file)
    │   └── ProviderError   an LLM call failed; `retryable` says whether backing off may help
    └── EditError           a reply's edit cannot be applied; `feedback` is written for the model

Lower modules raise these (or subclasses) and never call sys.exit; `harness.commands.main` is the
only place that turns them into an exit code.
"""

from __future__ import annotations


class HarnessError(Exception):
    """An error the person can act on. str(exc) is the whole message."""

    exit_code = 2


class ConfigError(HarnessError):
    pass


class RepoError(HarnessError):
    pass


class DataError(HarnessError):
    pass


class AgentError(HarnessError):
    pass


class ProviderError(AgentError):
    """An LLM provider call failed. Retryable ones are backed off and tried again."""

    def __init__(
        self, message: str, *, retryable: bool, retry_after: float | None = None, reached: bool = True
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        self.reached = reached  # False when no answer came back at all (connection refused, timeout)


class EditError(HarnessError):
    """An edit could not be applied. `feedback` is sent back to the model verbatim."""

    def __init__(self, message: str, feedback: str | None = None) -> None:
        super().__init__(message)
        self.feedback = feedback or message
