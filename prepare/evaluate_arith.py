"""The `arith` evaluator: exact-match accuracy of greedy decoding on held-out additions.

    python -m prepare.evaluate_arith FOLDER

For experiments with `[integrity] evaluator = "arith"` (arith-cot, finetune; dataset
`arithmetic`). The train file ends with `prepare.hand_off_decoder(model, batch_size)`, which
exports the model (idx (batch, DECODE_LEN) int64 -> logits) with `prepare.program.write_torch`
on that one shape: the same file format the bpb evaluator reads. This module, run by the
harness in a fresh interpreter of its own after the train run has ended, loads it as data
(`prepare.program.load_torch`: JSON and raw tensors, a closed list of pure ATen operators, no
state, no random numbers; nothing of the agent's is imported or run) and decodes with it
greedily, one token per call of the program:

    rows   = [<bos> a+b=  0 0 0 ...]           one problem per row, the rest padding
    logits = program(rows)                      the whole row every step: the shape is fixed
    rows[r, n_r] = argmax(logits[r, n_r - 1])   for every row not finished, n_r += 1

A row is finished when the model emits a special token (BOS or EOS: in the packed training
data a problem ends where the next one's BOS starts) or fills the row. A problem is solved
when the text before that stop holds `</think>` and what follows the last one is exactly the
decimal sum. The chain of thought itself is the model's business. Padding after a row's end
cannot help a model that looks ahead: it holds zeros, never the answer.

The problems are drawn afresh in every evaluation from the operating system's random source,
so a train run cannot know them: `IN_SHARE` of them with operands of 1..MAX_DIGITS digits as in
training (each pair one the training split never holds, `arithmetic.is_validation`), the rest
with operands of MAX_DIGITS+1..MAX_DIGITS+LONG_EXTRA digits, longer than anything in training.
The draw makes the metric noisy (binomial: about 0.8 points at p = 0.5 on the cuda profile's
4,096 problems); the noise-aware judge measures that noise like any other.

Its last stdout line is the result the harness reads from its pipe:

    @@autoresearch evaluation {"accuracy": ..., "accuracy_in": ..., "accuracy_long": ...,
                               "problems": ..., "seconds": ...}
    @@autoresearch evaluation {"reason": "refused program: ..." | "evaluation failed: ..."}
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from prepare import arithmetic
from prepare.verdict import RunFailed, conclude

DECODE_LEN = 128  # tokens per row: BOS + the longest problem (8+8 digits, chain of thought) is 113
LONG_EXTRA = 2  # the longer problems have MAX_DIGITS+1 .. MAX_DIGITS+LONG_EXTRA digits
IN_SHARE = 2 / 3  # share of problems with training-length operands
PROBLEMS = {"cuda": 4096, "mlx": 512, "cpu": 32}  # problems per evaluation, by device profile


def problem_count() -> int:
    from prepare import env

    return PROBLEMS[env.device()]


def held_out(n: int, rng: random.Random) -> list[tuple[int, int, bool]]:
    """`n` problems (a, b, long): the first round(n * IN_SHARE) of training length, never in the
    training split; the rest longer than any training problem."""
    n_in = round(n * IN_SHARE)
    out: list[tuple[int, int, bool]] = []
    while len(out) < n_in:
        a, b = _operand(rng, 1, arithmetic.MAX_DIGITS), _operand(rng, 1, arithmetic.MAX_DIGITS)
        if arithmetic.is_validation(a, b):
            out.append((a, b, False))
    lo, hi = arithmetic.MAX_DIGITS + 1, arithmetic.MAX_DIGITS + LONG_EXTRA
    out += [(_operand(rng, lo, hi), _operand(rng, lo, hi), True) for _ in range(n - n_in)]
    return out


def _operand(rng: random.Random, lo: int, hi: int) -> int:
    digits = rng.randint(lo, hi)
    return rng.randint(0 if digits == 1 else 10 ** (digits - 1), 10**digits - 1)


def solved(completion: str, a: int, b: int) -> bool:
    """Whether a completion (the text after `a+b=`, up to the stop) ends `</think>` + the sum."""
    return "</think>" in completion and completion.rsplit("</think>", 1)[1] == str(a + b)


def hand_off_decoder(model: Any, batch_size: int) -> None:
    """Hand the trained torch `model` (idx -> logits) to this evaluator; see the module docstring.

    Prints the hand-off marker (training is over), exports the model for batches of
    `batch_size` rows (capped at the problem count) of DECODE_LEN tokens into the folder the
    harness named; run by hand, into a temporary folder, and evaluates it right away.
    """
    from prepare import markers
    from prepare.handoff import hand_off_folder
    from prepare.program import write_torch

    markers.hand_off()
    t0 = time.perf_counter()
    batch = max(1, min(batch_size, problem_count()))
    with hand_off_folder("prepare.evaluate_arith") as folder:
        header = write_torch(model, batch, DECODE_LEN, folder)
        print(
            f"hand-off: exported {len(header['nodes'])} ATen operations for greedy decoding, "
            f"batches of {batch} x {DECODE_LEN} tokens, in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )


def evaluate(folder: Path, *, problems: int | None = None, seed: int | None = None) -> dict[str, Any]:
    """Decode the held-out problems with the program in `folder`; the result line's numbers."""
    import torch

    from prepare import env
    from prepare.program import ProgramError, load_torch
    from prepare.tokenizer import Tokenizer

    t0 = time.perf_counter()
    torch._C._set_deterministic_algorithms(True, warn_only=True)
    device = torch.device("cuda" if env.device() == "cuda" and torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        # one decoding step is small: on a shared CPU, OpenMP threads spinning for each other made a
        # step of the cpu profile's program 8x slower (1.8 s against 0.23 s on one thread, load 13)
        torch.set_num_threads(1)
    program = load_torch(folder, device)
    if program.seq_len != DECODE_LEN:
        raise ProgramError(
            f"the program takes rows of {program.seq_len} tokens; greedy decoding uses {DECODE_LEN}"
        )
    tokenizer = Tokenizer.load()
    rng = random.Random(secrets.randbits(128) if seed is None else seed)
    todo = held_out(problems or problem_count(), rng)
    right = {False: 0, True: 0}
    for start in range(0, len(todo), program.batch):
        chunk = todo[start : start + program.batch]
        prompts = [[tokenizer.bos_id, *tokenizer.encode(f"{a}+{b}=")] for a, b, _ in chunk]
        for (a, b, long), ids in zip(chunk, greedy(program, prompts, tokenizer, device), strict=True):
            right[long] += solved(tokenizer.decode(ids), a, b)
    n_long = sum(1 for *_, long in todo if long)
    n_in = len(todo) - n_long
    return {
        "accuracy": (right[False] + right[True]) / len(todo),
        "accuracy_in": right[False] / n_in if n_in else 0.0,
        "accuracy_long": right[True] / n_long if n_long else 0.0,
        "problems": len(todo),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def greedy(program: Any, prompts: list[list[int]], tokenizer: Any, device: Any) -> list[list[int]]:
    """The greedy completion of each prompt (without its stop token), at most a row's length."""
    import torch

    n, batch, width = len(prompts), program.batch, program.seq_len
    rows = torch.zeros((batch, width), dtype=torch.long)
    lengths = torch.ones(batch, dtype=torch.long)
    for r, ids in enumerate(prompts):
        rows[r, : len(ids)] = torch.tensor(ids[:width])
        lengths[r] = min(len(ids), width)
    done = torch.zeros(batch, dtype=torch.bool)
    done[n:] = True  # filler rows of the last batch
    done |= lengths >= width
    special = torch.tensor(sorted(tokenizer.special_ids), dtype=torch.long)
    rows, lengths, done, special = rows.to(device), lengths.to(device), done.to(device), special.to(device)
    index = torch.arange(batch, device=device)
    with torch.inference_mode():
        while not bool(done.all()):
            try:
                logits = program(rows)
                if tuple(logits.shape[:2]) != (batch, width) or logits.dim() != 3:
                    raise ValueError(f"logits of shape {tuple(logits.shape)} for rows of {(batch, width)}")
                nxt = logits[index, lengths - 1].float().argmax(dim=-1)
            except (TypeError, RuntimeError, IndexError, ValueError) as exc:
                raise RunFailed(
                    f"the program raised {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                ) from None
            stop = torch.isin(nxt, special)
            write = ~done & ~stop
            rows[index[write], lengths[write]] = nxt[write]
            lengths = torch.where(write, lengths + 1, lengths)
            done = done | stop | (lengths >= width)
    rows_host, lengths_host = rows.cpu().tolist(), lengths.cpu().tolist()
    return [rows_host[r][len(prompts[r]) : lengths_host[r]] for r in range(n)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prepare.evaluate_arith", description=__doc__.splitlines()[0]
    )
    parser.add_argument("folder", type=Path, help="the hand-off folder")
    args = parser.parse_args(argv)
    return conclude(
        lambda: evaluate(args.folder),
        "accuracy",
        [
            ("accuracy", "accuracy", ".6f"),
            ("accuracy_in", "accuracy_in", ".6f"),
            ("accuracy_long", "accuracy_long", ".6f"),
            ("problems", "problems", ""),
            ("eval_seconds", "seconds", ".1f"),
        ],
    )


if __name__ == "__main__":
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (before CUDA starts)
    sys.exit(main())
