"""Tests for harness.night.pipeline: background proposals, stale re-application, adaptive depth."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from support.fakes.llm_servers import FakeLLM, error, overloaded, prompt_text, reply

from harness.commands.main import main
from harness.errors import ProviderError
from harness.night.pipeline import Pipeline
from tests.conftest import Toy, git


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def make_pipeline(**kw: object) -> tuple[Pipeline[str, str], list[str]]:
    """make(ctx) -> f"{ctx}#{k}"; reapply succeeds unless the proposal contains 'stale-fail'."""
    calls: list[str] = []
    lock = threading.Lock()

    def make(ctx: str) -> str | None:
        with lock:
            calls.append(ctx)
            k = len(calls)
        if ctx == "done":
            return None
        if ctx == "boom":
            raise ProviderError("HTTP 401", retryable=False)
        return f"{ctx}#{k}"

    def reapply(proposal: str, ctx: str) -> str | None:
        return None if "stale-fail" in proposal else f"{proposal}@{ctx}"

    return Pipeline(make, reapply, **kw), calls  # type: ignore[arg-type]


def test_depth_zero_proposes_synchronously() -> None:
    pipe, calls = make_pipeline(depth=0)
    assert pipe.prefetch("ctx", "sha1") == 0
    assert calls == []
    assert pipe.take("ctx", "sha1") == "ctx#1"


def test_prefetch_runs_in_background_and_take_waits() -> None:
    gate = threading.Event()
    started = threading.Event()

    def make(ctx: str) -> str:
        started.set()
        assert gate.wait(10)
        return "proposal"

    pipe: Pipeline[str, str] = Pipeline(make, lambda p, c: p, depth=1)
    assert pipe.prefetch("ctx", "sha1") == 1  # returns at once although make() blocks
    assert started.wait(10)
    assert not pipe.queue[0].future.done()
    threading.Timer(0.05, gate.set).start()
    assert pipe.take("ctx", "sha1") == "proposal"


def test_same_best_is_used_as_is_and_stale_is_reapplied() -> None:
    pipe, _ = make_pipeline(depth=2)
    pipe.prefetch("A", "sha1")
    assert len(pipe.queue) == 2
    assert pipe.take("B", "sha1") == "A#1"  # best unchanged
    second = pipe.take("B", "sha2")  # an experiment was kept since: re-applied onto the new best
    assert second in ("A#1@B", "A#2@B")
    assert not pipe.queue


def test_stale_reapplied_cleanly() -> None:
    pipe, _ = make_pipeline(depth=1)
    pipe.prefetch("old", "sha1")
    assert pipe.take("new", "sha2") == "old#1@new"
    assert "re-applied cleanly" in pipe.notes[-1]


def test_stale_that_does_not_apply_is_dropped_and_asked_again() -> None:
    pipe, calls = make_pipeline(depth=2)
    pipe.prefetch("stale-fail", "sha1")
    out = pipe.take("fresh", "sha2")
    assert out == "fresh#3"  # both queued ones dropped, a fresh one made now against the new best
    assert len(pipe.dropped) == 2
    assert calls.count("fresh") == 1


def test_worker_exception_reraised_in_take() -> None:
    pipe, _ = make_pipeline(depth=1)
    pipe.prefetch("boom", "sha1")
    with pytest.raises(ProviderError, match="401"):
        pipe.take("x", "sha1")


def test_agent_done_ends_and_clears_queue() -> None:
    pipe, _ = make_pipeline(depth=1)
    pipe.prefetch("done", "sha1")
    assert pipe.take("x", "sha1") is None
    assert not pipe.queue


def test_limit_caps_the_queue() -> None:
    pipe, calls = make_pipeline(depth=3)
    assert pipe.prefetch("c", "s", limit=1) == 1
    assert pipe.prefetch("c", "s", limit=0) == 0
    pipe.take("c", "s")
    assert len(calls) == 1


def test_depth_adapts_to_measured_times() -> None:
    clock = Clock()
    pipe, _ = make_pipeline(clock=clock, initial_depth=2, max_depth=4)
    assert pipe.depth() == 2  # nothing measured yet
    pipe.llm_seconds = 60.0
    pipe.record_run(330.0)
    assert pipe.depth() == 1  # a 5-minute run hides a 1-minute model
    pipe.run_seconds = 30.0
    assert pipe.depth() == 3  # a 1-minute model and 30 s runs: two and a bit in flight, with margin
    pipe.llm_seconds = 1000.0
    assert pipe.depth() == 4  # capped


def test_depth_counts_a_request_still_in_flight() -> None:
    clock = Clock()
    gate = threading.Event()
    pipe: Pipeline[str, str] = Pipeline(lambda c: "p" if gate.wait(10) else None, lambda p, c: p, clock=clock)
    pipe.llm_seconds, pipe.run_seconds = 10.0, 30.0
    pipe.prefetch("c", "s")
    assert pipe.depth() == 1
    clock.t = 95.0  # the model has been thinking for 95 s: a 30 s run needs 4 in flight
    assert pipe.depth() == 4
    gate.set()


# --------------------------------------------------------------------------- in the loop (real CLI, real SDK)

TIMED_TRAIN = """\
import time

VAL_BPB = 1.000000
A = 0
B = 0
C = 0
SLEEP = 1.5

print(f"T_START {time.time()}", flush=True)
time.sleep(SLEEP)
print(f"T_END {time.time()}", flush=True)
print("---")
print(f"val_bpb:          {VAL_BPB:.6f}")
print("peak_vram_mb:     1024.0")
"""


def _edit(description: str, search: str, replace: str) -> str:
    return (
        f"Description: {description}\nexperiments/toy/train.py\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n"
        ">>>>>>> REPLACE\n"
    )


def _use_timed_train(toy: Toy) -> None:
    toy.train.write_text(TIMED_TRAIN)
    git(toy.repo, "commit", "-qam", "timed toy")


def _run_intervals(toy: Toy, tag: str) -> list[tuple[float, float]]:
    out = []
    for log in sorted((toy.repo / "results" / tag / "runs").glob("*.log")):
        text = log.read_text()
        start = [float(line.split()[1]) for line in text.splitlines() if line.startswith("T_START")]
        end = [float(line.split()[1]) for line in text.splitlines() if line.startswith("T_END")]
        if start and end:
            out.append((start[0], end[0]))
    return out


def _night(toy: Toy, monkeypatch: pytest.MonkeyPatch, fake: FakeLLM, tag: str, *args: str, **env: str) -> int:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-pipeline-0123456789")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.anthropic_url)
    monkeypatch.setenv("AUTORESEARCH_RETRY_BASE", "0.01")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return main(["run", "--device", "cpu", "--tag", tag, "--agent", "claude", *args])


@pytest.mark.parametrize("depth, overlapping", [("auto", True), ("0", False)])
def test_proposals_are_made_while_the_experiment_runs(
    toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch, depth: str, overlapping: bool
) -> None:
    toy = toy_experiment
    _use_timed_train(toy)
    edits = [_edit(f"set {v}", f"{v} = 0", f"{v} = 1") for v in "ABC"] + [_edit("unused", "X", "Y")] * 3
    lock = threading.Lock()

    def respond(body: dict[str, Any]) -> Any:
        with lock:  # concurrent requests when pipelined
            return reply(edits.pop(0), delay=1.0)

    with FakeLLM(responder=respond) as fake:
        code = _night(
            toy, monkeypatch, fake, f"p{depth}", "--max-experiments", "3", AUTORESEARCH_PIPELINE_DEPTH=depth
        )
        requests = list(fake.intervals)
    assert code == 0
    rows = toy.tsv(f"p{depth}")
    assert [r["status"] for r in rows] == ["keep", "discard", "discard", "discard"]
    runs = _run_intervals(toy, f"p{depth}")
    assert len(runs) >= 4  # the baseline may be run several times by the noise-aware judge
    overlaps = [
        any(r_start < run_end and r_end > run_start for run_start, run_end in runs)
        for r_start, r_end in requests
    ]
    if overlapping:
        # Every proposal that ran was asked for while an experiment (the baseline included) was running.
        assert sum(overlaps) >= 3
        assert len(requests) <= 4  # --max-experiments bounds what is asked for in advance
    else:
        assert not any(overlaps)
        assert len(requests) == 3


def test_crash_repair_is_bounded_to_two_rows(toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch) -> None:
    toy = toy_experiment
    normal = iter(
        [
            _edit("call a helper", "STEPS = 4", "STEPS = helper_one()"),
            _edit("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        ]
    )

    def respond(body: dict[str, Any]) -> Any:
        text = prompt_text(body)
        if "crashed: fix it" in text:
            # A fix that does not fix anything: each repair crashes with the next NameError.
            for old, new in (("helper_one", "helper_two"), ("helper_two", "helper_three")):
                if f"STEPS = {old}()" in text:
                    return reply(_edit(f"rename {old}", f"STEPS = {old}()", f"STEPS = {new}()"))
            return reply(_edit("a third fix must never be asked for", "STEPS", "STEPS"))
        return reply(next(normal))

    with FakeLLM(responder=respond) as fake:
        assert (
            _night(toy, monkeypatch, fake, "r1", "--max-experiments", "4", AUTORESEARCH_PIPELINE_DEPTH="0")
            == 0
        )
        prompts = [prompt_text(r.body) for r in fake.completion_requests()]
    rows = toy.tsv("r1")
    assert [r["description"] for r in rows] == [
        "baseline",
        "call a helper",
        "fix: rename helper_one",
        "fix: rename helper_two",
        "lower the constant",
    ]
    assert [r["status"] for r in rows] == ["keep", "crash", "crash", "crash", "keep"]
    assert "helper_three" in rows[3]["reason"]
    assert sum("crashed: fix it" in p for p in prompts) == 2
    # The fix prompt shows the crashed version of the file and at most 50 log lines.
    fix_prompt = next(p for p in prompts if "crashed: fix it" in p)
    assert "STEPS = helper_one()" in fix_prompt and "NameError" in fix_prompt


def test_no_repair_for_crashes_that_are_not_simple_bugs(
    toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    toy = toy_experiment
    normal = iter(
        [
            _edit("run out of memory", 'MODE = "ok"', 'MODE = "ok"\nraise MemoryError("CUDA out of memory")'),
            _edit("lower the constant", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        ]
    )
    with FakeLLM(responder=lambda body: reply(next(normal))) as fake:
        assert (
            _night(toy, monkeypatch, fake, "r2", "--max-experiments", "2", AUTORESEARCH_PIPELINE_DEPTH="0")
            == 0
        )
        prompts = [prompt_text(r.body) for r in fake.completion_requests()]
    assert [r["status"] for r in toy.tsv("r2")] == ["keep", "crash", "keep"]
    assert not any("crashed: fix it" in p for p in prompts)


def test_outage_pauses_visibly_and_resumes(
    toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    toy = toy_experiment
    script = [overloaded() for _ in range(4)] + [
        error(503),
        reply(_edit("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.9")),
    ]
    with FakeLLM(script) as fake:
        code = _night(
            toy, monkeypatch, fake, "out1", "--max-experiments", "1",
            AUTORESEARCH_RETRY_PAUSE_AFTER="0.001", AUTORESEARCH_RETRY_CAP="0.02",
        )  # fmt: skip
    assert code == 0
    out = capsys.readouterr().out
    assert "LLM PAUSED (provider outage)" in out
    assert "resuming" in out
    assert [r["status"] for r in toy.tsv("out1")] == ["keep", "keep"]


def test_rich_view_shows_provider_text_verbatim_and_the_status_line() -> None:
    from harness.night.live import RichView

    class TTY(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = TTY()
    view = RichView(stream)
    view.status_line = lambda: "LLM PAUSED (provider outage) since 10:00:00 | LLM m: $0.1000 spent"
    view.message("provider said [/x] and [redacted]")  # not markup: must neither crash nor vanish
    view.close()
    out = stream.getvalue()
    assert "[/x]" in out and "[redacted]" in out
    assert "LLM PAUSED (provider outage)" in out


def test_prefetched_transplants_are_labelled_by_who_made_them(
    toy_experiment: Toy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A queued (transplanted) reply and the LLM's next proposal are made in the background at
    the same time; each row names the agent of its own reply, whatever the other thread did."""
    from harness.review.transplant import append_queue

    toy = toy_experiment
    edits = iter([_edit(f"{k} steps", "STEPS = 4", f"STEPS = {k}") for k in (5, 6)])
    with FakeLLM(responder=lambda body: reply(next(edits), delay=0.2)) as fake:
        assert _night(toy, monkeypatch, fake, "lab", "--max-experiments", "0", "--baseline-runs", "1") == 0
        append_queue(
            toy.repo / "results" / "lab" / "queue.jsonl",
            [_edit("transplanted: lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")],
        )
        assert _night(toy, monkeypatch, fake, "lab", "--max-experiments", "3", "--resume") == 0
    rows = toy.tsv("lab")
    assert (rows[1]["description"], rows[1]["agent"]) == ("transplanted: lower", "transplant")
    # the two LLM proposals were made concurrently: either may have come back first
    assert sorted((r["description"], r["agent"]) for r in rows[2:]) == [
        ("5 steps", "claude"),
        ("6 steps", "claude"),
    ]
