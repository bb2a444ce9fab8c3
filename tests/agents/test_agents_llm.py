"""ClaudeAgent and OpenAIAgent through the REAL anthropic / openai SDKs against loopback servers.

Each test scripts what the fake provider answers (tests/fakes/llm_servers.py): replies,
injected 429 with retry-after, 500, 529 overloaded, slow and malformed answers. Retry
sleeps are tiny (RetryPolicy base 1 ms) so the file runs in seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from support.fakes.llm_servers import (
    FakeLLM,
    error,
    malformed,
    overloaded,
    prompt_text,
    reply,
    slow,
    system_text,
)

from harness.agents.base import Context
from harness.agents.claude import ClaudeAgent
from harness.agents.cost import PriceTable, Usage
from harness.agents.llm import CallOptions, LLMAgent
from harness.agents.openai_compat import OpenAIAgent
from harness.agents.retry import ProviderStatus, RetryPolicy, call_with_retries, classify, retry_after_seconds
from harness.errors import AgentError, ProviderError
from tests.conftest import Toy, git

KEY = "sk-ant-test-0123456789abcdef"
OKEY = "sk-openai-test-0123456789abcdef"
GOOD = (
    "Description: deeper model\nexperiments/toy/train.py\n<<<<<<< SEARCH\nDEPTH = 2\n=======\nDEPTH = 3\n"
    ">>>>>>> REPLACE\n"
)


class Sleeps:
    """Records requested sleeps and sleeps 1 ms, so backoff is observable but fast."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def ctx() -> Context:
    return Context(
        program="You are a careful ML researcher. PROGRAM-MARKER",
        files={"experiments/toy/train.py": "DEPTH = 2\nprint('---')\n"},
        history=[],
        budget_seconds=30,
        device="cpu",
        hardware="2-core test box",
    )


@pytest.fixture()
def server() -> Iterator[FakeLLM]:
    with FakeLLM() as fake:
        yield fake


def make(kind: str, server: FakeLLM, sleeps: Sleeps | None = None, **env: str) -> LLMAgent:
    policy = RetryPolicy(base=0.001, cap=0.01, jitter=0.1, pause_after=0.0, sleep=sleeps or Sleeps())
    options = CallOptions(timeout=5.0)
    if kind == "claude":
        base = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": server.anthropic_url}
        return ClaudeAgent(None, env={**base, **env}, policy=policy, options=options)
    base = {"OPENAI_API_KEY": OKEY, "OPENAI_BASE_URL": server.openai_url}
    return OpenAIAgent("fake-model", env={**base, **env}, policy=policy, options=options)


KINDS = ["claude", "openai"]


# --------------------------------------------------------------------------- happy path


@pytest.mark.parametrize("kind", KINDS)
def test_reply_tokens_and_cost(server: FakeLLM, kind: str) -> None:
    server.push(reply(GOOD, input_tokens=2_000_000, output_tokens=100_000))
    agent = make(kind, server)
    agent.prices = PriceTable({agent.model: (3.0, 15.0)})
    out = agent.propose(ctx())
    assert out.text == GOOD
    assert (out.input_tokens, out.output_tokens) == (2_000_000, 100_000)
    assert out.cost_usd == pytest.approx(2 * 3.0 + 0.1 * 15.0)
    assert out.model == agent.model
    body = server.completion_requests()[0].body
    assert "PROGRAM-MARKER" in system_text(body)
    assert "<<<<<<< SEARCH" in system_text(body)  # the reply format
    user = prompt_text(body)
    assert "DEPTH = 2" in user and "2-core test box" in user and "30 s" in user


def test_claude_sends_key_as_header_and_default_model(server: FakeLLM) -> None:
    server.push(reply(GOOD))
    agent = make("claude", server)
    agent.propose(ctx())
    req = server.completion_requests()[0]
    assert req.path == "/v1/messages"
    sent = {k.lower(): v for k, v in req.headers.items()}
    assert KEY in (sent.get("x-api-key", ""), sent.get("authorization", "").removeprefix("Bearer "))
    assert req.body["model"] == "claude-sonnet-5-5"
    assert req.body["max_tokens"] > 0


def test_openai_uses_bearer_key_and_max_tokens_for_compatible_servers(server: FakeLLM) -> None:
    server.push(reply(GOOD))
    make("openai", server).propose(ctx())
    req = server.completion_requests()[0]
    assert req.path == "/v1/chat/completions"
    assert {k.lower(): v for k, v in req.headers.items()}["authorization"] == f"Bearer {OKEY}"
    assert "max_tokens" in req.body and "max_completion_tokens" not in req.body
    assert [m["role"] for m in req.body["messages"]] == ["system", "user"]


def test_openai_local_server_needs_no_key_and_discovers_its_model(server: FakeLLM) -> None:
    server.models = ["qwen3-coder-local"]
    server.push(reply(GOOD))
    policy = RetryPolicy(base=0.001, sleep=Sleeps())
    agent = OpenAIAgent(None, env={"OPENAI_BASE_URL": server.openai_url}, policy=policy)
    out = agent.propose(ctx())
    assert out.model == "qwen3-coder-local"
    assert out.cost_usd == 0.0  # local models are free
    assert server.completion_requests()[0].body["model"] == "qwen3-coder-local"


def test_openai_several_models_without_model_flag_is_a_clear_error(server: FakeLLM) -> None:
    server.models = ["a", "b"]
    agent = OpenAIAgent(None, env={"OPENAI_BASE_URL": server.openai_url}, policy=RetryPolicy(sleep=Sleeps()))
    with pytest.raises(ProviderError, match="--model") as err:
        agent.propose(ctx())
    assert not err.value.retryable


# --------------------------------------------------------------------------- keys


def test_missing_keys_name_the_variable() -> None:
    with pytest.raises(AgentError, match="ANTHROPIC_API_KEY"):
        ClaudeAgent(None, env={})
    with pytest.raises(AgentError, match="OPENAI_API_KEY"):
        OpenAIAgent(None, env={})


def test_claude_accepts_auth_token(server: FakeLLM) -> None:
    server.push(reply(GOOD))
    env = {"ANTHROPIC_AUTH_TOKEN": "tok-0123456789", "ANTHROPIC_BASE_URL": server.anthropic_url}
    ClaudeAgent(None, env=env, policy=RetryPolicy(sleep=Sleeps())).propose(ctx())
    headers = {k.lower(): v for k, v in server.completion_requests()[0].headers.items()}
    assert headers["authorization"] == "Bearer tok-0123456789"


@pytest.mark.parametrize("kind", KINDS)
def test_key_never_in_prompt_even_if_the_files_contain_it(server: FakeLLM, kind: str) -> None:
    server.push(reply(GOOD))
    agent = make(kind, server)
    c = ctx()
    secret = KEY if kind == "claude" else OKEY
    c.files["experiments/toy/train.py"] += f"# leaked: {secret}\n"
    agent.propose(c)
    body = server.completion_requests()[0].body
    assert secret not in prompt_text(body) and secret not in system_text(body)
    assert "[redacted]" in prompt_text(body)


# --------------------------------------------------------------------------- resilience


@pytest.mark.parametrize("kind", KINDS)
def test_429_retry_after_is_honoured(server: FakeLLM, kind: str) -> None:
    sleeps = Sleeps()
    server.push(error(429, retry_after=0.05), reply(GOOD))
    out = make(kind, server, sleeps).propose(ctx())
    assert out.text == GOOD
    assert len(sleeps.calls) == 1
    assert sleeps.calls[0] >= 0.05  # at least what the server asked for, not the 1 ms backoff


@pytest.mark.parametrize("kind", KINDS)
def test_500_529_malformed_are_retried_with_growing_backoff(server: FakeLLM, kind: str) -> None:
    sleeps = Sleeps()
    server.push(error(500), overloaded(), malformed(), malformed("[]"), error(503), reply(GOOD))
    agent = make(kind, server, sleeps)
    agent.policy.cap = 10.0
    agent.policy.jitter = 0.0
    out = agent.propose(ctx())
    assert out.text == GOOD
    assert sleeps.calls == pytest.approx([0.001, 0.002, 0.004, 0.008, 0.016])
    assert len(server.completion_requests()) == 6
    assert agent.status.state == "ok"


@pytest.mark.parametrize("kind", KINDS)
def test_slow_reply_times_out_and_is_retried(server: FakeLLM, kind: str) -> None:
    sleeps = Sleeps()
    server.push(slow(GOOD, delay=1.5), reply(GOOD))
    agent = make(kind, server, sleeps)
    agent.options = CallOptions(timeout=0.3)
    assert agent.propose(ctx()).text == GOOD
    assert len(sleeps.calls) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_slow_reply_within_timeout_is_fine(server: FakeLLM, kind: str) -> None:
    server.push(slow(GOOD, delay=0.3))
    assert make(kind, server).propose(ctx()).text == GOOD


@pytest.mark.parametrize("kind", KINDS)
def test_connection_refused_is_retryable(kind: str) -> None:
    with FakeLLM() as dead:
        url_a, url_o = dead.anthropic_url, dead.openai_url
    sleeps = Sleeps()
    policy = RetryPolicy(base=0.001, max_attempts=3, sleep=sleeps)
    agent: LLMAgent
    if kind == "claude":
        agent = ClaudeAgent(None, env={"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": url_a}, policy=policy)
    else:
        agent = OpenAIAgent("m", env={"OPENAI_API_KEY": OKEY, "OPENAI_BASE_URL": url_o}, policy=policy)
    with pytest.raises(ProviderError, match="gave up after 3") as err:
        agent.propose(ctx())
    assert err.value.retryable
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("status", [400, 401, 404])
def test_client_errors_are_not_retried(server: FakeLLM, kind: str, status: int) -> None:
    sleeps = Sleeps()
    server.push(error(status), reply(GOOD))
    with pytest.raises(ProviderError) as err:
        make(kind, server, sleeps).propose(ctx())
    assert not err.value.retryable
    assert sleeps.calls == []
    assert KEY not in str(err.value) and OKEY not in str(err.value)


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_echoed_by_the_provider_never_reaches_messages(server: FakeLLM, kind: str) -> None:
    secret = KEY if kind == "claude" else OKEY
    server.push(
        error(500, message=f"upstream rejected key {secret}"), error(401, message=f"bad key {secret}")
    )
    agent = make(kind, server)
    shown: list[str] = []
    agent.notify = shown.append
    with pytest.raises(ProviderError) as err:
        agent.propose(ctx())
    assert not err.value.retryable and "bad key [redacted]" in str(err.value)
    assert len(shown) == 1 and "[redacted]" in shown[0]
    assert all(secret not in text for text in [str(err.value), *shown, agent.status.message])


@pytest.mark.parametrize("kind", KINDS)
def test_empty_reply_is_retried_then_handed_on(server: FakeLLM, kind: str) -> None:
    sleeps = Sleeps()
    server.push(reply(""), reply(GOOD))
    assert make(kind, server, sleeps).propose(ctx()).text == GOOD
    server.push(*(reply("") for _ in range(4)))
    assert make(kind, server, sleeps).propose(ctx()).text == ""  # bounded: the loop's bad-edit path takes it


def test_long_outage_pauses_and_resumes_by_itself(server: FakeLLM) -> None:
    seen: list[str] = []
    agent = make("claude", server)
    agent.policy.pause_after = 0.0

    def sleep(seconds: float) -> None:
        seen.append(agent.status.state + "|" + agent.status.line())

    agent.policy.sleep = sleep
    server.push(*(overloaded() for _ in range(5)), reply(GOOD))
    assert agent.propose(ctx()).text == GOOD
    assert len(seen) == 5
    assert all(s.startswith("paused|LLM PAUSED") for s in seen)
    assert "5 failed calls" in seen[-1]
    assert agent.status.state == "ok" and agent.status.line() == ""


# --------------------------------------------------------------------------- retry unit parts


def test_retry_after_parsing() -> None:
    assert retry_after_seconds({"retry-after": "7"}) == 7.0
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after": "999999"}) == 3600.0
    assert retry_after_seconds(None) is None


def test_policy_delay_backoff_and_cap() -> None:
    policy = RetryPolicy(base=1.0, cap=8.0, jitter=0.0)
    assert [policy.delay(i, None) for i in range(5)] == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert policy.delay(0, 30.0) == 30.0
    jittered = RetryPolicy(base=1.0, jitter=0.5)
    values = {round(jittered.delay(3, None), 6) for _ in range(50)}
    assert len(values) > 1 and all(4.0 <= v <= 12.0 for v in values)
    # A long outage: retry number 2000 still waits the cap (2.0**2000 would overflow).
    assert policy.delay(2000, None) == 8.0


def test_classify_plain_exceptions() -> None:
    assert classify(TimeoutError("x")).retryable
    assert classify(ConnectionResetError("x")).retryable
    assert classify(ValueError("bad json")).retryable  # malformed: try again


def test_keyboard_interrupt_is_not_swallowed() -> None:
    def call() -> Any:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_retries(call, policy=RetryPolicy(sleep=Sleeps()), status=ProviderStatus())


# --------------------------------------------------------------------------- end to end through the CLI

TOY_REL = "experiments/toy/train.py"


def edit(description: str, search: str, replace: str) -> str:
    return f"Description: {description}\n```\n{TOY_REL}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n```\n"


def responder_for(replies: list[str], fix: str | None = None) -> Any:
    """Answers the next scripted reply in order; a request asking to fix a crash gets `fix`."""
    queue = list(replies)

    def respond(body: dict[str, Any]) -> Any:
        if fix is not None and "crashed: fix it" in prompt_text(body):
            return reply(fix)
        if not queue:
            return error(400, message="test script exhausted")
        return reply(queue.pop(0))

    return respond


def run_cli_subprocess(repo: Any, env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(env_extra)
    env.setdefault("AUTORESEARCH_RETRY_BASE", "0.01")
    env.setdefault("AUTORESEARCH_PIPELINE_DEPTH", "1")
    return subprocess.run(
        [sys.executable, "-m", "harness.commands.main", "run", "--device", "cpu", *args],
        cwd=repo, env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip


def all_text_under(root: Any) -> str:
    chunks = []
    for path in root.rglob("*"):
        if path.is_file() and ".git" not in path.parts[-3:]:
            chunks.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(chunks)


# Wholesale reads of os.environ are refused by the integrity checks, so the train file prints
# every variable a key could hide in by name, plus PYTHONPATH to show the print ran.
PRINT_ENV = (
    'print("ENV", [os.environ.get(k) for k in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", '
    '"OPENAI_API_KEY", "ANTHROPIC_BASE_URL")], os.environ.get("PYTHONPATH"))'
)


def test_claude_end_to_end_commits_rows_repair_cost_and_no_key_anywhere(toy_experiment: Toy) -> None:
    toy = toy_experiment
    replies = [
        edit("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        edit("print the environment", 'MODE = "ok"', 'MODE = "ok"\n' + PRINT_ENV),
        edit("use a helper that does not exist", "STEPS = 4", "STEPS = helper_steps()"),
    ]
    fix = edit("define the step count again", "STEPS = helper_steps()", "STEPS = 4\nVAL_BPB = 0.850000")
    with FakeLLM([error(429, retry_after=0.01), overloaded()], responder=responder_for(replies, fix)) as fake:
        env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.anthropic_url}
        out = run_cli_subprocess(toy.repo, env, "--tag", "c1", "--agent", "claude", "--max-experiments", "4")
        assert out.returncode == 0, out.stdout + out.stderr
        requests = fake.completion_requests()

    rows = toy.tsv("c1")
    assert [r["description"] for r in rows] == [
        "baseline",
        "lower the constant",
        "print the environment",
        "use a helper that does not exist",
        "fix: define the step count again",
    ]
    assert [r["status"] for r in rows] == ["keep", "keep", "discard", "crash", "keep"]
    assert "NameError" in rows[3]["reason"]
    assert rows[4]["val_bpb"] == "0.850000"
    assert all(r["agent"] == "claude" and r["model"] == "claude-sonnet-5-5" for r in rows[1:])
    # 1000 input and 200 output tokens per call at $2/$10 per million: $0.004 a call.
    assert [r["cost_usd"] for r in rows[2:]] == ["0.0040", "0.0040", "0.0040"]
    assert rows[1]["input_tokens"] == "1000" and rows[1]["output_tokens"] == "200"
    assert "in total" in out.stdout and "$0.0160 in total" in out.stdout
    # The kept edits are commits on the branch, the fix carries the crashed change and its repair.
    log = git(toy.repo, "log", "--format=%s", "autoresearch/c1").splitlines()
    assert log == ["fix: define the step count again", "lower the constant", "initial"]
    assert "STEPS = 4\nVAL_BPB = 0.850000" in git(toy.repo, "show", f"autoresearch/c1:{TOY_REL}")
    # The fix request carried the crash log tail.
    fix_prompt = next(prompt_text(r.body) for r in requests if "crashed: fix it" in prompt_text(r.body))
    assert "NameError: name 'helper_steps' is not defined" in fix_prompt
    # The retries were shown (429 then 529) and did not cost a row.
    assert "rate limited" in out.stdout and "overloaded" in out.stdout
    # Secrets: the train file printed its environment, and the key is nowhere.
    env_log = (toy.repo / "results" / "c1" / "runs" / "2.log").read_text()
    assert "ENV [None, None, None, None] " in env_log and str(toy.repo) in env_log
    assert KEY not in env_log
    assert KEY not in all_text_under(toy.repo / "results")
    assert KEY not in git(toy.repo, "log", "-p", "--all")
    assert KEY not in out.stdout + out.stderr
    assert all(KEY not in json.dumps(r.body) for r in requests)


def test_openai_end_to_end_with_base_url_and_max_cost(toy_experiment: Toy) -> None:
    toy = toy_experiment
    replies = [
        edit("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        # Made against the baseline while the first edit ran; re-applied to the new best.
        edit("more steps", "STEPS = 4", "STEPS = 5"),
        edit("never asked: the budget is spent", "STEPS = 4", "STEPS = 6"),
    ]
    with FakeLLM([error(500), malformed()], responder=responder_for(replies), models=["local-coder"]) as fake:
        env = {
            "OPENAI_BASE_URL": fake.openai_url,
            "OPENAI_API_KEY": OKEY,
            "AUTORESEARCH_PRICES": '{"local-coder": [500, 0]}',  # $0.50 per 1000-token prompt
        }
        out = run_cli_subprocess(toy.repo, env, "--tag", "o1", "--agent", "openai", "--max-cost", "0.9")
        assert out.returncode == 0, out.stdout + out.stderr
        posted = len(fake.completion_requests())
    rows = toy.tsv("o1")
    assert [r["status"] for r in rows] == ["keep", "keep", "discard"], out.stdout
    assert [r["model"] for r in rows[1:]] == ["local-coder", "local-coder"]
    assert [r["cost_usd"] for r in rows[1:]] == ["0.5000", "0.5000"]
    assert "--max-cost" in out.stdout
    assert posted == 4  # 500, malformed, then two replies: no call after the budget was spent
    assert git(toy.repo, "log", "--format=%s", "autoresearch/o1").splitlines() == [
        "lower the constant",
        "initial",
    ]
    assert OKEY not in all_text_under(toy.repo / "results") + out.stdout + out.stderr


def test_missing_key_is_a_clear_cli_error(toy_experiment: Toy) -> None:
    out = run_cli_subprocess(toy_experiment.repo, {}, "--tag", "k1", "--agent", "claude")
    assert out.returncode == 2
    assert "ANTHROPIC_API_KEY" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


# --------------------------------------------------------------------------- prices


def test_prices_from_genai_prices_by_provider_with_overrides_on_top() -> None:
    table = PriceTable.load()
    assert table.lookup("claude-sonnet-5-5", provider="anthropic") == (2.0, 10.0)
    assert table.lookup("claude-sonnet-4-5-20250929", provider="anthropic") == (3.0, 15.0)  # dated id
    assert table.lookup("anthropic/claude-opus-5-5", provider="anthropic") == (4.0, 20.0)  # gateway prefix
    assert table.lookup("gpt-5-2025-08-07", provider="openai") == (1.25, 10.0)
    assert table.lookup("gpt-5.5", provider="openai") != table.lookup("gpt-5", provider="openai")
    # A local server's model is free, also when a hosted provider lists a model of that name.
    assert table.lookup("qwen3-coder", api_url="http://127.0.0.1:8000/v1") is None
    assert table.lookup("gpt-4o", api_url="http://127.0.0.1:8000/v1") is None
    assert table.lookup("gpt-4o", api_url="https://api.openai.com/v1") == (2.5, 10.0)
    assert table.cost("qwen3-coder", Usage(10**6, 10**6), api_url="http://127.0.0.1:8000/v1") == 0.0
    assert table.cost("gpt-6.1-sol", Usage(100_000, 10_000), provider="openai") == pytest.approx(0.2 + 0.1)
    # Cache reads cost a fraction of the input rate, not the full rate.
    cached = table.cost(
        "claude-sonnet-5-5", Usage(100_000, 0, cache_read_tokens=100_000), provider="anthropic"
    )
    assert 0 < cached <= 0.2 * table.cost("claude-sonnet-5-5", Usage(100_000, 0), provider="anthropic")
    overridden = PriceTable.load({"my-model": (1.0, 2.0), "gpt-5": (9.0, 9.0)})
    assert overridden.lookup("my-model") == (1.0, 2.0)
    assert overridden.lookup("gpt-5-2025-08-07", provider="openai") == (9.0, 9.0)
    assert overridden.lookup("gpt-5.5", provider="openai") != (9.0, 9.0)  # a prefix counts up to a separator
    assert overridden.lookup("claude-sonnet-5-5", provider="anthropic") == (2.0, 10.0)  # the rest stays


@pytest.mark.parametrize("kind", KINDS)
def test_cached_input_is_priced_at_the_cache_rate(server: FakeLLM, kind: str) -> None:
    server.push(reply(GOOD, input_tokens=100_000, output_tokens=0, cached_tokens=80_000))
    agent = make(kind, server)
    agent.model = "claude-sonnet-5-5" if kind == "claude" else "gpt-4o"
    if kind == "openai":
        agent.base_url = "https://api.openai.com/v1"  # priced as OpenAI itself
    out = agent.propose(ctx())
    assert out.input_tokens == 100_000  # the TSV counts every input token
    provider = "anthropic" if kind == "claude" else "openai"
    split = agent.prices.cost(agent.model, Usage(100_000, 0, cache_read_tokens=80_000), provider=provider)
    full = agent.prices.cost(agent.model, Usage(100_000, 0), provider=provider)
    assert out.cost_usd == pytest.approx(split) and split < 0.7 * full


def test_from_settings_takes_the_knobs(toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch) -> None:
    from harness.agents import create_agent
    from harness.settings import resolve

    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    env = {
        "AUTORESEARCH_LLM_TIMEOUT": "30",
        "AUTORESEARCH_LLM_MAX_TOKENS": "4000",
        "AUTORESEARCH_RETRY_BASE": "0.01",
        "AUTORESEARCH_RETRY_CAP": "0.5",
        "AUTORESEARCH_RETRY_PAUSE_AFTER": "1",
        "AUTORESEARCH_RETRY_MAX_ATTEMPTS": "4",
        "AUTORESEARCH_PRICES": '{"local-coder": [5, 6]}',
    }
    settings = resolve(tag="t", device="cpu", agent="openai", model="local-coder", env=env)
    agent = create_agent(settings.agent, settings=settings)
    assert isinstance(agent, OpenAIAgent) and agent.model == "local-coder"
    assert (agent.options.timeout, agent.options.max_tokens) == (30.0, 4000)
    policy = agent.policy
    assert (policy.base, policy.cap, policy.pause_after, policy.max_attempts) == (0.01, 0.5, 1.0, 4)
    assert agent.prices.lookup("local-coder") == (5.0, 6.0)
