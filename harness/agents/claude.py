"""ClaudeAgent: proposals from Anthropic's Messages API through the `anthropic` SDK.

The key comes from ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN for a bearer-token
gateway) and nowhere else; ANTHROPIC_BASE_URL points the SDK at a gateway or a loopback
test server. The SDK's own retries are off (max_retries=0): `harness.agents.retry` owns
the policy. program.md plus the reply format is the system text; one user message holds
the rest of the prompt (see harness.agents.prompt).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from harness.agents.llm import Completion, LLMAgent, as_int
from harness.agents.prompt import Prompt
from harness.errors import AgentError

DEFAULT_MODEL = "claude-sonnet-5-5"  # the current Sonnet: strong at code, $2/$10 per MTok


class ClaudeAgent(LLMAgent):
    name: ClassVar[str] = "claude"
    key_env_var: ClassVar[str | None] = "ANTHROPIC_API_KEY"
    default_model: ClassVar[str] = DEFAULT_MODEL
    default_endpoint: ClassVar[str] = "https://api.anthropic.com"

    def __init__(
        self, model: str | None = None, *, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model, env=env, **kwargs)
        import anthropic  # lazily: the offline agents must not need the SDK importable

        api_key = self.env.get("ANTHROPIC_API_KEY", "").strip()
        auth_token = self.env.get("ANTHROPIC_AUTH_TOKEN", "").strip()
        if not api_key and not auth_token:
            raise AgentError(
                "--agent claude needs an Anthropic API key: export ANTHROPIC_API_KEY=... "
                "(or ANTHROPIC_AUTH_TOKEN for a gateway), or run with --agent openai / --agent search"
            )
        credentials: dict[str, str] = {"api_key": api_key} if api_key else {"auth_token": auth_token}
        base_url = self.env.get("ANTHROPIC_BASE_URL", "").strip() or None
        self.base_url = base_url
        self._client = anthropic.Anthropic(
            **credentials,  # type: ignore[arg-type]
            base_url=base_url,
            timeout=self.options.timeout,
            max_retries=0,
        )

    def _ping(self, timeout: float) -> str | None:
        """The model list: it needs the key and costs nothing. A gateway without one (404, 405,
        501) has still answered."""
        import anthropic

        try:
            page = self._client.with_options(timeout=timeout).models.list(limit=100)
        except anthropic.APIStatusError as exc:
            if exc.status_code in (404, 405, 501):
                return None
            raise
        ids = [str(getattr(m, "id", "")) for m in getattr(page, "data", None) or []]
        if ids and not any(i == self.model or i.startswith(self.model + "-") for i in ids):
            return f"note: {self.model} is not in its model list: {', '.join(ids[:8])}"
        return None

    def _complete(self, prompt: Prompt) -> Completion:
        message = self._client.messages.create(
            model=self.model,
            max_tokens=self.options.max_tokens,
            system=prompt.system,
            messages=[{"role": "user", "content": prompt.user}],
            timeout=self.options.timeout,
        )
        # Read defensively: a gateway may hand back a body the SDK did not validate.
        parts = getattr(message, "content", None) or []
        text = "".join(
            str(getattr(part, "text", "") or "") for part in parts if getattr(part, "type", "") == "text"
        )
        usage = getattr(message, "usage", None)
        cache_read = as_int(getattr(usage, "cache_read_input_tokens", 0))
        cache_write = as_int(getattr(usage, "cache_creation_input_tokens", 0))
        return Completion(
            text=text,
            model=str(getattr(message, "model", "") or self.model),
            input_tokens=as_int(getattr(usage, "input_tokens", 0)) + cache_read + cache_write,
            output_tokens=as_int(getattr(usage, "output_tokens", 0)),
            stop_reason=str(getattr(message, "stop_reason", "") or ""),
            cache_read_tokens=cache_read,
            cache_write_tokens=cache_write,
        )

    def price_source(self) -> tuple[str | None, str | None]:
        return "anthropic", None  # also through a gateway: the models are Anthropic's
