"""The learning night with the real Anthropic SDK against the loopback fake: concurrent requests that
differ and name what is in flight, a model that repeats itself, and the reflection on the notes."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from support.fakes.llm_servers import FakeLLM, prompt_text, reply

from harness.commands.main import main
from tests.conftest import Toy


def _edit(description: str, search: str, replace: str, extra: str = "") -> str:
    return (
        f"Description: {description}\n{extra}experiments/toy/train.py\n<<<<<<< SEARCH\n{search}\n=======\n"
        f"{replace}\n>>>>>>> REPLACE\n"
    )


def _night(monkeypatch: pytest.MonkeyPatch, fake: FakeLLM, tag: str, *args: str, **env: str) -> int:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-memory-0123456789")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.anthropic_url)
    monkeypatch.setenv("AUTORESEARCH_RETRY_BASE", "0.01")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return main(["run", "--device", "cpu", "--tag", tag, "--agent", "claude", *args])


def test_concurrent_requests_differ_and_a_repeating_model_is_refused_without_a_run(
    toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    toy = toy_experiment
    same = _edit("raise the constant", "VAL_BPB = 1.000000", "VAL_BPB = 1.100000")
    gate = threading.Barrier(3, timeout=20)
    seen = []
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Any:
        with lock:
            seen.append(body)
            first = len(seen) <= 3
        if first:
            gate.wait()  # the three first requests are in flight together
        return reply(same, delay=0.2)

    with FakeLLM(responder=respond) as fake:
        code = _night(monkeypatch, fake, "dup", "--max-experiments", "3", AUTORESEARCH_PIPELINE_DEPTH="3")
        prompts = [prompt_text(r.body) for r in fake.completion_requests()]
    assert code == 0

    first = [prompt_text(body) for body in seen[:3]]  # made together, while the baseline ran
    assert len(set(first)) == 3  # never identical
    assert sorted(re.search(r"You are request (\d) of 3", p).group(1) for p in first) == ["1", "2", "3"]  # type: ignore[union-attr]
    for p in first:
        assert "# Being tried right now" in p and "- #0 running: baseline" in p

    rows = toy.tsv("dup")
    assert [r["status"] for r in rows] == ["keep", "discard", "discard", "discard"]
    assert [r["reason"] for r in rows[2:]] == ["duplicate of #1", "duplicate of #1"]
    assert all(r["val_bpb"] == "1.100000" and r["commit"] == "0000000" for r in rows[2:])
    runs = sorted(p.name for p in (toy.repo / "results" / "dup" / "runs").glob("*.log"))
    assert not [name for name in runs if name.startswith(("2.", "3."))]  # no GPU time for repeats
    # Each repeat went back with the earlier proposal named, up to the agent's 3 retries.
    sent_back = [p for p in prompts if "Your change is the same as" in p]
    assert len(sent_back) == 6
    # Each repeat's row carries the cost of all its retries: 4 calls of 1000 input tokens.
    assert [r["input_tokens"] for r in rows[2:]] == ["4000", "4000"]


def test_reflection_rewrites_the_notes_and_they_reach_the_prompt(
    toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    toy = toy_experiment
    edits = iter(
        [
            _edit("raise", "VAL_BPB = 1.000000", "VAL_BPB = 1.100000", "Note: raising VAL_BPB hurts\n"),
            _edit("more steps", "STEPS = 4", "STEPS = 5"),
            _edit("fewer steps", "STEPS = 4", "STEPS = 3"),
            _edit("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        ]
    )
    reflections: list[str] = []

    def respond(body: dict[str, Any]) -> Any:
        text = prompt_text(body)
        if "Rewrite the research notes from the history" in text:
            reflections.append(text)
            return reply(
                "```markdown\n## Insights\n- REFLECTED: steps do not matter (#2, #3)\n```", input_tokens=3000
            )
        return reply(next(edits), delay=1.0)  # slower than the reflection, which is collected first

    with FakeLLM(responder=respond) as fake:
        code = _night(
            monkeypatch, fake, "refl", "--max-experiments", "4", "--reflect-every", "2",
            AUTORESEARCH_PIPELINE_DEPTH="0",
        )  # fmt: skip
        prompts = [prompt_text(r.body) for r in fake.completion_requests()]
    assert code == 0
    assert len(reflections) == 1  # after #2; none after the last attempt
    assert "#1 (discard, 1.100000): raising VAL_BPB hurts" in reflections[0]  # the Note: line reached it
    notes = (toy.repo / "results" / "refl" / "notes.md").read_text()
    assert "REFLECTED: steps do not matter" in notes and "raising VAL_BPB hurts" not in notes
    proposals = [p for p in prompts if "Rewrite the research notes" not in p]
    assert "REFLECTED: steps do not matter" in proposals[-1]  # the notes reach every later prompt
    rows = toy.tsv("refl")
    # The reflection's tokens went on the next row: 1000 per proposal plus its 3000.
    assert sorted(int(r["input_tokens"] or 0) for r in rows[1:]) == [1000, 1000, 1000, 4000]


def test_a_models_sweep_request_runs_as_claude_plus_search_rows(
    toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    toy = toy_experiment
    answers = iter(["Description: tune it\nSweep: VAL_BPB=[0.5, 0.9]\nTrials: 2\n"])
    with FakeLLM(responder=lambda body: reply(next(answers))) as fake:
        code = _night(monkeypatch, fake, "sw", "--max-experiments", "2", AUTORESEARCH_PIPELINE_DEPTH="0")
        assert len(fake.completion_requests()) == 1  # the trials cost no LLM call
    assert code == 0
    rows = toy.tsv("sw")
    assert [r["agent"] for r in rows[1:]] == ["claude+search", "claude+search"]
    assert rows[1]["input_tokens"] == "1000" and rows[2]["input_tokens"] == ""  # the request's cost, once
