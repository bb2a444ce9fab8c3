"""Property-based fuzzing of the reply parser and of replies going through a real night.

For any text, `parse_reply` + `apply_reply` either give new contents of the mutable files only
or raise an EditError (a bad edit, fed back to the model); nothing else. Through the loop, any
sequence of replies gives one row per reply after the baseline, numbered without gaps, with no
control character in the TSV, and the branch at the best kept commit.

Bounded for CI (AUTORESEARCH_FUZZ_EXAMPLES, default 200 for the parser and 6 nights);
derandomized, so a CI run is reproducible. Raise the bound locally to search longer.
"""

from __future__ import annotations

import itertools
import json
import os

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.commands.main import main
from harness.edits import apply_reply, parse_reply
from harness.errors import EditError
from tests.conftest import Toy, git

EXAMPLES = int(os.environ.get("AUTORESEARCH_FUZZ_EXAMPLES", "200"))
NIGHTS = max(2, EXAMPLES // 30)
PATH = "experiments/toy/train.py"
FILE = "VAL_BPB = 1.000000\nMODE = 'ok'\nprint('x')\n"

MARKERS = ["<<<<<<< SEARCH", "=======", ">>>>>>> REPLACE", "```", "```python", PATH, "Description:"]
_lines = st.one_of(
    st.sampled_from(MARKERS),
    st.sampled_from(FILE.splitlines()),
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=20).map(lambda s: "Description: " + s),
)
REPLIES = st.one_of(
    st.text(max_size=400),
    st.lists(_lines, max_size=14).map("\n".join),
)


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None)
@given(text=REPLIES)
def test_any_reply_applies_or_is_a_bad_edit(text: str) -> None:
    try:
        parsed = parse_reply(text)
        files = apply_reply(parsed, {PATH: FILE}, [PATH])
    except EditError as exc:
        assert str(exc) and exc.feedback
        return
    assert "\n" not in parsed.description and "\t" not in parsed.description and parsed.description
    assert set(files) <= {PATH} and all(isinstance(v, str) for v in files.values())


def _edit(description: str, value: float) -> str:
    return (
        f"Description: {description}\n{PATH}\n<<<<<<< SEARCH\nVAL_BPB = 1.000000\n=======\n"
        f"VAL_BPB = {value:.6f}\n>>>>>>> REPLACE\n"
    )


_TAGS = itertools.count()
NIGHT_REPLIES = st.lists(
    st.one_of(
        st.builds(_edit, st.text(min_size=1, max_size=300), st.floats(0.1, 2.0)),
        REPLIES,
    ),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=NIGHTS,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(replies=NIGHT_REPLIES)
def test_any_replies_through_a_night(toy_experiment: Toy, replies: list[str]) -> None:
    toy = toy_experiment
    tag = f"fz{next(_TAGS)}"  # one tag per example: the fixture's repo is shared by all of them
    path = toy.repo.parent / f"{tag}.jsonl"
    path.write_text("".join(json.dumps({"reply": r}) + "\n" for r in replies))
    assert (
        main(["run", "--device", "cpu", "--tag", tag, "--agent", f"replay:{path}", "--baseline-runs", "1"])
        == 0
    )
    raw = (toy.repo / "results" / f"{tag}.tsv").read_text()
    assert not any(ord(ch) < 32 and ch not in "\t\n" for ch in raw)
    rows = toy.tsv(tag)
    assert [r["n"] for r in rows] == [str(i) for i in range(len(replies) + 1)]
    last_keep = [r for r in rows if r["status"] == "keep"][-1]
    assert git(toy.repo, "rev-parse", "--short=7", f"autoresearch/{tag}") == last_keep["commit"]
    assert all(len(r["description"]) <= 200 for r in rows)
