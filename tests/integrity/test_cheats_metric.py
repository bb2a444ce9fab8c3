"""Planted cheats against the metric, each driven through `autoresearch run` by a replay agent.

The experiment is `tests/support/metric_cheats.py`'s tiny bigram model on the arithmetic
dataset (cpu profile), judged by prepare's evaluator (`[integrity] evaluator = "bpb"`) with
permissive source checks: no static rule stands in a cheat's way, so what stops it is the
evaluator in its own process, its causality probes, its refusal of stateful or non-ATen
programs, or the validation data hidden from the train run's sandbox.

`test_every_metric_cheat_is_a_crash_with_every_defence_on` runs all twelve in one night: each
is a crash with its own reason, never kept, and nothing outside the run changes; an honest
improvement after them is still kept. The other tests switch one defence off at a time and
show that the cheats it stops then win: kept, with a metric below the honest baseline's.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from support.metric_cheats import (
    BETTER,
    CHEATS,
    OLD_STYLE,
    OLD_STYLE_TOML,
    REL,
    Cheat,
    replay,
    write_tiny,
)
from support.sandboxing import needs_sandbox

from harness.commands.main import main
from harness.integrity import evaluation
from tests.conftest import PROJECT, git


def _cheat(description: str) -> Cheat:
    (found,) = [c for c in CHEATS if c.description.startswith(description)]
    return found


def _setup(repo: Path, source: str | None = None, toml: str | None = None) -> None:
    write_tiny(repo, *(x for x in (source, toml) if x is not None))
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "tiny experiment")


def _night(repo: Path, tag: str, replies: list[str], *flags: str) -> list[dict[str, str]]:
    path = replay(repo.parent / f"{tag}.jsonl", replies)
    argv = ["run", "--device", "cpu", "--tag", tag, "--experiment", "tiny", "--agent", f"replay:{path}",
            "--baseline-runs", "1", "--judge", "strict", "--dataset", "arithmetic", *flags]  # fmt: skip
    assert main(argv) == 0
    lines = (repo / "results" / f"{tag}.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        h.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return h.hexdigest()


def _won(rows: list[dict[str, str]], cheats: list[Cheat]) -> None:
    """Every cheat row was kept, each below the baseline (and below the one before it)."""
    baseline = rows[0]
    assert baseline["description"] == "baseline" and baseline["status"] == "keep", baseline
    previous = float(baseline["val_bpb"])
    for row, cheat in zip(rows[1:], cheats, strict=True):
        assert row["description"] == cheat.description
        assert row["status"] == "keep", (cheat.description, row["reason"])
        assert float(row["val_bpb"]) < previous, (cheat.description, row["val_bpb"], previous)
        previous = float(row["val_bpb"])
    assert previous < 0.5 * float(baseline["val_bpb"])  # not a near-tie: a forged gain


@pytest.mark.slow  # one night of 14 runs
@pytest.mark.timeout(900)  # a hang guard: 14 runs, each with its evaluator, on a loaded 2-core machine
@needs_sandbox
def test_every_metric_cheat_is_a_crash_with_every_defence_on(project_repo: Path, clean_env: Path) -> None:
    _setup(project_repo)
    assert len(CHEATS) >= 11 and len({c.description for c in CHEATS}) == len(CHEATS)
    honest = f"Description: train four times as many steps\n{REL}\n```python\n{BETTER}```\n"
    rows = _night(project_repo, "defended", [c.reply() for c in CHEATS] + [honest])
    baseline = rows[0]
    assert baseline["status"] == "keep" and 0 < float(baseline["val_bpb"]) < 9
    assert json.loads(baseline["summary"])["causal_probes"] >= 4  # the honest model passed its probes
    # the in-process cheats need the validation data, which the sandbox hides from the train run
    hidden = "exception: prepare.errors.DataError: the validation shard"
    reads_val = ("inflate", "a tensor subclass", "patch prepare")
    for row, cheat in zip(rows[1:-1], CHEATS, strict=True):
        expected = hidden if cheat.description.startswith(reads_val) else cheat.reason
        assert row["description"] == cheat.description
        assert row["status"] == "crash" and row["reason"].startswith(expected), (
            cheat.description,
            row["reason"],
        )
        assert row["val_bpb"] == "0.000000"
    assert rows[-1]["status"] == "keep" and float(rows[-1]["val_bpb"]) < float(baseline["val_bpb"])
    # nothing outside the runs changed: the branch holds the baseline and the honest change only,
    # prepare/ is the project's, the data cache (validation shard included) is untouched
    worktree = project_repo / ".autoresearch" / "worktrees" / "defended"
    assert git(project_repo, "rev-list", "--count", "main..autoresearch/defended") == "1"
    assert _digest(worktree / "prepare") == _digest(PROJECT / "prepare")
    assert git(project_repo, "status", "--porcelain") == ""
    assert not list((project_repo / "results" / "defended").rglob("program.json"))  # hand-offs are gone


@pytest.mark.slow
@pytest.mark.parametrize(
    ("switch", "names"),
    [
        ("--no-probes", ["look-ahead", "bidirectional"]),
        ("--same-batch-probes", ["causal only where"]),
        ("--allow-state", ["remember every row"]),
    ],
)
def test_without_its_evaluator_defence_each_model_cheat_wins(
    project_repo: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch, switch: str, names: list[str]
) -> None:
    _setup(project_repo)
    monkeypatch.setattr(evaluation, "TEST_SWITCHES", (switch,))
    cheats = [_cheat(n) for n in names]
    assert all(c.off == switch for c in cheats)
    _won(_night(project_repo, "open", [c.reply() for c in cheats]), cheats)


@pytest.mark.slow
def test_with_the_validation_data_visible_the_data_cheats_win(project_repo: Path, clean_env: Path) -> None:
    """--sandbox off: the train run sees the validation shard. The cheats that build their model
    from it win; the ones that score themselves in-process still lose to the evaluator."""
    _setup(project_repo)
    in_process = [_cheat(n) for n in ("inflate", "a tensor subclass", "patch prepare")]
    data = [_cheat(n) for n in ("train on the validation", "ship a lookup")]
    assert all(c.off == "no sandbox" for c in data)
    rows = _night(project_repo, "visible", [c.reply() for c in in_process + data], "--sandbox", "off")
    for row, cheat in zip(rows[1:4], in_process, strict=True):
        assert row["status"] == "crash" and row["reason"].startswith(cheat.reason), (cheat.description, row)
    _won([rows[0], *rows[4:]], data)


@pytest.mark.slow
def test_with_the_metric_taken_from_the_run_the_in_process_cheats_win(
    project_repo: Path, clean_env: Path
) -> None:
    """No evaluator (the harness as it was: the metric is what the run printed, from an in-process
    evaluate_bpb): every cheat that makes its number in the train run wins."""
    _setup(project_repo, OLD_STYLE, OLD_STYLE_TOML)
    order = [
        "inflate",
        "patch prepare",
        "forged summary",
        "skip the hand-off",
        "prepare's metric",
        "a tensor",
    ]
    cheats = [_cheat(n) for n in order]  # each prints a smaller number than the one before
    assert {c.description for c in cheats} == {c.description for c in CHEATS if c.off == "no evaluator"}
    _won(_night(project_repo, "believed", [c.reply() for c in cheats]), cheats)
