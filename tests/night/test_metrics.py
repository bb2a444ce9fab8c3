"""The summary-block parser and the progress-line helpers, on logs in the reference format."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from harness.night.metrics import last_loss, metric_value, parse_summary, progress_pct, read_summary

LOGS = Path(__file__).parents[1] / "fixtures" / "logs"

REFERENCE_KEYS = {
    "val_bpb": 0.9979,
    "training_seconds": 300.1,
    "total_seconds": 325.9,
    "peak_vram_mb": 45060.2,
    "mfu_percent": 39.8,
    "total_tokens_M": 499.6,
    "num_steps": 953.0,
    "num_params_M": 50.3,
    "depth": 8.0,
}


def test_successful_cuda_run_gives_the_nine_keys() -> None:
    text = (LOGS / "cuda_success.log").read_text()
    assert text.count("loss:") > 900  # hundreds of \r-separated progress lines before the block
    assert parse_summary(text) == REFERENCE_KEYS
    assert read_summary(LOGS / "cuda_success.log") == REFERENCE_KEYS


def test_newline_progress_lines_also_parse() -> None:
    summary = read_summary(LOGS / "cpu_newlines_success.log")
    assert summary is not None
    assert summary["val_bpb"] == pytest.approx(1.834512)
    assert summary["num_steps"] == 953.0


def test_crash_with_traceback_has_no_block() -> None:
    assert parse_summary((LOGS / "crash_traceback.log").read_text()) is None
    assert read_summary(LOGS / "crash_traceback.log") is None
    assert metric_value(read_summary(LOGS / "crash_traceback.log"), "val_bpb") is None


def test_last_of_two_blocks_wins() -> None:
    summary = read_summary(LOGS / "two_blocks.log")
    assert summary is not None
    assert summary["val_bpb"] == pytest.approx(1.1981)
    # the second block is whole, not merged with the first
    assert summary["num_steps"] == 953.0


def test_nan_fail_log_has_no_block_and_nan_losses() -> None:
    text = (LOGS / "nan_fail.log").read_text()
    assert read_summary(LOGS / "nan_fail.log") is None
    losses = [last_loss(line) for line in text.splitlines() if "loss:" in line]
    assert losses and all(v is not None for v in losses)
    last = losses[-1]
    assert last is not None and math.isnan(last)
    assert text.rstrip().endswith("FAIL")


def test_extra_keys_are_kept_numbers_as_float_others_as_str() -> None:
    summary = read_summary(LOGS / "extra_keys.log")
    assert summary is not None
    assert summary["tokens_per_s"] == pytest.approx(1658736.2)
    assert summary["ema_decay"] == pytest.approx(0.999)
    assert summary["notes"] == "swiglu+rope"
    assert set(REFERENCE_KEYS) <= set(summary)


def test_a_later_dashes_line_without_keys_does_not_hide_the_block() -> None:
    summary = read_summary(LOGS / "block_then_stray_dashes.log")
    assert summary is not None and summary["val_bpb"] == pytest.approx(0.9979)


def test_parse_summary_details() -> None:
    assert parse_summary("") is None
    assert parse_summary("---\n") is None
    assert parse_summary("no block here\nval_bpb: 1.0\n") is None  # keys without a --- line
    assert parse_summary("---\nval_bpb: nan\n") is not None
    assert metric_value(parse_summary("---\nval_bpb: nan\n"), "val_bpb") is None
    assert metric_value(parse_summary("---\nval_bpb: inf\n"), "val_bpb") is None
    assert metric_value(parse_summary("---\nval_bpb: fast\n"), "val_bpb") is None
    assert metric_value(parse_summary("---\nother: 1\n"), "val_bpb") is None
    # the block stops at the first line that is not `key: value`
    got = parse_summary("---\nval_bpb: 1.5\nTraceback (most recent call last):\nx: 2\n")
    assert got == {"val_bpb": 1.5}
    # a value keeps inner spaces; CRLF logs work
    assert parse_summary("---\r\nnote: a b c\r\nval_bpb: 2\r\n") == {"note": "a b c", "val_bpb": 2.0}


def test_read_summary_of_a_big_log_reads_the_tail(tmp_path: Path) -> None:
    # ~8 MB of progress lines, the block at the end; and a block buried before 8 MB of noise.
    line = "step 00012 (4.1%) | loss: 3.123456 | lrm: 1.00 | dt: 312ms | tok/sec: 1,234,567 | mfu: 40.1%\n"
    noise = line * 80_000
    big = tmp_path / "big.log"
    big.write_text(noise + "---\nval_bpb: 0.5\n")
    assert read_summary(big) == {"val_bpb": 0.5}
    buried = tmp_path / "buried.log"
    buried.write_text("---\nval_bpb: 0.25\nnum_steps: 3\n" + noise)
    assert read_summary(buried) == {"val_bpb": 0.25, "num_steps": 3.0}
    assert read_summary(tmp_path / "missing.log") is None


def test_block_cut_by_the_tail_window_is_read_whole(tmp_path: Path) -> None:
    # 70 000 key lines: the block straddles the first 64 KiB window, its `---` outside it.
    keys = "".join(f"k{i}: {i}\n" for i in range(70_000))
    log = tmp_path / "wide.log"
    log.write_text("warmup\n---\n" + keys)
    summary = read_summary(log)
    assert summary is not None and len(summary) == 70_000 and summary["k0"] == 0.0


def test_last_loss_and_progress_pct() -> None:
    line = "step 00012 (4.1%) | loss: 3.123456 | lrm: 1.00 | dt: 312ms | tok/sec: 1,234,567 | mfu: 40.1% | remaining: 287s"
    assert last_loss(line) == pytest.approx(3.123456)
    assert progress_pct(line) == pytest.approx(4.1)
    nan = last_loss("step 00052 (5.5%) | loss: nan | lrm: 1.00")
    assert nan is not None and math.isnan(nan)
    inf = last_loss("step 1 (0.1%) | loss: inf |")
    assert inf == math.inf
    assert last_loss("step 1 (0.1%) | loss: 1.5e+03 |") == pytest.approx(1500.0)
    assert last_loss("val_loss: 2.0") is None
    assert last_loss("train_loss: 2.0") is None
    assert last_loss("no loss here") is None
    assert progress_pct("mfu: 40.1%") is None
    assert progress_pct("step 00000 (100.0%)") == 100.0
