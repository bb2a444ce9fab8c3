"""The evaluator: val_bpb of a handed-off model, computed where no agent code runs, with causality proof.

    python -m prepare.evaluate_program FOLDER

FOLDER holds what `prepare.hand_off` wrote (`prepare.program` for torch, `prepare.program_mlx`
for MLX). The harness starts this module in a fresh interpreter of its own, after the train
run has ended, with only prepare/ and constants.py importable (copies taken after the guard
verified them) and, in the sandbox, the validation data visible read-only and no network.
It loads the program as data (nothing of the agent's is imported or run), then evaluates the
pinned validation rows exactly as `prepare.evaluate.evaluate_bpb` does (same rows, byte counts
from the tokenizer, float32 cross-entropy in slices, float64 sums), with the causality probes
of `prepare.causality` mixed into the batches.

Its last stdout line is the result, the one channel the harness reads the metric from:

    @@autoresearch evaluation {"val_bpb": ..., "eval_tokens": ..., "target_tokens": ..., "bytes": ...,
                               "seconds": ..., "probes": ..., "max_probe_diff": ...}
    @@autoresearch evaluation {"reason": "refused program: ..." | "non-causal: ..." | "evaluation failed: ..."}

Exit status 0 with a val_bpb, 1 otherwise. A summary block (`---`, `key: value`) is printed
before it for people reading the log. `--no-probes`, `--same-batch-probes` and `--allow-state`
switch defences off; only the test suite uses them, to show what each stops.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from prepare.verdict import RunFailed, conclude


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prepare.evaluate_program", description=__doc__.splitlines()[0]
    )
    parser.add_argument("folder", type=Path, help="the hand-off folder")
    parser.add_argument("--no-probes", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--same-batch-probes", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--allow-state", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from prepare.causality import NonCausal

    return conclude(
        lambda: evaluate(
            args.folder,
            probes=not args.no_probes,
            same_batch=args.same_batch_probes,
            allow_state=args.allow_state,
        ),
        "val_bpb",
        [
            ("val_bpb", "val_bpb", ".6f"),
            ("eval_seconds", "seconds", ".1f"),
            ("eval_tokens", "eval_tokens", ""),
            ("causal_probes", "probes", ""),
        ],
        refusals=[(NonCausal, "non-causal")],
    )


def evaluate(
    folder: Path, *, probes: bool = True, same_batch: bool = False, allow_state: bool = False
) -> dict[str, Any]:
    """Evaluate the program in `folder` on the active profile's validation rows; see the module doc."""
    from prepare import causality, env
    from prepare.evalset import bits_per_byte, eval_batches_numpy, eval_rows
    from prepare.program import ProgramError, read_header
    from prepare.tokenizer import Tokenizer

    t0 = time.perf_counter()
    header = read_header(folder)
    n_rows, seq_len = eval_rows()
    tokenizer = Tokenizer.load()
    backend = _backend(header, folder, env.device(), allow_state)
    if backend.seq_len != seq_len:
        raise ProgramError(
            f"the program takes rows of {backend.seq_len} tokens; the profile evaluates {seq_len}"
        )
    if not 1 <= backend.batch <= max(1, n_rows // causality.MIN_BATCHES):
        raise ProgramError(
            f"the program's batch of {backend.batch} rows is larger than {max(1, n_rows // causality.MIN_BATCHES)}, "
            "the most the probes allow"
        )
    rng = np.random.default_rng(secrets.randbits(128))
    plan = causality.make_plan(n_rows, backend.batch, seq_len, rng, probes=probes, same_batch=same_batch)
    ledger = causality.Ledger(plan)
    token_bytes = np.asarray(tokenizer.token_bytes, dtype=np.int64)
    vocab = tokenizer.vocab_size
    stream = (
        (x, y) for xs, ys in eval_batches_numpy(tokenizer, backend.batch) for x, y in zip(xs, ys, strict=True)
    )
    total_bytes = target_tokens = 0
    for k, entries in enumerate(plan.batches):
        rows = {}
        for kind, i in entries:  # the evaluation rows of this batch first: probes may copy them
            if kind == "row":
                rows[i] = next(stream)
                ledger.keep(i, *rows[i])
        xs, ys, counted = [], [], []
        for kind, i in entries:
            if kind == "row":
                x, y = rows[i]
            elif kind == "probe":
                x, y = ledger.probe_row(i, vocab)
            else:
                x = y = np.zeros(seq_len, dtype=np.int32)
            xs.append(x)
            ys.append(y)
            counted.append(kind == "row")
        y_np = np.stack(ys)
        weights = (token_bytes[y_np] > 0) & np.array(counted)[:, None]
        losses = backend.losses(np.stack(xs), y_np, vocab)
        backend.accumulate(losses, weights)
        total_bytes += int(token_bytes[y_np[np.array(counted)]].sum())
        target_tokens += int(weights.sum())
        needed = [
            r
            for r, (kind, i) in enumerate(entries)
            if kind == "probe" or (kind == "row" and i in ledger.probed)
        ]
        host = dict(zip(needed, backend.rows(losses, needed), strict=True))
        for r, (kind, i) in enumerate(entries):
            if kind == "row" and r in host:
                ledger.original(i, host[r])
        for r, (kind, i) in enumerate(entries):
            if kind == "probe":
                ledger.probe(i, host[r])
        ledger.release(k)
    return {
        "val_bpb": bits_per_byte(backend.total_nats(), total_bytes),
        "eval_tokens": n_rows * seq_len,
        "target_tokens": target_tokens,
        "bytes": total_bytes,
        "seconds": round(time.perf_counter() - t0, 3),
        "probes": ledger.compared,
        "max_probe_diff": ledger.max_diff,
    }


def _backend(header: dict[str, Any], folder: Path, device: str, allow_state: bool) -> Any:
    from prepare.program import ProgramError

    framework = header.get("framework")
    if framework == "torch":
        return _Torch(folder, device, allow_state)
    if framework == "mlx":
        return _Mlx(folder)
    raise ProgramError(f"unknown framework {str(framework)[:40]!r}")


class _Torch:
    """Runs a torch program on the profile's device; float32 losses, float64 sums on the device."""

    def __init__(self, folder: Path, device: str, allow_state: bool) -> None:
        import torch

        from prepare.program import load_torch

        # deterministic kernels where torch has a choice; the C switch directly, because
        # torch.use_deterministic_algorithms imports the compiler stack (seconds) to tell it too
        torch._C._set_deterministic_algorithms(True, warn_only=True)
        self.torch = torch
        self.device = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
        self.program = load_torch(folder, self.device, allow_state=allow_state)
        self.batch, self.seq_len = self.program.batch, self.program.seq_len
        self.nats = torch.zeros((), dtype=torch.float64, device=self.device)

    def losses(self, x: np.ndarray, y: np.ndarray, vocab: int) -> Any:
        from prepare.evaluate import check_logits, torch_losses

        torch = self.torch
        xt = torch.from_numpy(x).long().to(self.device)
        yt = torch.from_numpy(y).long().to(self.device)
        with torch.inference_mode():
            try:
                logits = self.program(xt)
                check_logits(logits, tuple(xt.shape), vocab)
            except (TypeError, RuntimeError, IndexError, ValueError) as exc:
                raise RunFailed(
                    f"the program raised {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
                ) from None
            return torch_losses(logits, yt)

    def accumulate(self, losses: Any, weights: np.ndarray) -> None:
        torch = self.torch
        mask = torch.from_numpy(weights).to(self.device)
        self.nats += torch.where(mask, losses, torch.zeros_like(losses)).sum(dtype=torch.float64)

    def rows(self, losses: Any, index: list[int]) -> list[np.ndarray]:
        return list(losses[index].cpu().numpy()) if index else []

    def total_nats(self) -> float:
        return float(self.nats.item())


class _Mlx:
    """Runs an imported MLX function; float32 losses, float64 sums on the host (Metal has no float64)."""

    def __init__(self, folder: Path) -> None:
        import mlx.core as mx

        from prepare.program_mlx import load_mlx

        self.mx = mx
        self.program = load_mlx(folder)
        self.batch, self.seq_len = self.program.batch, self.program.seq_len
        self.nats = 0.0

    def losses(self, x: np.ndarray, y: np.ndarray, vocab: int) -> Any:
        from prepare.evaluate_mlx import check_logits, mlx_losses

        mx = self.mx
        try:
            logits = self.program(mx.array(x.astype(np.int32)))
            check_logits(logits, tuple(x.shape), vocab)
            losses = mlx_losses(logits, mx.array(y.astype(np.int32)))
            mx.eval(losses)  # boundary: one batch's activations at a time
        except (TypeError, RuntimeError, ValueError) as exc:
            raise RunFailed(
                f"the program raised {type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            ) from None
        return np.array(losses)

    def accumulate(self, losses: np.ndarray, weights: np.ndarray) -> None:
        self.nats += float(np.where(weights, losses, 0.0).astype(np.float64).sum())

    def rows(self, losses: np.ndarray, index: list[int]) -> list[np.ndarray]:
        return [losses[r] for r in index]

    def total_nats(self) -> float:
        return self.nats


if __name__ == "__main__":
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (before CUDA starts)
    sys.exit(main())
