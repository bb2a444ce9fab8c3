"""`autoresearch publish` between real clones of one bare origin: the branch and its results travel
together, a plain `git fetch` brings both, and the person's checkout and index are never touched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.review_repos import Step, git, night, origin_with_clones, reply, toy_origin

from harness.commands.main import main
from harness.review.publish import publish_if_upstream

STEPS = [
    Step("lower the learning rate", "LEARNING_RATE = 0.01", "LEARNING_RATE = 0.005", "keep", 0.9),
    Step("warmup 10 steps", "", "", "discard", 0.95),
    Step("deeper", "DEPTH = 4", "DEPTH = 6", "keep", 0.85),
]


def cli(monkeypatch: pytest.MonkeyPatch, cwd: Path, *args: str) -> int:
    monkeypatch.chdir(cwd)
    return main(list(args))


def checkout_state(repo: Path) -> tuple[str, str, str, bytes]:
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
        (repo / ".git" / "index").read_bytes(),
    )


def test_publish_pushes_branch_and_results_together(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bare, (a, b) = origin_with_clones(tmp_path, ["a", "b"])
    kept = night(a, "nov21-a", STEPS, hardware="H100")
    (a / "experiments" / "toy" / "notes.txt").write_text("uncommitted work of the person\n")
    before = checkout_state(a)

    assert cli(monkeypatch, a, "publish", "--tag", "nov21-a") == 0
    out = capsys.readouterr().out
    assert "published autoresearch/nov21-a" in out and "autoresearch-results/nov21-a" in out
    assert checkout_state(a) == before  # HEAD, branch, worktree and index untouched

    # The origin has both branches; the results branch holds exactly the ledger and its summary.
    assert git(bare, "rev-parse", "autoresearch/nov21-a") == git(a, "rev-parse", "autoresearch/nov21-a")
    tree = git(bare, "ls-tree", "-r", "--name-only", "autoresearch-results/nov21-a").splitlines()
    assert tree == ["results/nov21-a.json", "results/nov21-a.tsv"]
    assert (
        git(bare, "show", "autoresearch-results/nov21-a:results/nov21-a.tsv") + "\n"
        == (a / "results" / "nov21-a.tsv").read_text()
    )
    summary = json.loads(git(bare, "show", "autoresearch-results/nov21-a:results/nov21-a.json"))
    assert (summary["experiments"], summary["kept"], summary["best"]) == (4, 3, 0.85)

    # A plain fetch on another clone brings both.
    git(b, "fetch", "-q")
    assert git(b, "rev-parse", "--short=7", "origin/autoresearch/nov21-a") == kept[-1]
    assert "0.850000" in git(b, "show", "origin/autoresearch-results/nov21-a:results/nov21-a.tsv")


def test_republish_and_auto_publish_when_upstream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bare, (a,) = origin_with_clones(tmp_path, ["a"])
    night(a, "t", STEPS)
    # No upstream yet: the end of a run publishes nothing.
    assert publish_if_upstream(a, "t") is False
    assert git(bare, "branch", "--list", "autoresearch/*") == ""

    assert cli(monkeypatch, a, "publish", "--tag", "t") == 0
    first = git(a, "rev-parse", "autoresearch-results/t")
    assert git(a, "config", "branch.autoresearch/t.remote") == "origin"

    # Unchanged ledger: no new results commit.
    assert cli(monkeypatch, a, "publish", "--tag", "t") == 0
    assert "results unchanged" in capsys.readouterr().out
    assert git(a, "rev-parse", "autoresearch-results/t") == first

    # The night goes on: one more row; the loop's end-of-run hook publishes it (upstream is set now).
    with (a / "results" / "t.tsv").open("a") as fh:
        fh.write("0000000\t0.000000\t0.0\tcrash\tout of memory\t\n")
    assert publish_if_upstream(a, "t") is True
    second = git(bare, "rev-parse", "autoresearch-results/t")
    assert second != first and git(bare, "rev-parse", f"{second}^") == first
    assert "out of memory" in git(bare, "show", "autoresearch-results/t:results/t.tsv")


def test_publish_bad_input_is_a_clear_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, (a,) = origin_with_clones(tmp_path, ["a"])
    night(a, "t", STEPS)
    assert cli(monkeypatch, a, "publish", "--tag", "nope") == 2
    assert "no branch autoresearch/nope" in capsys.readouterr().err
    assert cli(monkeypatch, a, "publish", "--tag", "t", "--remote", "elsewhere") == 2
    assert "no remote named 'elsewhere'" in capsys.readouterr().err
    git(a, "remote", "remove", "origin")
    assert cli(monkeypatch, a, "publish", "--tag", "t") == 2
    assert "has no remote" in capsys.readouterr().err
    # A failing hook says why on stderr and does not raise.
    git(a, "remote", "add", "origin", str(tmp_path / "gone.git"))
    git(a, "config", "branch.autoresearch/t.remote", "origin")
    git(a, "config", "branch.autoresearch/t.merge", "refs/heads/autoresearch/t")
    assert publish_if_upstream(a, "t") is False
    assert "could not publish t" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_env")
def test_the_loop_republishes_when_a_run_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Real loop: unpublished nights stay local; after one manual publish, each run's end pushes."""
    bare, (m1, _) = toy_origin(tmp_path)
    first = tmp_path / "first.jsonl"
    first.write_text(json.dumps({"reply": reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")}) + "\n")
    assert cli(monkeypatch, m1, "run", "--device", "cpu", "--tag", "auto", "--agent", f"replay:{first}") == 0
    assert git(bare, "branch", "--list", "autoresearch*") == ""  # no upstream: nothing pushed

    assert cli(monkeypatch, m1, "publish", "--tag", "auto") == 0
    second = tmp_path / "second.jsonl"
    # The replay agent resumes after the replies it already served: extend the same script.
    more = json.dumps({"reply": reply("lower more", "VAL_BPB = 0.900000", "VAL_BPB = 0.800000")})
    second.write_text(first.read_text() + more + "\n")
    args = ["run", "--device", "cpu", "--tag", "auto", "--agent", f"replay:{second}", "--resume"]
    assert cli(monkeypatch, m1, *args) == 0
    assert "published autoresearch/auto" in capsys.readouterr().err
    assert git(bare, "rev-parse", "autoresearch/auto") == git(m1, "rev-parse", "autoresearch/auto")
    ledger = git(bare, "show", "autoresearch-results/auto:results/auto.tsv")
    assert "lower more" in ledger and "0.800000" in ledger
