"""A night that learns: novelty refusals, attempt refs, records and notes, Parent, sweeps, stop conditions.

Real loop (the CLI's main), real git repositories, real child processes; replies from replay files.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import cast

import pytest

from harness.agents.base import Context, Reply
from harness.agents.llm import LLMAgent
from harness.commands.main import main
from harness.night.memory import Memory
from harness.store import attempts
from harness.store.paths import TagPaths
from tests.conftest import Toy, git


def run_cli(*args: str) -> int:
    return main(["run", "--device", "cpu", *args])


def test_a_night_with_duplicates_parents_notes_and_refs(
    toy_experiment: Toy, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = toy_experiment
    replies = [
        toy.reply("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000").replace(
            "Description: lower the constant\n",
            "Description: lower the constant\nNote: lower VAL_BPB helps\n",
        ),
        toy.reply("raise it", "VAL_BPB = 0.900000", "VAL_BPB = 0.950000"),
        # The same change again, written differently (spacing, a comment, another description).
        toy.reply("raise it once more", "VAL_BPB = 0.900000", "VAL_BPB   =   0.950000   # again").replace(
            "Description: raise it once more\n",
            "Description: raise it once more\nNote: raising was not tried?\n",
        ),
        # Build on #2 (a discard) and change one more thing: both land on the best.
        "Description: more steps on top of the raise\nParent: #2\n"
        + toy.reply("x", "STEPS = 4", "STEPS = 5").split("\n", 1)[1],
        # Only a comment: nothing a run could see.
        toy.reply("comment only", "STEPS = 4", "STEPS = 4  # four steps"),
    ]
    path = toy.replay_file(replies)
    assert run_cli("--tag", "m1", "--agent", f"replay:{path}") == 0
    rows = toy.tsv("m1")
    assert [r["status"] for r in rows] == ["keep", "keep", "discard", "discard", "discard", "crash"]
    dup = rows[3]
    assert dup["reason"] == "duplicate of #2" and dup["commit"] == "0000000"
    assert dup["val_bpb"] == "0.950000" and dup["wall_s"] == ""  # the earlier result, never run
    assert not list((toy.repo / "results" / "m1" / "runs").glob("3.*"))
    assert rows[4]["description"] == "on #2: more steps on top of the raise"
    assert rows[5]["reason"] == "bad edit"

    # Attempt #4 holds #2's change and its own, committed on the best (#1).
    four = git(toy.repo, "show", "refs/autoresearch/m1/attempts/4:experiments/toy/train.py")
    assert "VAL_BPB = 0.950000" in four and "STEPS = 5" in four
    assert git(toy.repo, "rev-parse", "refs/autoresearch/m1/attempts/4^") == git(
        toy.repo, "rev-parse", "refs/autoresearch/m1/attempts/1"
    )
    # Every committed attempt has its ref, discards included; the branch holds only keeps.
    refs = git(toy.repo, "for-each-ref", "--format=%(refname)", "refs/autoresearch/m1/attempts").split()
    assert sorted(refs) == [f"refs/autoresearch/m1/attempts/{n}" for n in (0, 1, 2, 4)]
    assert git(toy.repo, "log", "--format=%s", "autoresearch/m1").splitlines() == [
        "lower the constant",
        "initial",
    ]

    # Records with diagnostics; the note reached notes.md.
    records = attempts.read_all(toy.repo / "results" / "m1" / "attempts")
    assert sorted(records) == [0, 1, 2, 3, 4, 5]
    d = records[2].diagnostics
    assert d is not None and d.steps == 4 and d.peak_memory_gb == 2.0 and d.training_s == 0.1
    assert [p for p, _ in d.loss] == [25.0, 50.0, 75.0, 100.0] and d.loss_at(100) == pytest.approx(2.85)
    assert d.startup_s is not None and d.eval_s is not None
    assert records[3].duplicate_of == 2 and records[3].diagnostics is None
    assert records[4].built_on == 2 and records[2].key and records[2].key != records[4].key
    notes = (toy.repo / "results" / "m1" / "notes.md").read_text()
    assert "- #1 (keep, 0.900000): lower VAL_BPB helps" in notes
    assert "- #3 (duplicate of #2, discard, 0.950000): raising was not tried?" in notes

    # `show` prints a discarded attempt's diff, summary and log tail.
    capsys.readouterr()
    assert main(["show", "m1", "2"]) == 0
    out = capsys.readouterr().out
    assert "#2 of m1: discard" in out and "-VAL_BPB = 0.900000" in out and "+VAL_BPB = 0.950000" in out
    assert "val_bpb: 0.95" in out and "step 00003 (100.0%)" in out
    assert main(["show", "m1", "3"]) == 0
    dup_shown = capsys.readouterr().out
    assert "duplicate of #2" in dup_shown and "the change is #2's" in dup_shown
    assert "diff (#2's, against" in dup_shown and "+VAL_BPB = 0.950000" in dup_shown
    assert main(["show", "m1", "99"]) == 2
    assert "no attempt #99" in capsys.readouterr().err
    assert main(["show", "m1", "2", "--log-lines", "2"]) == 0
    assert "2.log, last 2 lines" in capsys.readouterr().out
    assert main(["show", "m1", "2", "--log-lines", "0"]) == 0
    assert "log: not shown (--log-lines 0)" in capsys.readouterr().out
    assert main(["show", "m1", "two"]) == 2

    # The report links each row to its change (embedded); the duplicate's row to the one it repeated.
    assert main(["report", "--tag", "m1"]) == 0
    table = (toy.repo / "results" / "m1" / "report.html").read_text().split("<table id='all'>")[1]
    rows_html = {r.split("<td class='num'>")[1].split("</td>")[0]: r for r in table.split("<tr class=")[1:]}
    assert "href='#attempt-2'" in rows_html["2"] and "href='#attempt-2'" in rows_html["3"]
    assert "href=" not in rows_html["5"]  # a bad edit never became a commit


def test_a_sweep_request_runs_k_tpe_trials_labelled_by_who_asked(toy_experiment: Toy) -> None:
    toy = toy_experiment
    sweep = "Description: tune the constant\nSweep: VAL_BPB=[0.5, 0.8]; STEPS=[2, 6] int\nTrials: 3\n"
    bad = "Description: a bad sweep\nSweep: NOT_THERE=[1, 2]\n"
    path = toy.replay_file([sweep, bad])
    assert run_cli("--tag", "sw", "--agent", f"replay:{path}") == 0
    rows = toy.tsv("sw")
    assert [r["agent"] for r in rows] == [
        "replay",
        "replay+search",
        "replay+search",
        "replay+search",
        "replay",
    ]
    trials = rows[1:4]
    assert all(r["description"].startswith("sweep (tune the constant): ") for r in trials)
    # Each trial sets the sweep's constants (a value equal to the current one is left out).
    assert all("VAL_BPB" in r["description"] or "STEPS" in r["description"] for r in trials)
    assert "VAL_BPB" in trials[0]["description"] and "STEPS" in trials[0]["description"]
    assert all(0.5 <= float(r["val_bpb"]) <= 0.8 for r in trials)
    assert trials[0]["status"] == "keep"  # anything in [0.5, 0.8] beats the baseline's 1.0
    assert rows[4]["status"] == "crash" and rows[4]["reason"] == "bad edit"


def test_plateau_and_until_stop_the_night(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    toy = toy_experiment
    raises = [toy.reply(f"raise {k}", "VAL_BPB = 1.000000", f"VAL_BPB = 1.{k:06d}") for k in range(1, 9)]
    path = toy.replay_file(raises)
    assert run_cli("--tag", "pl", "--agent", f"replay:{path}", "--plateau", "3") == 0
    assert [r["status"] for r in toy.tsv("pl")] == ["keep", "discard", "discard", "discard"]
    assert "--plateau 3: 3 attempts in a row without a keep" in capsys.readouterr().out

    # --until: before anything is measured a run may take the whole kill timeout (600 s here);
    # with the deadline 1-2 minutes away not even the baseline starts.
    soon = time.strftime("%H:%M", time.localtime(time.time() + 120))
    assert run_cli("--tag", "un", "--agent", f"replay:{path}", "--until", soon, "--timeout", "600") == 0
    out = capsys.readouterr().out
    assert f"--until {soon}: 3 more run(s) of about 600 s (the kill timeout, nothing measured yet)" in out
    assert not (toy.repo / "results" / "un.tsv").exists()
    # A deadline hours away lets the night run (the toy's runs take well under a second).
    later = time.strftime("%H:%M", time.localtime(time.time() + 3 * 3600))
    assert (
        run_cli("--tag", "un2", "--agent", f"replay:{path}", "--until", later, "--max-experiments", "2") == 0
    )
    assert len(toy.tsv("un2")) == 3


def test_records_survive_and_registry_is_shared_after_resume(toy_experiment: Toy) -> None:
    toy = toy_experiment
    first = toy.reply("raise", "VAL_BPB = 1.000000", "VAL_BPB = 1.100000")
    path = toy.replay_file([first])
    assert run_cli("--tag", "rs", "--agent", f"replay:{path}") == 0
    # The same change again in a later run of the tag: refused from the registry on disk.
    path.write_text(path.read_text() + json.dumps({"reply": first.replace("raise", "raise again")}) + "\n")
    assert run_cli("--tag", "rs", "--agent", f"replay:{path}", "--resume") == 0
    rows = toy.tsv("rs")
    assert rows[-1]["reason"] == "duplicate of #1" and rows[-1]["val_bpb"] == "1.100000"
    events = [
        json.loads(line) for line in (toy.repo / "results" / "rs" / "novelty.jsonl").read_text().splitlines()
    ]
    assert [e["op"] for e in events if e["key"] != "*"][:3] == ["claim", "number", "settle"]
    assert Path(toy.repo / "results" / "rs" / "attempts" / "2.json").is_file()


class _SlowReflector:
    """Stands in for the LLM agent: each reflection waits until the test lets it answer."""

    def __init__(self) -> None:
        self.asked: list[int] = []
        self.go = threading.Event()

    def reflect(self, ctx: Context) -> Reply:
        self.asked.append(len(ctx.history))
        self.go.wait(10)
        return Reply("```markdown\n- an insight\n```", cost_usd=0.01)


def test_a_reflection_due_while_one_runs_starts_when_it_is_done(tmp_path: Path) -> None:
    llm = _SlowReflector()
    memory = Memory(TagPaths(tmp_path, "r"), "r", reflect_every=3, llm=cast(LLMAgent, llm), notify=print)
    ctx = Context(program="", files={}, history=[])
    started = []
    for done in range(1, 11):
        if done == 7:  # the first reflection (after 3) answers only now; the one due at 6 waited
            llm.go.set()
            deadline = time.monotonic() + 10
            while memory.collect() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        elif done == 10:  # the proposer collects at every proposal; #7's answered at once
            deadline = time.monotonic() + 10
            while memory.collect() is None and time.monotonic() < deadline:
                time.sleep(0.01)
        if memory.due(done):
            memory.reflect(ctx, done)
            started.append(done)
    assert started == [3, 7, 10]  # 6 was due while #3's ran: it starts at once after, not at 9
    assert (tmp_path / "results" / "r" / "notes.md").read_text().strip().endswith("- an insight")

    # A new harness on the same tag (a resume after 11 attempts) keeps the rhythm: next at 12.
    again = Memory(TagPaths(tmp_path, "r"), "r", reflect_every=3, llm=cast(LLMAgent, llm), notify=print)
    assert not again.due(11) and again.due(12)
