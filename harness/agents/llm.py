"""The part the LLM agents share: prompt -> one provider call (with retries) -> priced Reply.

`propose(ctx)` asks for the next experiment; `reflect(ctx)` asks for the research notes
rewritten from the history (harness.agents.prompt builds both prompts); both go through
`complete(prompt)`.

A provider subclass implements `_complete(prompt) -> Completion` with its SDK and sets
`name`, `key_env_var` and `default_model`; everything else is here: the prompt from
`harness.agents.prompt`, the retry policy and outage status of `harness.agents.retry`, and the
cost of each call from `harness.agents.cost`. Calls may come from the pipelined proposer's
thread while the main thread runs an experiment; `status` and the meter are thread-safe.

`from_settings` takes the knobs from the resolved settings: the call timeout and reply length
(`llm_timeout`, `llm_max_tokens`), the retry policy (`retry_*`) and the prices over the built-in
table (`prices`); `harness.options.OPTIONS` names the AUTORESEARCH_* variable of each.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, TypeVar

import tenacity

from harness.agents.base import Agent, Context, Reply
from harness.agents.cost import PriceTable, Usage
from harness.agents.prompt import Prompt, build_prompt, build_reflection_prompt, redact
from harness.agents.retry import ProviderStatus, RetryPolicy, call_with_retries, classify
from harness.errors import ProviderError

if TYPE_CHECKING:
    from harness.settings import Settings

log = logging.getLogger("harness.agents")

MAX_EMPTY_RETRIES = 3
PREFLIGHT_CALL_SECONDS = 10.0  # one preflight call may take this long (the knob bounds all of them)
_A = TypeVar("_A", bound="LLMAgent")


@dataclass(frozen=True)
class Completion:
    """What one successful provider call returned."""

    text: str
    model: str
    input_tokens: int  # every input token, cached ones included
    output_tokens: int
    stop_reason: str = ""
    cache_read_tokens: int = 0  # of input_tokens: read from the provider's prompt cache
    cache_write_tokens: int = 0  # of input_tokens: written to it


@dataclass(frozen=True)
class CallOptions:
    """Per-call knobs (`Settings.llm_timeout` and `llm_max_tokens`; these defaults are theirs)."""

    timeout: float = 600.0  # seconds
    max_tokens: int = 16_000


class LLMAgent(Agent):
    """Base of the provider agents. Never raises anything but ProviderError from `propose`."""

    default_model: ClassVar[str]
    default_endpoint: ClassVar[str]  # the provider's own API, when no base URL is set

    def __init__(
        self,
        model: str | None = None,
        *,
        policy: RetryPolicy | None = None,
        prices: PriceTable | None = None,
        options: CallOptions | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.env: Mapping[str, str] = dict(os.environ if env is None else env)
        self.model = model or self.default_model
        self.policy = policy or RetryPolicy()
        self.prices = prices or PriceTable.load()
        self.options = options or CallOptions()
        self.status = ProviderStatus()
        self.preflight_seconds = 40.0  # how long the start waits for an endpoint that does not answer
        self.base_url: str | None = None  # the endpoint, when not the provider's own (set by subclasses)
        # Where retries and outage pauses are reported; the loop points this at its live view.
        self.notify: Callable[[str], None] = log.warning
        self._empty_streak = 0

    @classmethod
    def from_settings(cls: type[_A], settings: Settings) -> _A:
        """The agent with the model and the knobs of the resolved settings."""
        policy = RetryPolicy(
            base=settings.retry_base,
            cap=settings.retry_cap,
            pause_after=settings.retry_pause_after,
            max_attempts=settings.retry_max_attempts,
        )
        options = CallOptions(timeout=settings.llm_timeout, max_tokens=settings.llm_max_tokens)
        agent = cls(settings.model, policy=policy, prices=PriceTable.load(settings.prices), options=options)
        agent.preflight_seconds = settings.llm_preflight
        return agent

    def price_source(self) -> tuple[str | None, str | None]:
        """(genai-prices provider id, API URL) that price this agent's models."""
        return None, self.base_url

    @property
    def endpoint(self) -> str:
        """The URL this agent talks to."""
        return self.base_url or self.default_endpoint

    def preflight(self) -> str:
        """One cheap call before the baseline: is the endpoint there, does it take the key?

        No answer at all (connection refused, timeouts) is retried for `preflight_seconds`,
        then it is a ProviderError naming the URL; a permanent error (bad key, 404, 501) is one
        at once; a transient one (429, 5xx) means the endpoint is there: the night will wait.
        """
        call_timeout = min(self.options.timeout, PREFLIGHT_CALL_SECONDS)

        def ping() -> str | None:
            try:
                return self._ping(call_timeout)
            except ProviderError:
                raise
            except Exception as exc:  # noqa: BLE001 - classified like any provider call
                raise classify(exc, key_env_var=self.key_env_var) from exc

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, ProviderError) and not e.reached),
            stop=tenacity.stop_after_delay(self.preflight_seconds),
            wait=tenacity.wait_exponential(multiplier=1.0, max=8.0),
            sleep=self.policy.sleep,
            reraise=True,
        )
        try:
            note = retrying(ping)
        except ProviderError as err:
            message = redact(str(err), self.env)
            if not err.reached:
                raise ProviderError(
                    f"cannot reach the LLM endpoint {self.endpoint} ({message}); check the URL "
                    f"(ANTHROPIC_BASE_URL / OPENAI_BASE_URL) and that the server is up",
                    retryable=False,
                ) from None
            if err.retryable:
                return f"LLM endpoint {self.endpoint} is there but answered: {message}; the night will wait it out"
            raise ProviderError(f"LLM endpoint {self.endpoint}: {message}", retryable=False) from None
        return f"LLM endpoint {self.endpoint}: answers, model {self.model}" + (f" ({note})" if note else "")

    def _ping(self, timeout: float) -> str | None:
        """The cheapest call that shows the endpoint answers and takes the key; a note or None."""
        raise NotImplementedError

    @abstractmethod
    def _complete(self, prompt: Prompt) -> Completion:
        """One provider call; SDK exceptions propagate (they are classified by the retry loop)."""

    def propose(self, ctx: Context) -> Reply:
        return self.complete(build_prompt(ctx, env=self.env))

    def reflect(self, ctx: Context) -> Reply:
        """Ask for the research notes rewritten from the history (the reply is the new notes)."""
        return self.complete(build_reflection_prompt(ctx, env=self.env))

    def complete(self, prompt: Prompt) -> Reply:
        """One call with retries and backoff, priced; only ProviderError escapes."""
        done = call_with_retries(
            lambda: self._call(prompt),
            policy=self.policy,
            status=self.status,
            key_env_var=self.key_env_var,
            log=self.notify,
        )
        usage = Usage(done.input_tokens, done.output_tokens, done.cache_read_tokens, done.cache_write_tokens)
        provider, api_url = self.price_source()
        cost = self.prices.cost(done.model or self.model, usage, provider=provider, api_url=api_url)
        return Reply(
            text=done.text,
            model=done.model or self.model,
            input_tokens=done.input_tokens,
            output_tokens=done.output_tokens,
            cost_usd=cost,
            meta={"prompt_chars": prompt.chars, "stop_reason": done.stop_reason},
        )

    def _call(self, prompt: Prompt) -> Completion:
        """One checked call whose errors are classified and carry no secret: a gateway may echo the key."""
        try:
            return self._checked(prompt)
        except Exception as exc:  # noqa: BLE001 - classified here so the message can be redacted
            err = classify(exc, key_env_var=self.key_env_var)
            message = redact(str(err), self.env)
            if not err.retryable:  # it ends the night: say where
                message += f" (endpoint {self.endpoint})"
            raise ProviderError(
                message, retryable=err.retryable, retry_after=err.retry_after, reached=err.reached
            ) from exc

    def _checked(self, prompt: Prompt) -> Completion:
        done = self._complete(prompt)
        if done.text.strip():
            self._empty_streak = 0
            return done
        self._empty_streak += 1
        if self._empty_streak <= MAX_EMPTY_RETRIES:
            # An empty answer is a malformed response, not a proposal: ask again, a few times;
            # after that it goes to the loop, whose bounded bad-edit path logs and moves on.
            raise ProviderError(
                f"provider returned an empty reply (stop reason {done.stop_reason or 'unknown'})",
                retryable=True,
            )
        self._empty_streak = 0
        return done


def as_int(value: object) -> int:
    """A token count from a usage object that may be missing or malformed."""
    try:
        return max(0, int(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0
