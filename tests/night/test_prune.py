"""Early abort (`harness.night.prune`, `--prune`): a candidate clearly behind the best's loss at the
same budget share is stopped and discarded with reason `pruned`; the baseline never is, nor a run
without progress lines, nor anything with `--prune 0`."""

from __future__ import annotations

import time

import pytest
from conftest import Toy, git

from harness.commands.main import main
from harness.night.prune import FROM_SHARE, MIN_POINTS, PATIENCE, Pruner, at, read_curve


def test_read_curve_keeps_progress_lines_in_share_order() -> None:
    lines = [
        "step 00001 (1.0%) | loss: 9.000000 | dt: 3ms",
        "no progress here | loss: 1.0",
        "step 00002 (40.0%) | loss: 4.000000",
        "step 00003 (30.0%) | loss: 3.000000",  # going back: ignored
        "step 00004 (50.0%) | loss: nan",
        "step 00005 (60.0%) | loss: 2.000000",
    ]
    curve = read_curve(lines)
    assert curve == ((1.0, 9.0), (40.0, 4.0), (60.0, 2.0))
    assert at(curve, 50.0) == pytest.approx(3.0)
    assert at(curve, 40.0) == 4.0
    assert at(curve, 0.5) is None and at(curve, 61.0) is None


def test_pruner_needs_the_share_the_margin_and_patience() -> None:
    ref = tuple((float(p), 3.0) for p in range(0, 101, 5))  # 21 points
    pruner = Pruner([ref], margin=0.05)
    # far behind, but before FROM_SHARE: never
    assert not any(pruner(share, 10.0) for share in (1.0, 10.0, FROM_SHARE - 1))
    # within the margin (3.0 * 1.05 = 3.15): never
    assert not any(pruner(share, 3.14) for share in range(30, 90))
    # behind: only after PATIENCE lines in a row, and a line back within the margin resets it
    assert [pruner(s, 3.2) for s in (30, 31)] == [False, False]
    assert not pruner(32, 3.1)
    verdicts = [pruner(s, 3.2) for s in range(33, 33 + PATIENCE)]
    assert verdicts == [False] * (PATIENCE - 1) + [True]
    assert "the best's 3.0000" in pruner.why
    # several reference runs: three times their spread is allowed when that is wider
    wide = Pruner([tuple((float(p), v) for p in range(0, 101, 5)) for v in (2.8, 3.0, 3.2)], margin=0.05)
    assert not any(wide(s, 3.5) for s in range(30, 60))  # 3.0 + 3 * 0.2 = 3.6 allowed
    assert not Pruner([()], margin=0.05) and not Pruner([ref], margin=0.0)
    assert not Pruner([ref[: MIN_POINTS - 1]], margin=0.05)  # too coarse to be a curve


PROGRESS_TOY = '''"""A toy that trains for 1.5 s printing progress lines; its loss curve is LOSS times a decay."""

import time

LOSS = 3.0
print("@@autoresearch first-batch", flush=True)
t0 = time.time()
step = 0
while (elapsed := time.time() - t0) < 1.5:
    step += 1
    pct = 100 * elapsed / 1.5
    print(f"step {step:05d} ({pct:.1f}%) | loss: {LOSS * (1 - pct / 400):.6f}", flush=True)
    time.sleep(0.02)
print(f"@@autoresearch hand-off tokens={step * 100}", flush=True)
print("---")
print(f"val_bpb:          {LOSS / 3:.6f}")
print(f"num_steps:        {step}")
'''


def _night(toy: Toy, tag: str, replies: list[str], *extra: str) -> list[dict[str, str]]:
    argv = ["run", "--device", "cpu", "--tag", tag, "--judge", "strict", "--sandbox", "off"]
    assert main([*argv, "--agent", f"replay:{toy.replay_file(replies, tag + '.jsonl')}", *extra]) == 0
    return toy.tsv(tag)


def test_a_candidate_far_behind_is_pruned_the_baseline_and_a_close_one_are_not(toy_experiment: Toy) -> None:
    toy = toy_experiment
    toy.train.write_text(PROGRESS_TOY)
    git(toy.repo, "commit", "-q", "-am", "progress toy")
    replies = [
        toy.reply("far worse", "LOSS = 3.0", "LOSS = 4.0"),  # 33 % behind all along
        toy.reply("a bit worse", "LOSS = 3.0", "LOSS = 3.03"),  # 1 % behind: within the margin
        toy.reply("better", "LOSS = 3.0", "LOSS = 2.7"),
    ]
    started = time.monotonic()
    rows = _night(toy, "pr", replies)
    assert time.monotonic() - started < 120
    assert [r["status"] for r in rows] == ["keep", "discard", "discard", "keep"]
    assert rows[1]["reason"] == "pruned" and rows[1]["val_bpb"] == "0.000000" and rows[1]["runs"] == ""
    assert rows[2]["reason"] == "" and float(rows[2]["val_bpb"]) == pytest.approx(1.01)
    log = (toy.repo / "results" / "pr" / "runs" / "1.log").read_text()
    assert (
        "killed (pruned)" in log
        and "[autoresearch] pruned: loss 3." in log
        and "of the budget, the best's 2." in log
    )
    # aborted past a quarter of the budget, well before its end (the harness's clock)
    assert 0.25 * 1.5 < float(rows[1]["training_s"]) < 1.2


def test_prune_0_and_an_experiment_without_progress_lines_never_prune(toy_experiment: Toy) -> None:
    toy = toy_experiment
    toy.train.write_text(PROGRESS_TOY)
    git(toy.repo, "commit", "-q", "-am", "progress toy")
    far = [toy.reply("far worse", "LOSS = 3.0", "LOSS = 4.0")]
    rows = _night(toy, "off", far, "--prune", "0")
    assert rows[1]["status"] == "discard" and rows[1]["reason"] == "" and rows[1]["val_bpb"] == "1.333333"
    # the same file without progress lines: nothing to compare, never pruned
    toy.train.write_text(
        PROGRESS_TOY.replace('print(f"step', 'quiet = (f"step').replace(
            ", flush=True)\n    time", ")\n    time"
        )
    )
    git(toy.repo, "commit", "-q", "-am", "no progress lines")
    rows = _night(toy, "quiet", far)
    assert rows[1]["status"] == "discard" and rows[1]["reason"] == ""


def test_bad_prune_value_is_one_line_and_exit_2(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--device", "cpu", "--tag", "x", "--agent", "search", "--prune", "1.5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--prune '1.5'" in err
