"""`autoresearch transplant`: another branch's kept commits become replies that harness.edits
applies to this branch's files; the night serves them before asking its agent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.review_repos import git, seed

from harness.commands.main import main
from harness.edits import apply_reply, parse_reply

TRAIN = "experiments/toy/train.py"


def commit_edit(repo: Path, path: str, old: str, new: str, message: str) -> None:
    file = repo / path
    text = file.read_text()
    assert old in text
    file.write_text(text.replace(old, new, 1))
    git(repo, "add", path)
    git(repo, "commit", "-qm", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main; autoresearch/src (another machine's night) and autoresearch/dst (this one's) diverge."""
    repo = seed(tmp_path / "repo")
    git(repo, "checkout", "-q", "-b", "autoresearch/src", "main")
    commit_edit(repo, TRAIN, "LEARNING_RATE = 0.01", "LEARNING_RATE = 0.005", "lower the learning rate")
    commit_edit(repo, "README.md", "toy", "toy, edited", "docs only: not a mutable file")
    commit_edit(
        repo, TRAIN, "WARMUP = 0\n", "WARMUP = 0\nWEIGHT_DECAY = 0.1  # new knob\n", "add weight decay"
    )
    # One commit touching a mutable and an immutable file: only the mutable part travels.
    (repo / "experiments" / "toy" / "experiment.toml").write_text(
        (repo / "experiments" / "toy" / "experiment.toml").read_text() + "# comment\n"
    )
    git(repo, "add", "experiments/toy/experiment.toml")
    commit_edit(repo, TRAIN, "    loss = LEARNING_RATE", "    loss = 0.9 * LEARNING_RATE", "scale the loss")
    git(repo, "checkout", "-q", "-b", "autoresearch/dst", "main")
    commit_edit(repo, TRAIN, "DEPTH = 4", "DEPTH = 6", "deeper")
    git(repo, "checkout", "-q", "main")
    return repo


def files_at(repo: Path, ref: str) -> dict[str, str]:
    return {TRAIN: git(repo, "show", f"{ref}:{TRAIN}") + "\n"}


def test_transplant_queues_replies_that_apply_to_the_target(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo)
    assert main(["transplant", "--from", "autoresearch/src", "--tag", "dst"]) == 0
    out = capsys.readouterr().out
    assert "queued 3 change(s)" in out and "does not apply" not in out
    queue = repo / "results" / "dst" / "queue.jsonl"
    replies = [json.loads(line)["reply"] for line in queue.read_text().splitlines()]
    assert len(replies) == 3

    parsed = [parse_reply(r) for r in replies]
    assert parsed[0].description.startswith("lower the learning rate (transplant of ")
    assert "autoresearch/src" in parsed[0].description
    assert [p.description.split(" (")[0] for p in parsed] == [
        "lower the learning rate",
        "add weight decay",
        "scale the loss",
    ]
    assert all(e.path == TRAIN for p in parsed for e in p.edits)  # README and experiment.toml stay out

    # Each applies on its own to the target's head, and all in order give both nights' changes.
    files = files_at(repo, "autoresearch/dst")
    for p in parsed:
        apply_reply(p, files_at(repo, "autoresearch/dst"), [TRAIN])
        files = apply_reply(p, files, [TRAIN])
    text = files[TRAIN]
    assert "LEARNING_RATE = 0.005" in text and "WEIGHT_DECAY = 0.1  # new knob" in text
    assert "loss = 0.9 * LEARNING_RATE" in text and "DEPTH = 6" in text  # the target's own change survives

    # Transplanting again appends (the queue is append-only); a dry run prints without queueing.
    assert main(["transplant", "--from", "autoresearch/src", "--tag", "dst", "--dry-run"]) == 0
    assert "<<<<<<< SEARCH" in capsys.readouterr().out
    assert len(queue.read_text().splitlines()) == 3


def test_transplant_bad_input(
    repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(repo)
    assert main(["transplant", "--from", "origin/autoresearch/nope", "--tag", "dst"]) == 2
    assert "unknown ref 'origin/autoresearch/nope'" in capsys.readouterr().err
    assert main(["transplant", "--from", "autoresearch/src", "--tag", "nope"]) == 2
    assert "no branch autoresearch/nope" in capsys.readouterr().err
    assert main(["transplant", "--from", "main", "--tag", "dst"]) == 2  # main kept nothing dst lacks
    assert "nothing queued" in capsys.readouterr().err


def _reply(description: str, search: str, replace: str) -> str:
    return f"Description: {description}\nexperiments/toy/train.py\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def _run(tag: str, replay: Path, *extra: str) -> int:
    return main(["run", "--device", "cpu", "--tag", tag, "--agent", f"replay:{replay}", *extra])


@pytest.mark.usefixtures("clean_env")
def test_transplanted_change_is_run_and_judged_by_the_real_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Night A keeps a change; it is transplanted into night B, whose resumed loop runs and keeps it."""
    toy = Path(__file__).resolve().parents[1] / "toy" / "const"
    repo = tmp_path / "repo"
    (repo / "experiments" / "toy").mkdir(parents=True)
    for name in ("train.py", "experiment.toml"):
        (repo / "experiments" / "toy" / name).write_text((toy / name).read_text())
    (repo / "program.md").write_text((Path(__file__).resolve().parents[2] / "program.md").read_text())
    (repo / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
    git(tmp_path, "init", "-q", "-b", "main", str(repo))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "toy project")
    monkeypatch.chdir(repo)

    night_a = tmp_path / "a.jsonl"
    night_a.write_text(
        json.dumps({"reply": _reply("lower bpb", "VAL_BPB = 1.000000", "VAL_BPB = 0.700000")}) + "\n"
    )
    assert _run("a", night_a) == 0
    night_b = tmp_path / "b.jsonl"
    night_b.write_text(json.dumps({"reply": _reply("more steps", "STEPS = 4", "STEPS = 5")}) + "\n")
    assert _run("b", night_b) == 0
    assert [r.split("\t")[3] for r in (repo / "results" / "b.tsv").read_text().splitlines()[1:]] == [
        "keep",
        "discard",
    ]

    assert main(["transplant", "--from", "autoresearch/a", "--tag", "b"]) == 0
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert _run("b", empty, "--resume") == 0

    rows = [line.split("\t") for line in (repo / "results" / "b.tsv").read_text().splitlines()]
    header, last = rows[0], dict(zip(rows[0], rows[-1], strict=False))
    assert len(rows) == 4 and "agent" in header
    assert last["status"] == "keep" and last["val_bpb"] == "0.700000"
    assert last["description"].startswith("lower bpb (transplant of ")
    assert last["agent"] == "transplant"
    assert "VAL_BPB = 0.700000" in git(repo, "show", "autoresearch/b:experiments/toy/train.py")
    # Served once: a further resume does not run it again.
    assert _run("b", empty, "--resume") == 0
    assert len((repo / "results" / "b.tsv").read_text().splitlines()) == 4
