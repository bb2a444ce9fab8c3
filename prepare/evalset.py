"""What both evaluate_bpb paths share: the pinned validation rows and the eval record.

Every evaluation reads the same rows: EVAL_TOKENS // MAX_SEQ_LEN rows of the validation split
of the active dataset and profile, packed exactly as for training (`eval_batches_numpy`).
`record_result` turns the summed nats and bytes into bits per byte and, when
$AUTORESEARCH_EVAL_RECORD is set, appends one JSON line saying what was computed:
    {"val_bpb": float, "eval_tokens": int, "target_tokens": int, "bytes": int, "seconds": float}
The harness compares that record with the metric the run printed (provenance).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator

import numpy as np

from prepare import env
from prepare.dataloader import batches, make_packer
from prepare.tokenizer import Tokenizer


def eval_rows() -> tuple[int, int]:
    """(number of rows, seq_len) evaluated under the active profile."""
    profile = env.active_profile()
    seq_len = int(profile["MAX_SEQ_LEN"])
    return max(1, int(profile["EVAL_TOKENS"]) // seq_len), seq_len


def eval_batches_numpy(tokenizer: Tokenizer, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The validation rows as (inputs, targets) int32 arrays, batch_size rows at a time (the last may be fewer)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n_rows, seq_len = eval_rows()
    packer = make_packer(tokenizer, seq_len, "val")
    sizes = [min(batch_size, n_rows - start) for start in range(0, n_rows, batch_size)]
    for rows, _ in batches(packer, sizes):  # packed ahead in a thread: overlaps the model's forward
        yield np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])


def record_result(
    total_nats: float, total_bytes: int, target_tokens: int, eval_tokens: int, seconds: float
) -> float:
    """Turn the sums into bits per byte and append the eval record when requested."""
    if total_bytes <= 0:
        raise ValueError(
            "the validation targets contain no bytes; the dataset is empty or all special tokens"
        )
    bpb = total_nats / (math.log(2) * total_bytes)
    path = env.eval_record_path()
    if path is not None:
        line = json.dumps(
            {
                "val_bpb": bpb,
                "eval_tokens": int(eval_tokens),
                "target_tokens": int(target_tokens),
                "bytes": int(total_bytes),
                "seconds": round(seconds, 3),
            }
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())
    return bpb
