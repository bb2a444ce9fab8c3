"""The offline agents (replay, search) and the agent registry, without a loop."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from harness.agents import agent_class
from harness.agents.base import Context
from harness.agents.replay import ReplayAgent, load_replies
from harness.agents.search import SearchAgent, eval_text, search_space
from harness.detect import detect_agent
from harness.edits import apply_reply, parse_reply
from harness.errors import AgentError, ConfigError
from harness.store.ledger import Row
from tests.conftest import PROJECT

SOURCE = """\
import os
from prepare import MAX_SEQ_LEN

DEPTH = 8  # blocks
TOTAL_BATCH_SIZE = 2**19  # tokens per step
HIDDEN = 3 * 100
MATRIX_LR = 0.04
ADAM_EPS = 1e-10
WARMDOWN_RATIO = 0.5
ROPE_BASE = 10_000.0
WARMUP_RATIO = 0.0
SEED = 1337
EVAL_BATCH_SIZE = 64
USE_X = True
BETAS = (0.8, 0.95)
NAME = "gpt"
SHIFT = -3
WINDOW = MAX_SEQ_LEN // 2
lowercase = 5

if DEPTH > 4:
    INSIDE_IF = 2.0
"""
PATH = "experiments/gpt/train.py"


def ctx(files: dict[str, str], history: list[Row] | None = None) -> Context:
    return Context(program="", files=files, history=history or [])


def row(desc: str, status: str, metric: float, agent: str) -> Row:
    return Row("abcdef0", metric if status != "crash" else 0.0, 0.0, status, desc, {"agent": agent})


# --- replay -----------------------------------------------------------------------------------


def test_replay_reads_in_order_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"reply": "one"}) + "\n\n" + json.dumps({"reply": "two"}) + "\n")
    agent = ReplayAgent.from_file(path)
    assert [agent.propose(ctx({})).text for _ in range(2)] == ["one", "two"]  # type: ignore[union-attr]
    assert agent.propose(ctx({})) is None
    assert agent.edit_retries == 0


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('{"reply": "ok"}\n{"reply": 3}\n', "line 2"),
        ('{"reply": "ok"}\n{"reply": "ok"}\n[1, 2]\n', "line 3"),
        ("not json\n", "line 1: not valid JSON"),
    ],
)
def test_replay_malformed_line_names_it(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(text)
    with pytest.raises(AgentError, match=needle) as err:
        load_replies(path)
    assert str(path) in str(err.value)


def test_replay_empty_file_and_resume_skip(tmp_path: Path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("")
    assert ReplayAgent.from_file(path).propose(ctx({})) is None
    path.write_text("".join(json.dumps({"reply": f"r{i}"}) + "\n" for i in range(4)))
    history = [
        row("baseline", "keep", 1.0, "replay"),
        row("a", "keep", 0.9, "replay"),
        row("b", "crash", 0.0, "replay"),  # bad edits and interrupted runs used their reply too
        row("from another agent", "discard", 1.1, "search"),
    ]
    agent = ReplayAgent.from_file(path)
    first = agent.propose(ctx({}, history))
    assert first is not None and first.text == "r2" and first.meta == {"index": 2}
    # Later calls go on from the agent's own counter (the history may lag behind when pipelined).
    second = agent.propose(ctx({}, history))
    assert second is not None and second.text == "r3"
    assert agent.propose(ctx({}, history)) is None


# --- registry ---------------------------------------------------------------------------------


def test_registry_and_auto() -> None:
    assert agent_class("search") is SearchAgent
    assert agent_class("replay:/x.jsonl") is ReplayAgent
    with pytest.raises(ConfigError):
        agent_class("gpt5")
    assert detect_agent({})[0] == "search"
    assert detect_agent({"OPENAI_API_KEY": "x"})[0] == "openai"
    assert detect_agent({"ANTHROPIC_API_KEY": "x", "OPENAI_API_KEY": "y"})[0] == "claude"


# --- search -----------------------------------------------------------------------------------


def test_search_space_reads_uppercase_numeric_constants() -> None:
    space = {p.name: p for p in search_space(SOURCE)}
    assert set(space) == {
        "DEPTH",
        "TOTAL_BATCH_SIZE",
        "HIDDEN",
        "MATRIX_LR",
        "ADAM_EPS",
        "WARMDOWN_RATIO",
        "ROPE_BASE",
    }
    assert space["DEPTH"].kind == "pow2" and (space["DEPTH"].low, space["DEPTH"].high) == (1, 5)
    assert space["TOTAL_BATCH_SIZE"].kind == "pow2" and space["TOTAL_BATCH_SIZE"].pow_style
    assert space["HIDDEN"].kind == "int" and (space["HIDDEN"].low, space["HIDDEN"].high) == (150, 600)
    lr = space["MATRIX_LR"]
    assert lr.kind == "float" and math.isclose(lr.low, 0.01) and math.isclose(lr.high, 0.16)
    assert space["WARMDOWN_RATIO"].high < 1.0  # a fraction stays a fraction


def test_search_proposals_apply_and_keep_kinds() -> None:
    agent = SearchAgent(PATH, SOURCE, tag="night1")
    source = SOURCE
    for _ in range(8):
        reply = agent.propose(ctx({PATH: source}))
        assert reply is not None and reply.text.startswith("Description: search: ")
        parsed = parse_reply(reply.text)
        assert 1 <= len(parsed.edits) <= 3
        new = apply_reply(parsed, {PATH: source}, [PATH])[PATH]
        values = {
            n.targets[0].id: n.value  # type: ignore[attr-defined]
            for n in ast.parse(new).body
            if isinstance(n, ast.Assign)
        }
        depth = eval_text(ast.unparse(values["DEPTH"]))
        assert depth == int(depth) and int(depth) & (int(depth) - 1) == 0
        assert ast.unparse(values["TOTAL_BATCH_SIZE"]).startswith("2 ** ")
        assert (
            isinstance(values["HIDDEN"], ast.Constant)
            and isinstance(values["HIDDEN"].value, int)
            or (ast.unparse(values["HIDDEN"]) == "3 * 100")
        )
        assert "SEED = 1337" in new and "EVAL_BATCH_SIZE = 64" in new
        assert "# blocks" in new  # comments survive
        agent.observe(reply, Row("abcdef0", 1.0, 0.0, "discard", parsed.description, {}))
        source = new  # as if kept


def test_search_is_deterministic_given_the_tag() -> None:
    def run(tag: str) -> list[str]:
        agent = SearchAgent(PATH, SOURCE, tag=tag)
        out = []
        for i in range(4):
            reply = agent.propose(ctx({PATH: SOURCE}))
            assert reply is not None
            out.append(reply.text)
            agent.observe(reply, Row("abcdef0", 1.0 - 0.01 * i, 0.0, "discard", "x", {}))
        return out

    assert run("a") == run("a")
    assert run("a") != run("b")


def test_search_rebuilds_its_trials_from_the_tsv() -> None:
    history = [
        row("baseline", "keep", 1.0, "search"),
        row("search: MATRIX_LR 0.04 -> 0.0561, DEPTH 8 -> 16", "keep", 0.9, "search"),
        row("search: TOTAL_BATCH_SIZE 2**19 -> 2**18", "crash", 0.0, "search"),
        row("search: NOT_A_PARAM 1 -> 2", "discard", 1.2, "search"),
        row("hand-written change", "discard", 1.1, "replay"),
    ]
    agent = SearchAgent(PATH, SOURCE, tag="r")
    assert agent.propose(ctx({PATH: SOURCE}, history)) is not None
    done = [t for t in agent.study.trials if t.state.name in ("COMPLETE", "FAIL")]
    assert len(done) == 2
    complete = next(t for t in done if t.state.name == "COMPLETE")
    assert complete.params == {"MATRIX_LR": pytest.approx(0.0561), "DEPTH": 4} and complete.value == 0.9
    assert next(t for t in done if t.state.name == "FAIL").params == {"TOTAL_BATCH_SIZE": 18}


def test_search_on_the_real_train_file() -> None:
    train = PROJECT / "experiments" / "gpt" / "train.py"
    if not train.exists():
        pytest.skip("experiments/gpt/train.py does not exist yet")
    names = {p.name for p in search_space(train.read_text())}
    assert {"MATRIX_LR", "TOTAL_BATCH_SIZE", "WEIGHT_DECAY"} <= names
    assert not {"SEED", "EVAL_BATCH_SIZE"} & names


def test_search_refuses_a_file_without_constants() -> None:
    with pytest.raises(AgentError, match="no UPPERCASE"):
        SearchAgent(PATH, "x = 1\n", tag="t")


def test_search_tells_a_pruned_run_as_pruned_never_as_its_zero_metric() -> None:
    agent = SearchAgent(PATH, SOURCE, tag="p")
    reply = agent.propose(ctx({PATH: SOURCE}))
    assert reply is not None
    pruned = Row("abcdef0", 0.0, 0.0, "discard", "x", {"reason": "pruned"})
    agent.observe(reply, pruned)
    assert [t.state.name for t in agent.study.trials] == ["PRUNED"] and agent.study.trials[0].value is None
    # and from the TSV on --resume
    again = SearchAgent(PATH, SOURCE, tag="p")
    history = [row("baseline", "keep", 1.0, "search"), row("search: DEPTH 8 -> 16", "discard", 0.0, "search")]
    history[1].extra["reason"] = "pruned"
    assert again.propose(ctx({PATH: SOURCE}, history)) is not None
    rebuilt = [t for t in again.study.trials if t.state.name != "RUNNING"]
    assert [t.state.name for t in rebuilt] == ["PRUNED"] and rebuilt[0].value is None
