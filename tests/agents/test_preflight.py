"""Failures found at start: an LLM endpoint that cannot answer stops `run` before the baseline,
and a permanent provider error during the night stops it with one line (real SDKs, loopback fakes)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from support.fakes.llm_servers import FakeLLM, error, reply

from harness.agents.claude import ClaudeAgent
from harness.agents.openai_compat import OpenAIAgent
from harness.agents.retry import RetryPolicy
from harness.errors import ProviderError
from tests.agents.test_agents_llm import KEY, OKEY, edit, responder_for, run_cli_subprocess
from tests.conftest import Toy


def closed_port_url() -> str:
    """A loopback URL nobody listens on (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def nothing_written(repo: Path) -> bool:
    return not (repo / "results").exists() and not (repo / ".autoresearch").exists()


@pytest.mark.slow
def test_unreachable_endpoint_exits_2_within_60_s_naming_the_url(toy_experiment: Toy) -> None:
    url = closed_port_url()
    started = time.monotonic()
    out = run_cli_subprocess(toy_experiment.repo, {"OPENAI_BASE_URL": url}, "--tag", "u", "--agent", "openai",
                             "--model", "m")  # fmt: skip
    took = time.monotonic() - started
    assert out.returncode == 2, out.stdout + out.stderr
    assert took < 60, took
    errors = out.stderr.strip().splitlines()
    assert len(errors) == 1 and f"cannot reach the LLM endpoint {url}" in errors[0]
    assert "Traceback" not in out.stderr and nothing_written(toy_experiment.repo)


def test_preflight_gives_up_after_its_knob(toy_experiment: Toy) -> None:
    url = closed_port_url()
    env = {"OPENAI_BASE_URL": url, "AUTORESEARCH_LLM_PREFLIGHT": "1"}
    out = run_cli_subprocess(toy_experiment.repo, env, "--tag", "u", "--agent", "openai", "--model", "m")
    assert out.returncode == 2 and f"cannot reach the LLM endpoint {url}" in out.stderr
    assert nothing_written(toy_experiment.repo)


def test_no_model_list_and_no_model_named_is_refused_at_start(toy_experiment: Toy) -> None:
    with FakeLLM() as fake:
        fake.models_status = 501
        out = run_cli_subprocess(toy_experiment.repo, {"OPENAI_BASE_URL": fake.openai_url}, "--tag", "n",
                                 "--agent", "openai")  # fmt: skip
    assert out.returncode == 2
    assert "has no model list (HTTP 501); name its model with --model" in out.stderr
    assert nothing_written(toy_experiment.repo)


def test_no_model_list_with_a_model_named_checks_with_one_token(toy_experiment: Toy) -> None:
    replies = [edit("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")]
    with FakeLLM([reply("pong", input_tokens=5, output_tokens=1)], responder=responder_for(replies)) as fake:
        fake.models_status = 501
        env = {"OPENAI_BASE_URL": fake.openai_url}
        out = run_cli_subprocess(toy_experiment.repo, env, "--tag", "m", "--agent", "openai", "--model", "local",
                                 "--max-experiments", "1")  # fmt: skip
        first = fake.completion_requests()[0].body
    assert out.returncode == 0, out.stdout + out.stderr
    assert first["max_tokens"] == 1 and first["model"] == "local"
    assert f"LLM endpoint {fake.openai_url}: answers, model local" in out.stdout
    assert [r["status"] for r in toy_experiment.tsv("m")] == ["keep", "keep"]


@pytest.mark.parametrize("kind", ["claude", "openai"])
def test_a_bad_key_is_refused_at_start(toy_experiment: Toy, kind: str) -> None:
    with FakeLLM() as fake:
        fake.models_status = 401
        if kind == "claude":
            env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.anthropic_url}
        else:
            env = {"OPENAI_API_KEY": OKEY, "OPENAI_BASE_URL": fake.openai_url}
        out = run_cli_subprocess(toy_experiment.repo, env, "--tag", "k", "--agent", kind, "--model", "m")
    assert out.returncode == 2
    assert (
        "refused the credentials (HTTP 401)" in out.stderr and "LLM endpoint http://127.0.0.1:" in out.stderr
    )
    assert KEY not in out.stderr and OKEY not in out.stderr
    assert nothing_written(toy_experiment.repo)


def test_a_busy_endpoint_at_start_is_waited_out(toy_experiment: Toy) -> None:
    fake = FakeLLM()
    fake.models_status = 503
    with fake:
        agent = OpenAIAgent(
            "m", env={"OPENAI_BASE_URL": fake.openai_url}, policy=RetryPolicy(sleep=lambda s: None)
        )
        assert "is there but answered" in agent.preflight()


def test_claude_preflight_reads_the_model_list(toy_experiment: Toy) -> None:
    with FakeLLM(models=["claude-sonnet-5-5-20261001", "claude-haiku-4-5"]) as fake:
        env = {"ANTHROPIC_API_KEY": KEY, "ANTHROPIC_BASE_URL": fake.anthropic_url}
        assert (
            ClaudeAgent(None, env=env).preflight()
            == f"LLM endpoint {fake.anthropic_url}: answers, model claude-sonnet-5-5"
        )
        note = ClaudeAgent("claude-sonnet-9", env=env).preflight()
        assert "claude-sonnet-9 is not in its model list" in note
        assert [r.method for r in fake.requests] == ["GET", "GET"]  # nothing was paid for


def test_a_permanent_error_during_the_night_stops_it_with_one_line(toy_experiment: Toy) -> None:
    with FakeLLM([error(400, message="prompt is too long")]) as fake:
        env = {"OPENAI_BASE_URL": fake.openai_url}
        out = run_cli_subprocess(
            toy_experiment.repo, env, "--tag", "p", "--agent", "openai", "--model", "fake-model"
        )
        posted = len(fake.completion_requests())
    assert out.returncode == 2, out.stdout + out.stderr
    errors = [line for line in out.stderr.splitlines() if line.strip()]
    assert (
        len(errors) == 1 and "rejected the request (HTTP 400)" in errors[0] and fake.openai_url in errors[0]
    )
    assert posted == 1  # not retried
    assert [r["description"] for r in toy_experiment.tsv("p")] == ["baseline"]


def test_classify_501_is_permanent() -> None:
    from harness.agents.retry import classify

    class Fake501(Exception):
        status_code = 501

    assert not classify(Fake501("not implemented")).retryable
    with pytest.raises(ProviderError):
        raise classify(Fake501("x"))
