"""harness.agents.sweep: a model's sweep request, checked against the file, run by TPE."""

from __future__ import annotations

import pytest

from harness.agents.base import Context
from harness.agents.sweep import MAX_TRIALS, SweepAgent, parse_sweep
from harness.edits import apply_reply, parse_reply
from harness.errors import EditError
from harness.store.ledger import Row

PATH = "experiments/gpt/train.py"
SOURCE = "MATRIX_LR = 0.04\nWARMUP_STEPS = 100\nDEPTH = 8\nNAME = 'x'\n\ndef f():\n    INNER = 3\n"


def spec(text: str, trials: int | None = None):  # type: ignore[no-untyped-def]
    return parse_sweep(text, "tune", {PATH: SOURCE}, trials=trials, default_trials=6)


def test_a_sweep_names_constants_ranges_and_scales() -> None:
    s = spec("MATRIX_LR=[0.01, 0.08] log; WARMUP_STEPS=[0, 300] int; DEPTH = (4, 12)", trials=5)
    lr, warm, depth = s.params
    assert (lr.kind, lr.log, lr.low, lr.high) == ("float", True, 0.01, 0.08)
    assert (warm.kind, warm.log, warm.low, warm.high) == ("int", False, 0, 300)
    assert depth.kind == "int"  # an int constant with whole bounds stays an int
    assert s.trials == 5 and s.path == PATH
    assert spec("MATRIX_LR=[0.01, 0.08]").trials == 6


@pytest.mark.parametrize(
    "text, why",
    [
        ("NOT_THERE=[1, 2]", "not a module-level UPPERCASE constant"),
        ("NAME=[1, 2]", "not a module-level UPPERCASE constant"),
        ("INNER=[1, 2]", "not a module-level UPPERCASE constant"),
        ("MATRIX_LR=[0.08, 0.01]", "empty"),
        ("MATRIX_LR=[0, 0.1] log", "log range must be positive"),
        ("MATRIX_LR=[a, 0.1]", "not a number"),
        ("MATRIX_LR=[0.01, 0.1] cubic", "unknown option"),
        ("MATRIX_LR 0.01 to 0.1", "is not `NAME=[low, high]`"),
        ("DEPTH=[4.2, 4.8] int", "no two whole numbers"),
        ("DEPTH=[1,2]; DEPTH=[3,4]", "named twice"),
    ],
)
def test_a_bad_sweep_goes_back_with_what_is_wrong(text: str, why: str) -> None:
    with pytest.raises(EditError) as err:
        spec(text)
    assert why in str(err.value) and "Sweep: NAME=[low, high]" in err.value.feedback


def test_trials_are_bounded() -> None:
    with pytest.raises(EditError, match=f"between 1 and {MAX_TRIALS}"):
        spec("DEPTH=[4, 12]", trials=MAX_TRIALS + 1)


def test_the_sweep_agent_proposes_k_trials_that_set_its_constants_then_stops() -> None:
    s = spec("MATRIX_LR=[0.01, 0.08] log; DEPTH=[4, 12]", trials=4)
    agent = SweepAgent(s, label="claude+search", seed_text="tag/1", direction="minimize")
    ctx = Context(program="", files={PATH: SOURCE}, history=[])
    seen = []
    for _ in range(4):
        reply = agent.propose(ctx)
        assert reply is not None and reply.agent == "claude+search" and reply.meta["sweep"]
        parsed = parse_reply(reply.text)
        assert parsed.description.startswith("sweep (tune): ")
        new = apply_reply(parsed, {PATH: SOURCE}, [PATH])[PATH]
        seen.append(new)
        agent.observe(reply, Row("x", 1.0, 0, "discard", parsed.description))
        assert "WARMUP_STEPS = 100" in new  # only the sweep's constants move
    assert agent.propose(ctx) is None
    assert len(set(seen)) == 4
