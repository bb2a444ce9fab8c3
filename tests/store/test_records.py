"""harness.store.attempts (the per-attempt record) and harness.store.notes (notes.md)."""

from __future__ import annotations

import math
from pathlib import Path

from harness.store import attempts
from harness.store.attempts import AttemptRecord, Diagnostics
from harness.store.notes import MAX_NOTE_CHARS, Notes, bound, for_prompt


def test_a_record_round_trips_and_a_broken_one_is_skipped(tmp_path: Path) -> None:
    diag = Diagnostics(steps=953, tokens_per_sec=1.66e6, mfu_percent=39.8, peak_memory_gb=44.0,
                       startup_s=21.0, training_s=300.1, eval_s=25.3, wall_s=350.2,
                       loss=[(25.0, 3.9), (50.0, 3.5), (75.0, 3.3), (95.0, 3.25), (100.0, 3.2)])  # fmt: skip
    record = AttemptRecord(5, "discard", "warmup 200", agent="claude", metric=0.9951, key="abc", built_on=3,
                           note="warmup hurts", runs=1, diagnostics=diag, summary={"val_bpb": 0.9951, "depth": 8.0},
                           log_tail="x\ny")  # fmt: skip
    folder = tmp_path / "attempts"
    attempts.write(folder / "5.json", record)
    (folder / "6.json").write_text("{not json")
    (folder / "7.json").write_text('{"n": "seven"}')
    attempts.write(folder / "8.json", AttemptRecord(9, "keep", "misfiled"))  # its name is not its number
    back = attempts.read_all(folder)
    assert list(back) == [5] and back[5] == record
    assert back[5].to_json()["schema"] == attempts.SCHEMA


def test_diagnostics_say_where_the_loss_was_and_where_it_went() -> None:
    d = Diagnostics(steps=10, tokens_per_sec=1_234_567.0, mfu_percent=40.06, peak_memory_gb=2.0,
                    startup_s=3.0, training_s=10.0, eval_s=1.5, loss=[(25.0, 4.0), (50.0, 3.0), (95.0, 2.5), (100.0, 2.4)])  # fmt: skip
    assert d.loss_at(75) == 3.0 and d.loss_at(100) == 2.4 and d.loss_at(10) is None
    assert math.isclose(d.falling() or 0, -0.04)
    assert (
        d.describe()
        == "steps 10 | 1.23M tok/s | MFU 40.1% | peak 2.0 GB | start-up 3 s, training 10 s, eval 2 s"
    )
    assert (
        d.describe_loss()
        == "loss by budget share 25%:4 50%:3 75%:3 100%:2.4; still falling at the end (-4.0% over the last 5%)"
    )
    flat = Diagnostics(loss=[(95.0, 2.0), (100.0, 2.0)])
    assert flat.describe_loss((100,)).endswith("flat at the end (+0.0% over the last 5%)")
    assert Diagnostics().describe() == "" and Diagnostics().describe_loss() == ""


def test_notes_append_and_a_rewrite_keeps_what_was_appended_meanwhile(tmp_path: Path) -> None:
    notes = Notes(tmp_path / "notes.md", "nov21")
    notes.append("#1 (keep, 0.990000): " + "x" * 1000)
    text = notes.read()
    assert text.startswith("# Research notes: nov21") and text.count("\n- #1") == 1
    assert len(text.splitlines()[-1]) <= MAX_NOTE_CHARS + 2
    based_on = notes.read()
    notes.append("#2 (discard, 0.995000): appended while the reflection ran")
    assert notes.rewrite("## Insights\n- rewritten", based_on)
    after = notes.read()
    assert "## Insights\n- rewritten" in after and after.rstrip().endswith(
        "appended while the reflection ran"
    )
    assert "x" * 50 not in after


def test_a_rewrite_never_overwrites_the_persons_edit(tmp_path: Path) -> None:
    notes = Notes(tmp_path / "notes.md", "t")
    notes.append("#1 (keep, 1.000000): first")
    based_on = notes.read()
    (tmp_path / "notes.md").write_text("# My own notes\n\nDo not try bigger models.\n")
    assert not notes.rewrite("## Insights\n- model rewrite", based_on)
    assert notes.read() == "# My own notes\n\nDo not try bigger models.\n"


def test_bound_keeps_head_and_newest_lines_whole() -> None:
    text = "# head\n" + "\n".join(f"- note {i} " + "y" * 50 for i in range(400))
    out = bound(text, 4000)
    assert len(out) <= 4000 and out.startswith("# head") and "lines of the notes left out" in out
    assert out.endswith(text.splitlines()[-1])
    assert for_prompt("short\n") == "short"
