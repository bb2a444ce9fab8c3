"""The synthetic `arithmetic` dataset: multi-digit additions with step-by-step carries.

One document is one problem, the columns worked right to left, a carry shown as `+1`:

    658+189=<think>8+9=17 5+8+1=14 6+1+1=8</think>847

A shorter operand is padded with 0 in the steps (`58+189=<think>8+9=17 5+8+1=14 0+1+1=2</think>247`).
Operands have 1..MAX_DIGITS digits, each digit count equally likely.

Generated offline and deterministically (fixed seeds), so every machine builds the same bytes.
The split is pinned by a hash of the unordered pair {a, b}: a problem (and its mirror b+a) is in
validation iff the hash says so, and the training generator drops such problems, so no
validation problem ever appears in training.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator

VERSION = 1  # bump when the generator's output changes: old caches are then refused
MAX_DIGITS = 6
TRAIN_PROBLEMS = 200_000
VAL_PROBLEMS = 10_000
PROBLEMS_PER_SHARD = 50_000
VAL_PERCENT = 5
TRAIN_SEED = 20261121
VAL_SEED = 6542


def problem(a: int, b: int) -> str:
    """The worked addition of two non-negative integers."""
    if a < 0 or b < 0:
        raise ValueError("operands must be non-negative")
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+1={s}" if carry else f"{x}+{y}={s}")
        carry = s // 10
    return f"{a}+{b}=<think>{' '.join(steps)}</think>{a + b}"


def is_validation(a: int, b: int) -> bool:
    lo, hi = min(a, b), max(a, b)
    digest = hashlib.blake2b(f"{lo}+{hi}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 100 < VAL_PERCENT


def _operand(rng: random.Random) -> int:
    digits = rng.randint(1, MAX_DIGITS)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def _pairs(seed: int) -> Iterator[tuple[int, int]]:
    rng = random.Random(seed)
    while True:
        yield _operand(rng), _operand(rng)


def train_problems(n: int = TRAIN_PROBLEMS) -> list[str]:
    """`n` training problems (repeats allowed: small problems recur as they would in any sample)."""
    out: list[str] = []
    for a, b in _pairs(TRAIN_SEED):
        if not is_validation(a, b):
            out.append(problem(a, b))
            if len(out) == n:
                return out
    raise AssertionError("unreachable")


def val_problems(n: int = VAL_PROBLEMS) -> list[str]:
    """`n` distinct validation problems."""
    seen: set[str] = set()
    out: list[str] = []
    for a, b in _pairs(VAL_SEED):
        if is_validation(a, b):
            text = problem(a, b)
            if text not in seen:
                seen.add(text)
                out.append(text)
                if len(out) == n:
                    return out
    raise AssertionError("unreachable")


def params() -> dict[str, int]:
    """What the manifest records, so a cache built by another generator version is refused."""
    return {
        "version": VERSION,
        "max_digits": MAX_DIGITS,
        "train_problems": TRAIN_PROBLEMS,
        "val_problems": VAL_PROBLEMS,
        "val_percent": VAL_PERCENT,
        "train_seed": TRAIN_SEED,
        "val_seed": VAL_SEED,
    }
