"""OpenAIAgent: proposals from any OpenAI-compatible Chat Completions endpoint (`openai` SDK).

OpenAI itself with OPENAI_API_KEY, or any compatible server — vLLM, Ollama, llama.cpp,
LiteLLM and other gateways — through OPENAI_BASE_URL. Local servers often need no key:
when OPENAI_BASE_URL is set and OPENAI_API_KEY is not, a placeholder is sent. With a
custom base URL and no --model, the server's model list is asked once and its only model
used (vLLM and llama.cpp serve one); with several, the error lists them. The SDK's own
retries are off (max_retries=0): `harness.agents.retry` owns the policy.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, ClassVar

from harness.agents.llm import Completion, LLMAgent, as_int
from harness.agents.prompt import Prompt
from harness.errors import AgentError, ProviderError

DEFAULT_MODEL = "gpt-6.1-sol"  # the current flagship tier, $2/$10 per MTok
NO_KEY_PLACEHOLDER = "no-key-needed"


class OpenAIAgent(LLMAgent):
    name: ClassVar[str] = "openai"
    key_env_var: ClassVar[str | None] = "OPENAI_API_KEY"
    default_model: ClassVar[str] = DEFAULT_MODEL
    default_endpoint: ClassVar[str] = "https://api.openai.com/v1"

    def __init__(
        self, model: str | None = None, *, env: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(model, env=env, **kwargs)
        import openai  # lazily: the offline agents must not need the SDK importable

        api_key = self.env.get("OPENAI_API_KEY", "").strip()
        base_url = self.env.get("OPENAI_BASE_URL", "").strip() or None
        if not api_key and not base_url:
            raise AgentError(
                "--agent openai needs OPENAI_API_KEY (export OPENAI_API_KEY=...), or OPENAI_BASE_URL "
                "pointing at an OpenAI-compatible server (vLLM, Ollama, llama.cpp, a gateway)"
            )
        self.base_url = base_url
        # OpenAI's own API wants max_completion_tokens (reasoning models reject max_tokens);
        # compatible servers universally understand max_tokens.
        self._official = base_url is None or "api.openai.com" in base_url
        # Pick the server's model on first use when none was named for a custom endpoint.
        self._discover = model is None and not self._official
        self._model_lock = threading.Lock()
        self._client = openai.OpenAI(
            api_key=api_key or NO_KEY_PLACEHOLDER,
            base_url=base_url,
            timeout=self.options.timeout,
            max_retries=0,
        )

    def _resolve_model(self) -> None:
        with self._model_lock:
            if self._discover:
                self._pick_model([str(getattr(m, "id", "")) for m in self._client.models.list()])

    def _pick_model(self, ids: list[str]) -> None:
        """Use the server's only model (no --model was given for a custom endpoint)."""
        ids = [i for i in ids if i]
        if len(ids) != 1:
            offered = ", ".join(ids[:20]) or "none"
            raise ProviderError(
                f"the server at {self.base_url} offers {len(ids)} models ({offered}); choose one with --model",
                retryable=False,
            )
        self.model = ids[0]
        self._discover = False

    def _ping(self, timeout: float) -> str | None:
        """The model list (and the model, when none was named); a server without one (404, 405,
        501) gets a 1-token completion instead, which needs a model to be named."""
        import openai

        client = self._client.with_options(timeout=timeout)
        try:
            ids = [str(getattr(m, "id", "")) for m in client.models.list()]
        except openai.APIStatusError as exc:
            if exc.status_code not in (404, 405, 501):
                raise
            if self._discover:
                raise ProviderError(
                    f"the server at {self.base_url} has no model list (HTTP {exc.status_code}); "
                    "name its model with --model",
                    retryable=False,
                ) from None
            client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": "ping"}], max_tokens=1
            )
            return None
        with self._model_lock:
            if self._discover:
                self._pick_model(ids)
                return None
        if ids and self.model not in ids:
            return f"note: {self.model} is not in its model list: {', '.join(i for i in ids[:8] if i)}"
        return None

    def _complete(self, prompt: Prompt) -> Completion:
        self._resolve_model()
        messages: list[Any] = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]
        if self._official:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_completion_tokens=self.options.max_tokens,
                timeout=self.options.timeout,
            )
        else:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=self.options.max_tokens,
                timeout=self.options.timeout,
            )
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        content = getattr(message, "content", None)
        usage = getattr(response, "usage", None)
        cached = as_int(getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", 0))
        return Completion(
            text=content if isinstance(content, str) else "",
            model=str(getattr(response, "model", "") or self.model),
            input_tokens=as_int(getattr(usage, "prompt_tokens", 0)),
            output_tokens=as_int(getattr(usage, "completion_tokens", 0)),
            stop_reason=str(getattr(choices[0], "finish_reason", "") or "") if choices else "",
            cache_read_tokens=cached,
        )

    def price_source(self) -> tuple[str | None, str | None]:
        return ("openai", None) if self._official else (None, self.base_url)
