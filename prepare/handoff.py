"""hand_off: how a train file ends. The trained model goes to the evaluator, never the other way round.

    from prepare import hand_off
    ...training...
    hand_off(model, EVAL_BATCH_SIZE)       # torch (inside the train file's autocast) or MLX

It prints the marker line `@@autoresearch hand-off tokens=<n>` (`prepare.markers`: training is
over, the harness's clock for the budget stops at it), exports the model as data into the
folder the harness named in $AUTORESEARCH_HAND_OFF (`prepare.program` for torch,
`prepare.program_mlx` for MLX) and returns.
The harness then runs `python -m prepare.evaluate_program` on that folder in a process of its
own and takes val_bpb from it; the train run's own summary never carries the metric.

Run by hand (no $AUTORESEARCH_HAND_OFF), it writes the program to a temporary folder and runs
the same evaluator as a child process right away, so `python train.py` still shows val_bpb.

The program's batch is `batch_size` capped at 1/32 of the evaluation rows (the causality probes
fill whole batches, `prepare.causality`) and, for MLX, at the rows whose float32 logits fit the
evaluation's memory slice. A model whose graph cannot be exported (data-dependent control flow,
FlexAttention, custom kernels) fails here, in the train run, with torch's or MLX's message.
What is written is whatever the train process makes of it: the evaluator trusts none of it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def hand_off_folder(evaluator: str) -> Iterator[Path]:
    """The folder a model is exported into: the one the harness named in $AUTORESEARCH_HAND_OFF,
    or, run by hand, a temporary one that the `evaluator` module evaluates right away once the
    export succeeded, and that is then removed."""
    from prepare import env

    named = env.hand_off_dir()
    if named is not None:
        yield named
        return
    folder = Path(tempfile.mkdtemp(prefix="autoresearch-hand-off-"))
    try:
        yield folder
        subprocess.run([sys.executable, "-m", evaluator, str(folder)], check=False)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def hand_off(model: Any, batch_size: int) -> None:
    """Hand the trained `model` (model(idx) -> logits) to the evaluator; see the module docstring."""
    from prepare import causality, env, markers
    from prepare.evalset import eval_rows

    markers.hand_off()
    t0 = time.perf_counter()
    n_rows, seq_len = eval_rows()
    batch = causality.program_batch(batch_size, n_rows)
    with hand_off_folder("prepare.evaluate_program") as folder:
        torch = sys.modules.get("torch")
        if torch is not None and isinstance(model, torch.nn.Module):
            from prepare.program import write_torch

            header = write_torch(model, batch, seq_len, folder)
            what = f"{len(header['nodes'])} ATen operations"
        else:
            from prepare.evaluate_mlx import slice_rows
            from prepare.program_mlx import write_mlx

            vocab = int(env.active_profile()["VOCAB_SIZE"])  # logits are at least this wide in practice
            batch = max(1, min(batch, slice_rows(seq_len, vocab)))
            write_mlx(model, batch, seq_len, folder)
            what = "an MLX function"
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file())
        print(
            f"hand-off: exported {what} for batches of {batch} x {seq_len} tokens "
            f"({size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s",
            flush=True,
        )
