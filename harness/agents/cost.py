"""What an LLM call costs: the maintained `genai-prices` data, under a person's own prices.

Prices come from the `genai-prices` package (a maintained table of providers and models that
ships with its data, so a price lookup needs no network), which prices cache reads and cache
writes at their own rates instead of the full input rate. A model is looked up with the
provider the agent talks to: `anthropic` for the claude agent, `openai` for OpenAI itself, and
for any other OpenAI-compatible endpoint the provider whose API URL it is (a gateway such as
OpenRouter is priced as itself). A model nobody lists (a local vLLM/Ollama/llama.cpp server)
costs 0.

A person overrides or extends the prices with `Settings.prices` (AUTORESEARCH_PRICES or the
config file: inline JSON or a .json/.toml file mapping a model prefix to `[input, output]` USD
per million tokens), e.g.

    AUTORESEARCH_PRICES='{"my-finetune": [0.5, 1.5], "claude-opus-4-5": [5, 25]}'

An override matches a model by the longest key it starts with, up to a `-`, `:` or `@` (so
"gpt-5" prices "gpt-5-2025-08-07" but not "gpt-5.5"), and prices cached input tokens at its
input rate. The loop adds the per-call cost to each row's `cost_usd` and sums the rows for the
live view and `--max-cost`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genai_prices.types import PriceCalculation

MILLION = 1_000_000


@dataclass(frozen=True)
class Usage:
    """The tokens of one call; `input_tokens` counts every input token, cached ones included."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0


@dataclass(frozen=True)
class PriceTable:
    """A person's prices (model prefix -> (input, output) USD per million tokens) over genai-prices."""

    overrides: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def load(cls, overrides: Mapping[str, tuple[float, float]] | None = None) -> PriceTable:
        return cls(dict(overrides or {}))

    def override(self, model: str) -> tuple[float, float] | None:
        """The person's price of `model` by its longest matching prefix, or None."""
        model = _bare(model)
        best: str | None = None
        for key in self.overrides:
            k = key.lower()
            if not (model == k or (model.startswith(k) and model[len(k)] in "-:@")):
                continue
            if best is None or len(k) > len(best):
                best = key
        return None if best is None else self.overrides[best]

    def lookup(
        self, model: str, *, provider: str | None = None, api_url: str | None = None
    ) -> tuple[float, float] | None:
        """(input, output) USD per million tokens of `model`, or None if nobody lists it."""
        price = self.override(model)
        if price is not None:
            return price
        # Priced on a thousand tokens each: a million would reach some models' long-context tier.
        calc = _calc(model, Usage(1000, 1000), provider, api_url)
        return None if calc is None else (float(calc.input_price) * 1000, float(calc.output_price) * 1000)

    def cost(
        self, model: str, usage: Usage, *, provider: str | None = None, api_url: str | None = None
    ) -> float:
        """USD for one call; 0.0 for a model with no known price (e.g. a local server)."""
        price = self.override(model)
        if price is not None:
            return (usage.input_tokens * price[0] + usage.output_tokens * price[1]) / MILLION
        calc = _calc(model, usage, provider, api_url)
        return 0.0 if calc is None else float(calc.total_price)


def _bare(model: str) -> str:
    # Gateways prefix the provider ("anthropic/claude-sonnet-4-5"); price the model itself.
    return model.strip().lower().rsplit("/", 1)[-1]


def _calc(model: str, usage: Usage, provider: str | None, api_url: str | None) -> PriceCalculation | None:
    """genai-prices' calculation, or None when it lists no such provider or model."""
    # Imported on first use: it brings pydantic, and only the LLM agents price anything.
    import genai_prices

    tokens = genai_prices.Usage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=usage.cache_read_tokens or None,
        cache_write_tokens=usage.cache_write_tokens or None,
    )
    try:
        with warnings.catch_warnings():  # it warns when its bundled data is older than a month
            warnings.simplefilter("ignore")
            if provider is not None:
                return genai_prices.calc_price(tokens, _bare(model), provider_id=provider)
            if api_url:
                return genai_prices.calc_price(tokens, _bare(model), provider_api_url=api_url)
            return None  # an unknown endpoint: never guess another provider's price for its model
    except LookupError:
        return None
