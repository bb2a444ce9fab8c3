"""What an LLM call costs: a price table per model and the cost of one call's token usage.

Prices are US dollars per million tokens (input, output). The built-in table covers the
default models of the claude and openai agents and their close relatives; a model is
looked up by the longest table key it starts with (up to a `-`, `:` or `@`), so
"claude-sonnet-4-5-20250929" finds "claude-sonnet-4-5" and "gpt-5.5" does not find "gpt-5". A model not in the table (a local vLLM/Ollama/llama.cpp
server) costs 0.

A person overrides or extends the table with `Settings.prices` (AUTORESEARCH_PRICES: inline
JSON or a .json/.toml file mapping a model prefix to `[input, output]`), e.g.

    AUTORESEARCH_PRICES='{"my-finetune": [0.5, 1.5], "claude-opus-4-5": [5, 25]}'

The loop adds the per-call cost to each row's `cost_usd` and sums the rows for the live view
and `--max-cost`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# USD per million tokens (input, output); list prices as published by the providers.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    # Anthropic
    "claude-fable-5-1": (10.0, 50.0),
    "claude-opus-5-5": (4.0, 20.0),
    "claude-opus-5": (5.0, 25.0),
    "claude-opus-4-8": (5.0, 25.0),
    "claude-opus-4-7": (5.0, 25.0),
    "claude-opus-4-6": (5.0, 25.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-5-5": (2.0, 10.0),
    "claude-sonnet-5": (2.0, 10.0),
    "claude-sonnet-4-6": (3.0, 15.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-haiku-4-5": (1.0, 5.0),
    # OpenAI
    "gpt-6.1-sol": (2.0, 10.0),
    "gpt-6-sol": (2.0, 10.0),
    "gpt-5.6-sol": (4.0, 20.0),
    "gpt-5.6": (4.0, 20.0),  # the alias routes to gpt-5.6-sol
    "gpt-5.5": (5.0, 30.0),
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.4),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.4, 1.6),
    "gpt-4o": (2.5, 10.0),
    "gpt-4o-mini": (0.15, 0.6),
    "o3": (2.0, 8.0),
    "o4-mini": (1.1, 4.4),
}


@dataclass(frozen=True)
class PriceTable:
    """Model prefix -> (input, output) USD per million tokens."""

    prices: Mapping[str, tuple[float, float]]

    @classmethod
    def load(cls, overrides: Mapping[str, tuple[float, float]] | None = None) -> PriceTable:
        """The built-in table with `overrides` (a person's prices, `Settings.prices`) on top."""
        return cls({**DEFAULT_PRICES, **(overrides or {})})

    def lookup(self, model: str) -> tuple[float, float] | None:
        """The price of `model` by its longest matching prefix, or None if unknown."""
        model = model.strip().lower()
        # Gateways prefix the provider ("anthropic/claude-sonnet-4-5"); price the model itself.
        model = model.rsplit("/", 1)[-1]
        best: str | None = None
        for key in self.prices:
            k = key.lower()
            # A prefix counts only up to a separator: "gpt-5" prices "gpt-5-2025-08-07", not "gpt-5.5".
            if not (model == k or (model.startswith(k) and model[len(k)] in "-:@")):
                continue
            if best is None or len(k) > len(best):
                best = key
        return None if best is None else self.prices[best]

    def cost(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """USD for one call; 0.0 for a model with no known price (e.g. a local server)."""
        price = self.lookup(model)
        if price is None:
            return 0.0
        return (input_tokens * price[0] + output_tokens * price[1]) / 1_000_000
