"""Shared pieces of the evaluation tests (torch and MLX paths): a table model and a reader for
the validation rows."""

from __future__ import annotations

import numpy as np
import torch

from prepare import evalset
from prepare.tokenizer import Tokenizer


class TorchTable(torch.nn.Module):
    """logits[b, t] = table[idx[b, t]]: a bigram model (a constant row for a unigram one)."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]


def all_rows(tok: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*evalset.eval_batches_numpy(tok, 1000), strict=True)
    return np.concatenate(xs), np.concatenate(ys)
