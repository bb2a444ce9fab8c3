"""Tests for harness.pipeline: background proposals, stale re-application, adaptive depth."""

from __future__ import annotations

import threading

import pytest

from harness.errors import ConfigError, ProviderError
from harness.pipeline import Pipeline, depth_from_env


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
    assert pipe.depth() == 2
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


def test_depth_from_env() -> None:
    assert depth_from_env({}) is None
    assert depth_from_env({"AUTORESEARCH_PIPELINE_DEPTH": "auto"}) is None
    assert depth_from_env({"AUTORESEARCH_PIPELINE_DEPTH": "0"}) == 0
    with pytest.raises(ConfigError, match="AUTORESEARCH_PIPELINE_DEPTH"):
        depth_from_env({"AUTORESEARCH_PIPELINE_DEPTH": "many"})
