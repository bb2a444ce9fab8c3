"""What every evaluation shares: the pinned validation rows and bits per byte.

Every evaluation reads the same rows: EVAL_TOKENS // MAX_SEQ_LEN rows of the validation split
of the active dataset and profile, packed exactly as for training (`eval_batches_numpy`).
`bits_per_byte` turns the summed nats and bytes into the metric. Used by the evaluator
(`prepare.evaluate_program`) and by the in-process `evaluate_bpb` (torch and MLX).
"""

from __future__ import annotations

import math
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


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    """Summed nats over summed UTF-8 bytes, in bits per byte."""
    if total_bytes <= 0:
        raise ValueError(
            "the validation targets contain no bytes; the dataset is empty or all special tokens"
        )
    return total_nats / (math.log(2) * total_bytes)
