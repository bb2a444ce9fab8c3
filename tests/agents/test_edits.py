"""Tests for harness.edits: parsing the reply format and applying edits to mutable files."""

from __future__ import annotations

import pytest

from harness.edits import Edit, ParsedReply, apply_reply, parse_reply
from harness.errors import EditError

TRAIN = "experiments/gpt/train.py"
MUTABLE = [TRAIN]

SOURCE = '''\
"""Toy train file."""

import math

# ---------------------------------------------------------------------------
# Hyperparameters

TOTAL_BATCH_SIZE = 2**19
DEPTH = 8
LR = 0.04


def schedule(step):
    if step < 10:
        return step / 10
    return math.cos(step)


def main():
    for step in range(3):
        print(schedule(step))
    print("---")
    print("val_bpb:          0.997900")


if __name__ == "__main__":
    main()
'''

FILES = {TRAIN: SOURCE}


def block(search: str, replace: str, path: str = TRAIN) -> str:
    return f"{path}\n<<<<<<< SEARCH\n{search}=======\n{replace}>>>>>>> REPLACE\n"


# --------------------------------------------------------------------------- parse


def test_parse_design_example() -> None:
    text = "Description: halve the total batch size for more optimizer steps\n" + block(
        "TOTAL_BATCH_SIZE = 2**19\n", "TOTAL_BATCH_SIZE = 2**18\n"
    )
    parsed = parse_reply(text)
    assert parsed.description == "halve the total batch size for more optimizer steps"
    assert parsed.edits == [Edit(TRAIN, "TOTAL_BATCH_SIZE = 2**19\n", "TOTAL_BATCH_SIZE = 2**18\n")]
    assert parsed.whole_file is None


def test_parse_fenced_blocks_with_prose_and_several_edits() -> None:
    text = (
        "I think deeper is better.\n\n**Description:** deeper\tmodel, lower LR\n\n"
        "```python\n" + block("DEPTH = 8\n", "DEPTH = 12\n") + "```\n\nAnd the LR:\n\n"
        f"```\n{TRAIN}\n<<<<<<< SEARCH\nLR = 0.04\n=======\nLR = 0.02\n>>>>>>> REPLACE\n```\n"
    )
    parsed = parse_reply(text)
    assert parsed.description == "deeper model, lower LR"
    assert [e.path for e in parsed.edits] == [TRAIN, TRAIN]
    assert parsed.edits[1].replace == "LR = 0.02\n"


def test_parse_path_in_backticks_and_missing_path_reuses_previous() -> None:
    text = (
        "Description: x\n`train.py`:\n<<<<<<< SEARCH\nDEPTH = 8\n=======\nDEPTH = 9\n>>>>>>> REPLACE\n"
        "<<<<<<< SEARCH\nLR = 0.04\n=======\nLR = 0.05\n>>>>>>> REPLACE\n"
    )
    parsed = parse_reply(text)
    assert [e.path for e in parsed.edits] == ["train.py", "train.py"]


def test_parse_description_is_one_line_without_tabs_and_bounded() -> None:
    parsed = parse_reply("description:\t" + "a\tb " * 200 + "\n" + block("DEPTH = 8\n", "DEPTH = 9\n"))
    assert "\t" not in parsed.description and "\n" not in parsed.description
    assert parsed.description.startswith("a b a b")
    assert len(parsed.description) <= 200


def test_parse_missing_description_is_feedback() -> None:
    with pytest.raises(EditError) as err:
        parse_reply(block("DEPTH = 8\n", "DEPTH = 9\n"))
    assert "Description:" in err.value.feedback


@pytest.mark.parametrize(
    "body, why",
    [
        ("<<<<<<< SEARCH\nDEPTH = 8\n>>>>>>> REPLACE\n", "======="),
        ("<<<<<<< SEARCH\nDEPTH = 8\n=======\nDEPTH = 9\n", "REPLACE"),
        ("<<<<<<< SEARCH\nDEPTH = 8\n", "======="),
    ],
)
def test_parse_malformed_blocks(body: str, why: str) -> None:
    with pytest.raises(EditError) as err:
        parse_reply(f"Description: d\n{TRAIN}\n{body}")
    assert why in err.value.feedback
    assert "<<<<<<< SEARCH" in err.value.feedback  # the format is restated for the model


def test_parse_whole_file_reply() -> None:
    new = SOURCE.replace("DEPTH = 8", "DEPTH = 10")
    parsed = parse_reply(f"Description: deeper\n```python\n{new}```\n")
    assert parsed.whole_file == new
    assert parsed.edits == []
    assert parsed.whole_file_path is None
    out = apply_reply(parsed, FILES, MUTABLE)
    assert out == {TRAIN: new}


def test_parse_whole_file_reply_with_path_before_fence() -> None:
    parsed = parse_reply(f"Description: d\n{TRAIN}\n```python\nx = 1\n```\n")
    assert parsed.whole_file_path == TRAIN
    parsed = parse_reply(f"Description: d\n```python {TRAIN}\nx = 1\n```\n")
    assert parsed.whole_file_path == TRAIN


def test_parse_no_edit_and_two_fences_rejected() -> None:
    with pytest.raises(EditError, match="no SEARCH/REPLACE"):
        parse_reply("Description: I would try a larger model.\n")
    with pytest.raises(EditError) as err:
        parse_reply("Description: d\n```\nx = 1\n```\ntext\n```\ny = 2\n```\n")
    assert "2 code blocks" in err.value.feedback


# --------------------------------------------------------------------------- apply


def apply(text: str, files: dict[str, str] | None = None, mutable: list[str] | None = None) -> dict[str, str]:
    return apply_reply(parse_reply(text), files or FILES, mutable or MUTABLE)


def test_apply_exact() -> None:
    out = apply("Description: d\n" + block("DEPTH = 8\nLR = 0.04\n", "DEPTH = 4\nLR = 0.08\n"))
    assert out[TRAIN] == SOURCE.replace("DEPTH = 8\nLR = 0.04", "DEPTH = 4\nLR = 0.08")


def test_apply_several_blocks_in_order_on_one_file() -> None:
    text = "Description: d\n" + block("DEPTH = 8\n", "DEPTH = 4\n") + block("DEPTH = 4\n", "DEPTH = 5\n")
    assert "DEPTH = 5\n" in apply(text)[TRAIN]


def test_apply_relative_path_is_resolved_to_the_mutable_file() -> None:
    out = apply("Description: d\n" + block("DEPTH = 8\n", "DEPTH = 4\n", path="./train.py"))
    assert list(out) == [TRAIN]


def test_apply_whitespace_tolerant_reindents_replacement() -> None:
    # The model dropped the function's indentation and added a blank line at the end.
    search = "if step < 10:\n    return step / 10\n\n"
    replace = "if step < 20:\n    return step / 20\n"
    out = apply("Description: d\n" + block(search, replace))[TRAIN]
    assert "    if step < 20:\n        return step / 20\n    return math.cos(step)\n" in out


def test_apply_whitespace_tolerant_trailing_spaces() -> None:
    files = {TRAIN: "A = 1   \nB = 2\n"}
    out = apply("Description: d\n" + block("A = 1\nB = 2\n", "A = 3\nB = 2\n"), files)
    assert out[TRAIN] == "A = 3\nB = 2\n"


def test_apply_keeps_crlf_and_missing_final_newline() -> None:
    files = {TRAIN: "A = 1\r\nB = 2"}
    out = apply("Description: d\n" + block("B = 2\n", "B = 3\n"), files)
    assert out[TRAIN] == "A = 1\r\nB = 3"


def test_apply_not_found_gives_nearest_lines() -> None:
    with pytest.raises(EditError) as err:
        apply("Description: d\n" + block("TOTAL_BATCH_SIZE = 2**20\nDEPTH = 8\n", "DEPTH = 9\n"))
    fb = err.value.feedback
    assert "Did you mean" in fb
    assert "TOTAL_BATCH_SIZE = 2**19" in fb  # the real line, quoted for the model
    assert "lines 8-9" in fb


def test_apply_not_found_nothing_similar() -> None:
    with pytest.raises(EditError) as err:
        apply("Description: d\n" + block("class Transformer(nn.Module):\n", "class T:\n"))
    assert "resembles" in err.value.feedback


def test_apply_is_all_or_nothing_and_reports_every_failure() -> None:
    text = (
        "Description: d\n"
        + block("DEPTH = 8\n", "DEPTH = 4\n")
        + block("LR = 0.5\n", "LR = 1\n")
        + block("nonsense = 3\n", "x\n")
    )
    with pytest.raises(EditError) as err:
        apply(text)
    assert "2 of 3" in str(err.value)
    assert err.value.feedback.count("did not match") == 2
    assert FILES[TRAIN] == SOURCE  # input untouched


def test_apply_ambiguous_match_is_refused() -> None:
    files = {TRAIN: "x = 1\ny = 2\nx = 1\n"}
    with pytest.raises(EditError) as err:
        apply("Description: d\n" + block("x = 1\n", "x = 3\n"), files)
    assert "matches 2 places" in err.value.feedback
    assert "1-1, 3-3" in err.value.feedback


@pytest.mark.parametrize(
    "path", ["prepare/__init__.py", "constants.py", "../train.py", "program.md", "/etc/passwd"]
)
def test_apply_refuses_immutable_paths(path: str) -> None:
    with pytest.raises(EditError) as err:
        apply("Description: d\n" + block("DEPTH = 8\n", "DEPTH = 4\n", path=path))
    assert TRAIN in err.value.feedback  # tells the model what it may edit
    assert "not editable" in err.value.feedback


def test_apply_missing_path_with_several_mutable_files() -> None:
    files = {TRAIN: SOURCE, "experiments/gpt/model.py": "W = 1\n"}
    parsed = ParsedReply("d", [Edit("", "W = 1\n", "W = 2\n")], None)
    with pytest.raises(EditError, match="names no file"):
        apply_reply(parsed, files, list(files))
    parsed.edits[0].path = "model.py"
    assert apply_reply(parsed, files, list(files)) == {"experiments/gpt/model.py": "W = 2\n"}


def test_apply_noop_is_refused() -> None:
    with pytest.raises(EditError, match="changes nothing"):
        apply("Description: d\n" + block("DEPTH = 8\n", "DEPTH = 8\n"))
    with pytest.raises(EditError, match="changes nothing"):
        apply(f"Description: d\n```python\n{SOURCE}```\n")
    # Only trailing whitespace or the final newline would differ: still nothing to run.
    with pytest.raises(EditError, match="changes nothing"):
        apply("Description: d\n" + block("A = 1\n", "A = 1\n"), {TRAIN: "A = 1   \nB = 2\n"})
    with pytest.raises(EditError, match="changes nothing"):
        apply("Description: d\n```python\nA = 1\nB = 2\n```\n", {TRAIN: "A = 1\r\nB = 2"})


def test_apply_syntax_error_is_refused_with_location() -> None:
    with pytest.raises(EditError) as err:
        apply("Description: d\n" + block("DEPTH = 8\n", "DEPTH = (8\n"))
    assert "not valid Python" in err.value.feedback
    assert "DEPTH = (8" in err.value.feedback


def test_apply_empty_search_refused_on_nonempty_file() -> None:
    with pytest.raises(EditError, match="empty SEARCH"):
        apply("Description: d\n" + block("", "X = 1\n"))
    assert apply("Description: d\n" + block("", "X = 1\n"), {TRAIN: ""}) == {TRAIN: "X = 1\n"}


def test_apply_whole_file_fragment_refused() -> None:
    with pytest.raises(EditError, match="has 1 lines, the file has 47"):
        apply("Description: d\n```python\nDEPTH = 12\n```\n", {TRAIN: SOURCE + "X = 1\n" * 20})


def test_apply_non_python_file_is_not_ast_checked() -> None:
    files = {"experiments/k/config.yaml": "a: 1\n"}
    out = apply(
        "Description: d\n" + block("a: 1\n", "a: (\n", path="experiments/k/config.yaml"), files, list(files)
    )
    assert out == {"experiments/k/config.yaml": "a: (\n"}


def test_apply_deletion() -> None:
    out = apply("Description: drop LR\n" + block("DEPTH = 8\nLR = 0.04\n", "DEPTH = 8\n"))
    assert "LR = 0.04" not in out[TRAIN]


def test_parse_optional_note_and_parent_lines_outside_the_blocks() -> None:
    text = (
        "Description: warmup on top of #7\n**Note:** warmup matters more at small batch\nParent: #7\n"
        "experiments/gpt/train.py\n<<<<<<< SEARCH\nNote: = 1\n=======\nNote: = 2\n>>>>>>> REPLACE\n"
    )
    parsed = parse_reply(text)
    assert (parsed.note, parsed.parent) == ("warmup matters more at small batch", 7)
    assert parsed.edits[0].path == "experiments/gpt/train.py" and parsed.sweep is None
    plain = parse_reply("Description: d\nx.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n")
    assert (plain.note, plain.parent) == ("", None)


def test_parse_a_sweep_request_and_its_errors() -> None:
    parsed = parse_reply(
        "Description: tune lrs\nSweep: LR=[1e-4, 1e-2] log; WARMUP=[0, 200] int\nTrials: 8\n"
    )
    assert (parsed.sweep, parsed.trials, parsed.edits, parsed.whole_file) == (
        "LR=[1e-4, 1e-2] log; WARMUP=[0, 200] int",
        8,
        [],
        None,
    )
    with pytest.raises(EditError, match="both a sweep request and an edit"):
        parse_reply("Description: d\nSweep: A=[1, 2]\nx.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n")
    with pytest.raises(EditError, match="Trials"):
        parse_reply("Description: d\nSweep: A=[1, 2]\nTrials: many\n")
    with pytest.raises(EditError, match="names no attempt") as err:
        parse_reply(
            "Description: d\nParent: the last one\nx.py\n<<<<<<< SEARCH\na\n=======\nb\n>>>>>>> REPLACE\n"
        )
    assert "Parent: #12" in err.value.feedback
