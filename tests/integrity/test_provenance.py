"""Metric provenance: the printed val_bpb must be the one prepare's evaluate_bpb recorded in that run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.integrity.provenance import EvalRecord, expected_eval_tokens, printed_metric
from harness.night.metrics import read_summary

ROOT = Path(__file__).resolve().parents[2]
EVAL = "from prepare.evalset import record_result\nv = record_result({nats}, 1000, 900, {tokens}, 0.1)\n"
TOKENS = expected_eval_tokens("cpu")


def _run(code: str, record: EvalRecord, tmp_path: Path) -> Path:
    env = dict(os.environ) | record.env() | {"PYTHONPATH": str(ROOT)}
    log = tmp_path / "run.log"
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-c", code], env=env, stdout=f, stderr=subprocess.STDOUT, check=True)
    return log


def _verify(code: str, tmp_path: Path) -> str | None:
    record = EvalRecord.create(tmp_path)
    log = _run(code, record, tmp_path)
    try:
        return record.verify(
            printed_metric(read_summary(log, raw=True), "val_bpb"), expected_eval_tokens=TOKENS
        )
    finally:
        record.archive(tmp_path / "0.eval.jsonl")


def test_honest_run_is_verified_and_archived(tmp_path: Path) -> None:
    code = EVAL.format(nats=700.0, tokens=TOKENS) + "print('---'); print(f'val_bpb:          {v:.6f}')\n"
    assert _verify(code, tmp_path) is None
    assert (tmp_path / "0.eval.jsonl").read_text().count("val_bpb") == 1
    assert not list(tmp_path.glob("ar-eval-*"))  # the temp record is gone


def test_faked_summary_without_evaluation(tmp_path: Path) -> None:
    reason = _verify("print('---'); print('val_bpb: 0.500000')", tmp_path)
    assert reason is not None and reason.startswith("unverified metric") and "never ran" in reason


def test_number_printed_after_evaluation_differs(tmp_path: Path) -> None:
    code = (
        EVAL.format(nats=700.0, tokens=TOKENS) + "print('---'); print(f'val_bpb:          {v - 0.01:.6f}')\n"
    )
    reason = _verify(code, tmp_path)
    assert reason is not None and "but evaluate_bpb computed" in reason


def test_printed_precision_is_honoured(tmp_path: Path) -> None:
    # 700 / (ln 2 * 1000) = 1.00988...: four printed decimals must match to +-5e-5
    code = EVAL.format(nats=700.0, tokens=TOKENS) + "print('---'); print(f'val_bpb: {v:.4f}')\n"
    assert _verify(code, tmp_path) is None
    code = EVAL.format(nats=700.0, tokens=TOKENS) + "print('---'); print(f'val_bpb: {v + 0.0002:.4f}')\n"
    assert _verify(code, tmp_path) is not None


def test_smaller_eval_size_is_caught(tmp_path: Path) -> None:
    code = EVAL.format(nats=700.0, tokens=256) + "print('---'); print(f'val_bpb: {v:.6f}')\n"
    reason = _verify(code, tmp_path)
    assert reason is not None and "tokens" in reason


def test_replaced_record_file_is_caught(tmp_path: Path) -> None:
    code = (
        "import os, json\np = os.environ['AUTORESEARCH_EVAL_RECORD']\nos.remove(p)\n"
        f"open(p, 'w').write(json.dumps({{'val_bpb': 0.5, 'eval_tokens': {TOKENS}}}) + '\\n')\n"
        "print('---'); print('val_bpb: 0.500000')\n"
    )
    reason = _verify(code, tmp_path)
    assert reason is not None and "replaced" in reason


def test_no_metric_is_left_to_the_loop(tmp_path: Path) -> None:
    assert _verify("print('crashed before the summary')", tmp_path) is None


def test_printed_metric_reads_the_last_block(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    log.write_text("---\nval_bpb: 1.000000\nstep 5\n---\nfoo: 1\nval_bpb:   0.990000\ntotal: 3\n")
    assert printed_metric(read_summary(log, raw=True), "val_bpb") == "0.990000"
    assert printed_metric(read_summary(tmp_path / "missing.log", raw=True), "val_bpb") is None


@pytest.mark.parametrize("device", ["cpu", "cuda", "mlx"])
def test_expected_eval_tokens_are_whole_rows(device: str) -> None:
    tokens = expected_eval_tokens(device)
    assert tokens is not None and tokens > 0
