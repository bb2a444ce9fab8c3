"""`status` and `report` find a tag's results from any folder of the repository: a subfolder of
the checkout, the tag's own worktree (where a person lands to look at the kept code), and a
subfolder of that worktree."""

from __future__ import annotations

import json

import pytest

from harness.commands.main import main
from tests.conftest import Toy


def test_status_and_report_find_the_tag_from_any_folder(
    toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = toy_experiment
    replies = [toy.reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.500000")]
    assert (
        main(["run", "--device", "cpu", "--tag", "w", "--agent", f"replay:{toy.replay_file(replies)}"]) == 0
    )
    worktree = toy.repo / ".autoresearch" / "worktrees" / "w"
    for folder in (toy.repo, toy.repo / "experiments" / "toy", worktree, worktree / "experiments" / "toy"):
        monkeypatch.chdir(folder)
        capsys.readouterr()
        assert main(["status", "--tag", "w"]) == 0, capsys.readouterr().err
        assert "tag w: 2 rows (2 keep, 0 discard, 0 crash)" in capsys.readouterr().out, folder
        assert main(["status"]) == 0
        assert "w " in capsys.readouterr().out
        assert main(["report", "--tag", "w", "--json"]) == 0, capsys.readouterr().err
        summary = json.loads(capsys.readouterr().out)
        assert summary["experiments"] == 2 and summary["best"] == pytest.approx(0.5), folder
    assert not (worktree / "results").exists()  # nothing was written inside the worktree
