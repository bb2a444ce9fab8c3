"""The agent registry: names on the command line -> Agent classes, imported lazily.

Built-ins are registered like plugins: a name maps to "module:Class", and the module is
imported only when that agent is asked for, so `--agent search` never imports the LLM SDKs.
Every class implements `harness.agents.base.Agent` and has
`from_settings(settings) -> Agent`. `replay:FILE` is the replay agent reading FILE. The names
`--agent` accepts are `harness.options.AGENTS` (settings check them before any agent is built;
`--agent auto` is `harness.detect.detect_agent`).

The agents layer: the Agent interface, the providers (claude, openai_compat), the offline
agents (search, replay), the prompt, retries and prices.
May import: harness.edits, harness.integrity (same layer), harness.settings, harness.detect,
harness.store, harness.errors, harness.credentials. Never harness.night, harness.review or
harness.commands.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from harness.errors import AgentError, ConfigError
from harness.options import AGENTS

if TYPE_CHECKING:
    from harness.agents.base import Agent
    from harness.settings import Settings

REGISTRY: dict[str, str] = {
    "claude": "harness.agents.claude:ClaudeAgent",
    "openai": "harness.agents.openai_compat:OpenAIAgent",
    "search": "harness.agents.search:SearchAgent",
    "replay": "harness.agents.replay:ReplayAgent",
}


def agent_class(spec: str) -> type[Agent]:
    """The class behind `spec` ("claude", "search", "replay:FILE", ...), imported now."""
    name = "replay" if spec.startswith("replay:") else spec
    target = REGISTRY.get(name)
    if target is None:
        raise ConfigError(f"--agent {spec!r}: expected auto, {', '.join(AGENTS)} or replay:FILE")
    module_name, _, cls_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AgentError(f"agent {name!r} is not available: {exc}") from exc
    cls: type[Agent] = getattr(module, cls_name)
    return cls


def create_agent(spec: str, *, settings: Settings) -> Agent:
    """Build the agent named by `spec` from the resolved settings."""
    return agent_class(spec).from_settings(settings)
