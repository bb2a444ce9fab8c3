"""Every attempt's code travels: attempt refs after a real night, `publish`, a plain `git fetch` on
another clone (with the refspec publish names), `show` there, and the report's per-row diffs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.review_repos import git, reply, toy_origin

from harness.commands.main import main


def cli(monkeypatch: pytest.MonkeyPatch, cwd: Path, *args: str) -> int:
    monkeypatch.chdir(cwd)
    return main(list(args))


@pytest.mark.usefixtures("clean_env")
def test_attempts_are_kept_published_fetched_and_shown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bare, (m1, m2) = toy_origin(tmp_path)
    replies = [
        reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        reply("raise", "VAL_BPB = 0.900000", "VAL_BPB = 0.950000"),
        reply("crash on purpose", 'MODE = "ok"', 'MODE = "raise"'),
    ]
    script = tmp_path / "replies.jsonl"
    script.write_text("".join(json.dumps({"reply": r}) + "\n" for r in replies))
    assert cli(monkeypatch, m1, "run", "--device", "cpu", "--tag", "n1", "--agent", f"replay:{script}") == 0

    local = git(m1, "for-each-ref", "--format=%(refname)", "refs/autoresearch/n1/attempts").split()
    assert sorted(local) == [f"refs/autoresearch/n1/attempts/{n}" for n in range(4)]
    assert git(m1, "log", "--format=%s", "autoresearch/n1").splitlines() == ["lower", "toy project"]

    capsys.readouterr()
    assert cli(monkeypatch, m1, "publish", "--tag", "n1") == 0
    out = capsys.readouterr().out
    assert "the code of 4 attempts" in out
    refspec = "+refs/autoresearch/*:refs/autoresearch-fetched/origin/*"
    assert refspec in out and refspec in git(m1, "config", "--get-all", "remote.origin.fetch")
    assert git(bare, "rev-parse", "refs/autoresearch/n1/attempts/2") == git(
        m1, "rev-parse", "refs/autoresearch/n1/attempts/2"
    )
    tree = git(bare, "ls-tree", "-r", "--name-only", "autoresearch-results/n1").splitlines()
    assert "results/n1/attempts/2.json" in tree and "results/n1.tsv" in tree

    # Another clone: the refspec once, then a plain fetch brings every attempt.
    git(m2, "config", "--add", "remote.origin.fetch", refspec)
    git(m2, "fetch", "-q")
    fetched = git(
        m2, "for-each-ref", "--format=%(refname)", "refs/autoresearch-fetched/origin/n1/attempts"
    ).split()
    assert len(fetched) == 4
    capsys.readouterr()
    assert cli(monkeypatch, m2, "show", "n1", "2") == 0
    shown = capsys.readouterr().out
    assert "#2 of n1: discard" in shown and "+VAL_BPB = 0.950000" in shown
    assert "autoresearch-fetched/origin/n1/attempts/2" in shown
    assert "log tail (the attempt's record" in shown and "val_bpb:" in shown
    assert cli(monkeypatch, m2, "show", "n1", "3") == 0
    crashed = capsys.readouterr().out
    assert "crash" in crashed and "toy failure on purpose" in crashed and '+MODE = "raise"' in crashed

    # The report links every row to its attempt's change, embedded in the page.
    assert cli(monkeypatch, m1, "report", "--tag", "n1") == 0
    page = (m1 / "results" / "n1" / "report.html").read_text()
    assert "href='#attempt-2'" in page and "<details id='attempt-2'>" in page
    section = page.split("<details id='attempt-3'>")[1].split("</details>")[0]
    assert "MODE = &quot;raise&quot;" in section
