"""Tests for harness.agents.prompt: what the model is shown, bounded and without secrets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.agents.base import Context, CrashReport, InFlight, NearMiss
from harness.agents.prompt import MAX_CRASH_LINES, build_prompt, describe_hardware, is_simple_bug, redact
from harness.store.attempts import AttemptRecord, Diagnostics
from harness.store.ledger import Row

TRAIN = "experiments/gpt/train.py"


def row(n: int, status: str, metric: float, desc: str, reason: str = "") -> Row:
    extra = {"n": str(n)}
    if reason:
        extra["reason"] = reason
    return Row(f"{n:07x}", metric if status != "crash" else 0.0, 40.0, status, desc, extra)


def ctx(history: list[Row] | None = None, **kw: object) -> Context:
    c = Context(
        program="# program\nMake val_bpb go down. UNIQUE-PROGRAM-LINE",
        files={TRAIN: "DEPTH = 8\nLR = 0.04\n"},
        history=history or [],
        budget_seconds=300,
        device="cuda",
        hardware="NVIDIA H100 80GB HBM3",
    )
    for key, value in kw.items():
        setattr(c, key, value)
    return c


def test_system_is_program_plus_reply_format() -> None:
    p = build_prompt(ctx(), env={})
    assert p.system.startswith("# program\nMake val_bpb go down. UNIQUE-PROGRAM-LINE")
    assert "<<<<<<< SEARCH" in p.system and "Description:" in p.system


def test_user_has_setup_files_and_task() -> None:
    p = build_prompt(ctx(), env={})
    assert "NVIDIA H100 80GB HBM3" in p.user
    assert "device profile: cuda" in p.user
    assert "300 s" in p.user
    assert "lower is better" in p.user
    assert f"{TRAIN}\n```python\nDEPTH = 8\nLR = 0.04\n```" in p.user
    assert "No experiment has run yet" in p.user
    assert "could not be applied" not in p.user and "crashed: fix it" not in p.user


def test_maximize_direction() -> None:
    p = build_prompt(ctx(metric="tokens_per_s", direction="maximize"), env={})
    assert "tokens_per_s (higher is better)" in p.user


def test_history_rows_kept_ladder_and_crash_reasons() -> None:
    history = [
        row(0, "keep", 0.9979, "baseline"),
        row(1, "discard", 0.9990, "raise LR"),
        row(2, "crash", 0.0, "bigger model", reason="oom"),
        row(3, "keep", 0.9950, "halve batch"),
    ]
    p = build_prompt(ctx(history), env={})
    assert "4 attempts so far: 2 kept, 1 crashed." in p.user
    assert "Current best: 0.995000 (0000003: halve batch)" in p.user
    assert "0.997900 -> 0.995000" in p.user
    assert "0000002 | - | crash   | bigger model [oom]" in p.user
    assert "0000001 | 0.999000 | discard | raise LR" in p.user


def test_long_history_is_condensed_whole_rows_within_bound() -> None:
    history = [row(0, "keep", 1.0, "baseline")]
    for n in range(1, 400):
        status = "keep" if n % 50 == 0 else ("crash" if n % 7 == 0 else "discard")
        history.append(row(n, status, 1.0 - n / 10_000, f"attempt number {n} " + "x" * 40, "oom"))
    p = build_prompt(ctx(history), max_history_chars=4000, env={})
    section = p.user.split("# History of this run")[1].split("# Current files")[0]
    table = section.split("```")[1]
    assert len(table) < 4000 + 200
    assert "older attempts condensed" in table
    # every kept change is still there, and the newest attempt
    for n in range(0, 400, 50):
        assert f"| {n:07x} |" in table
    assert f"| {399:07x} |" in table
    # rows are whole: every table line is a full row or a condensed line
    for line in table.strip().splitlines()[1:]:
        assert line.endswith(("x", "]", "baseline", "...")) or "condensed" in line, line
    # counts add up
    condensed = sum(
        int(line.split("...")[1].split()[0]) for line in table.splitlines() if "condensed" in line
    )
    shown = sum(1 for line in table.splitlines() if line.count("|") >= 4) - 1  # minus the header
    assert condensed + shown == 400


def test_short_history_is_not_condensed() -> None:
    history = [row(n, "discard", 1.0, f"try {n}") for n in range(10)]
    p = build_prompt(ctx(history), env={})
    assert "condensed" not in p.user
    assert all(f"try {n}" in p.user for n in range(10))


def test_crash_tail_is_at_most_50_lines() -> None:
    log = "\n".join(f"log line {i}" for i in range(200)) + "\nNameError: name 'foo' is not defined"
    crash = CrashReport(description="use foo", reason="exit 1", log_tail=log)
    p = build_prompt(ctx(crash=crash), env={})
    assert "crashed: fix it" in p.user
    assert "NameError: name 'foo' is not defined" in p.user
    assert "log line 151" in p.user and "log line 150" not in p.user
    assert f"Last {MAX_CRASH_LINES} lines" in p.user


def test_feedback_is_included() -> None:
    p = build_prompt(ctx(feedback="A SEARCH part did not match. Did you mean ..."), env={})
    assert "# Your previous reply could not be applied" in p.user
    assert "Did you mean" in p.user


def test_secrets_are_redacted_everywhere() -> None:
    env = {
        "ANTHROPIC_API_KEY": "sk-ant-api03-SECRETSECRET",
        "HF_TOKEN": "hf_abcdefghijkl",
        "OPENAI_BASE_URL": "http://127.0.0.1:9999/v1",
        "PATH": "/usr/bin:/bin",
    }
    crash = CrashReport("d", "exit 1", "env: ANTHROPIC_API_KEY=sk-ant-api03-SECRETSECRET HF=hf_abcdefghijkl")
    c = ctx(crash=crash, program="key sk-ant-api03-SECRETSECRET in program")
    p = build_prompt(c, env=env)
    assert "SECRETSECRET" not in p.system + p.user
    assert "hf_abcdefghijkl" not in p.user
    assert p.user.count("[redacted]") == 2
    # a base URL and ordinary variables are not secrets
    assert redact("http://127.0.0.1:9999/v1 /usr/bin:/bin", env) == "http://127.0.0.1:9999/v1 /usr/bin:/bin"
    # one secret inside another: the longer is redacted whole, whatever the order of the environment
    nested = {"A_TOKEN": "abcdefgh", "ANTHROPIC_API_KEY": "abcdefgh-LONGERPART"}
    assert redact("k=abcdefgh-LONGERPART", nested) == "k=[redacted]"


def test_simple_bugs_are_recognised() -> None:
    def crash(reason: str, tail: str) -> CrashReport:
        return CrashReport("d", reason, tail)

    assert is_simple_bug(crash("syntax error", "  File train.py, line 3\nSyntaxError: invalid syntax"))
    assert is_simple_bug(crash("exception: NameError: name 'x' is not defined", "NameError: name 'x'"))
    assert is_simple_bug(
        crash("exception: ModuleNotFoundError", "ModuleNotFoundError: No module named 'flash'")
    )
    shape = "RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x512 and 768x512)"
    assert is_simple_bug(crash(f"exception: {shape}", shape))
    oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert not is_simple_bug(crash(f"exception: {oom}", oom))
    assert not is_simple_bug(crash("timeout", "step 100 (50%)"))
    assert not is_simple_bug(crash("nan", "loss: nan\nFAIL"))
    assert not is_simple_bug(crash("exception: RuntimeError: boom", "RuntimeError: boom"))
    # The runner's own marker lines are not the run's output: its reaping a straggler is no OOM kill.
    reaped = "NameError: name 'helper' is not defined\n\n[autoresearch] killed 1 process(es) of the run still alive after it ended"
    assert is_simple_bug(crash("exception: NameError: name 'helper' is not defined", reaped))
    assert not is_simple_bug(crash("exception: NameError: x", "NameError: x\nKilled"))


def test_hardware_line_is_nonempty() -> None:
    line = describe_hardware("cpu")
    assert "CPU cores" in line


def test_hardware_line_names_the_visible_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    smi = tmp_path / "nvidia-smi"  # a stand-in answering nvidia-smi's CSV query for two cards
    smi.write_text('#!/bin/sh\necho "NVIDIA A, 81559 MiB"\necho "NVIDIA B, 143771 MiB"\n')
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    describe_hardware.cache_clear()
    try:
        assert describe_hardware("cuda").startswith("1x NVIDIA B, 143771 MiB; ")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
        describe_hardware.cache_clear()
        assert describe_hardware("cuda").startswith("2x NVIDIA A, 81559 MiB; ")
    finally:
        describe_hardware.cache_clear()


def _record(n: int, status: str, metric: float | None, description: str, note: str = "") -> AttemptRecord:
    diag = Diagnostics(steps=900 + n, tokens_per_sec=1.6e6, mfu_percent=39.5, peak_memory_gb=44.0,
                       startup_s=20.0, training_s=300.0, eval_s=25.0,
                       loss=[(5.0 * i, 6.0 - 0.1 * i - n / 1000) for i in range(1, 21)])  # fmt: skip
    return AttemptRecord(n, status, description, metric=metric, diagnostics=diag, note=note,
                         summary={"val_bpb": metric or 0.0, "num_steps": float(900 + n)})  # fmt: skip


def test_diagnostics_of_the_best_in_full_and_of_the_newest_attempts() -> None:
    history = [row(0, "keep", 0.998, "baseline"), row(1, "keep", 0.995, "halve batch")]
    history += [row(n, "discard", 0.999, f"try {n}") for n in range(2, 9)]
    records = {n: _record(n, r.status, r.metric, r.description, note="n7 note" if n == 7 else "")
               for n, r in enumerate(history)}  # fmt: skip
    p = build_prompt(ctx(history, records=records), env={})
    best = p.user.split("The current best in full")[1].split("The newest attempts in detail")[0]
    assert "#1 keep 0.995000 halve batch" in best and "steps 901" in best and "MFU 39.5%" in best
    assert "start-up 20 s, training 300 s, eval 25 s" in best and "10%:" in best and "90%:" in best
    assert "summary: val_bpb 0.995" in best
    newest = p.user.split("The newest attempts in detail:")[1].split("# Current files")[0]
    assert [f"#{n} discard" in newest for n in range(2, 9)] == [False, False, True, True, True, True, True]
    assert "25%:" in newest and "still falling at the end" in newest and "note: n7 note" in newest
    # The older ones are condensed to a few words in their table row; one without a record has none.
    table = p.user.split("```")[1]
    assert "| try 2 {902 steps, 1.6M tok/s, 44.0 GB, loss 3.998 falling}" in table
    bare = build_prompt(ctx(history, records={}), env={}).user.split("```")[1]
    assert "| try 2\n" in bare and "steps," not in bare.split("\n", 2)[2]


def test_notes_near_misses_and_in_flight_reach_the_prompt() -> None:
    c = ctx(
        [row(0, "keep", 1.0, "baseline")],
        notes="# Research notes\n- deeper hurts",
        near_misses=(NearMiss(4, "discard", 1.001, "warmup 200", "-WARMUP = 0\n+WARMUP = 200\n"),),
        in_flight=(InFlight("#5 running", "swiglu"), InFlight("queued to run next", "rope base 50k")),
        writing=(2, 3),
    )
    p = build_prompt(c, env={})
    assert "# Research notes" in p.user and "- deeper hurts" in p.user
    assert "#4 discard 1.001000: warmup 200\n```diff\n-WARMUP = 0\n+WARMUP = 200\n```" in p.user
    assert "Parent: #<n>" in p.user
    assert "- #5 running: swiglu" in p.user and "- queued to run next: rope base 50k" in p.user
    assert "You are request 2 of 3" in p.user and "second most promising" in p.user
    alone = build_prompt(ctx([row(0, "keep", 1.0, "baseline")], writing=(1, 1)), env={})
    assert "Being tried right now" not in alone.user


def test_the_prompt_stays_bounded_over_a_200_attempt_night() -> None:
    history = [row(0, "keep", 1.0, "baseline")]
    records = {0: _record(0, "keep", 1.0, "baseline")}
    sizes = []
    for n in range(1, 201):
        status = "keep" if n % 25 == 0 else ("crash" if n % 9 == 0 else "discard")
        history.append(row(n, status, 1.0 - n / 1e4, f"attempt {n}: " + "a long description " * 8, "oom"))
        records[n] = _record(
            n, status, None if status == "crash" else 1.0 - n / 1e4, "d " * 80, note="x" * 300
        )
        if n in (10, 50, 100, 200):
            sizes.append(
                build_prompt(ctx(list(history), records=dict(records), notes="n" * 10_000), env={}).chars
            )
    # Flat once the table is condensed (about 60 attempts): the newest and the best in detail, the rest
    # condensed, notes bounded (10,000 characters of notes given).
    assert sizes[0] < sizes[1] and max(sizes) < 25_000 and abs(sizes[3] - sizes[2]) < 500
