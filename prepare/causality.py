"""Causality probes: proof, on every evaluation, that the handed-off model does not see the future.

A language model is judged by how well it predicts token t+1 from tokens 0..t. A model whose
logits at position t depend on later inputs (a look-ahead, bidirectional attention) scores
almost perfectly and is worthless. The evaluator (`prepare.evaluate_program`) proves this does
not happen, on every evaluation, by mixing *probe rows* into the ordinary batches:

    probe = original[0..cut] + other tokens at positions cut+1 .. seq_len-1

For every position t <= cut the per-position loss (float32 cross-entropy against the
original's targets) must be what the model gave the original there. A causal model computes
exactly the same numbers; a model that looked past the cut does not. Any difference beyond the
tolerance is the crash `non-causal`.

Why this is sound against a model that tries to pass it:

* The comparison is between the original and its probe, so recognising probes does not help:
  behaving causally on a row that looks spliced still leaves the original's prefix different.
* Each probe sits at a random slot of a *later* batch than its original (never the first batch),
  with other rows around it, so a model that looks across the rows of its batch sees different
  neighbours and is caught too.
* The program is stateless (`prepare.program` refuses operators that write to their inputs):
  it cannot remember the original and replay its answer for the probe.
* Rows, cuts, slots and the replacement tokens are drawn afresh from the operating system's
  random source on every evaluation, in a process the agent's code never runs in.

The suffix comes from another evaluation row already seen (real text at the same positions);
if its token right after the cut equals the original's, that one token is shifted by one id so
the probe always differs at position cut+1.

Tolerance, argued from the dtypes: the compared numbers are float32 cross-entropies of logits
that the *same* program computed on the *same* batch shape; the kernels of an honest model
treat each row on its own, so its prefix losses are bit-identical (measured: exactly 0 on this
CPU in float32 and bfloat16). The tolerance `ATOL + RTOL * |loss|` with ATOL = RTOL = 2**-16
(128 float32 ulps) only absorbs a reduction-order change in the float32 log-sum-exp. A
bfloat16 program gets no looser tolerance: its logits for an unchanged prefix are just as
identical, and a looser bound would let a leak of that size through. A leak hidden below the
tolerance moves each loss by less than 2**-16 * (1 + loss) nats, i.e. below 1e-4 bits per byte
on any text with at least one byte per token: under the run-to-run noise.

Cost: PROBE_FRACTION (2 %) of the evaluation rows, rounded up so every batch is full; the
program's batch is at most n_rows // MIN_BATCHES rows so the rounding stays small.
What it cannot catch (ARCHITECTURE.md, "Integrity"): a model that looks ahead on only a few
rows is caught with probability 1 - (1 - f)^P for a share f of rows and P probes per evaluation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PROBE_FRACTION = 0.02  # probes per evaluation row, at least
MIN_BATCHES = 32  # a program's batch holds at most n_rows // MIN_BATCHES rows
ATOL = RTOL = 2.0**-16


class NonCausal(Exception):
    """The model's logits at some position depend on later tokens; the message says where and how much."""


def program_batch(requested: int, n_rows: int) -> int:
    """The batch a program is exported for: what the train file asks, capped so probes stay cheap."""
    return max(1, min(int(requested), n_rows // MIN_BATCHES))


def probe_count(n_rows: int, batch: int) -> int:
    """At least PROBE_FRACTION of the rows (and one), rounded up so that every batch is full."""
    wanted = max(1, math.ceil(PROBE_FRACTION * n_rows))
    return wanted + (-(n_rows + wanted)) % batch


@dataclass(frozen=True)
class Probe:
    orig: int  # the evaluation row it copies up to the cut
    donor: int  # the evaluation row its suffix comes from (-1: none, every suffix token shifted)
    cut: int  # positions 0..cut are compared


@dataclass
class Plan:
    """Which rows go in which batch: ("row", i) is evaluation row i, ("probe", j) is probes[j],
    ("fill", 0) a row of zeros that only fills a batch (when probes are switched off)."""

    batch: int
    batches: list[list[tuple[str, int]]]
    probes: list[Probe]
    last_use: dict[int, int] = field(
        default_factory=dict
    )  # evaluation row -> last batch that needs its tokens


def make_plan(
    n_rows: int,
    batch: int,
    seq_len: int,
    rng: np.random.Generator,
    *,
    probes: bool = True,
    same_batch: bool = False,
) -> Plan:
    """A random plan: the rows in order, probes at random slots of batches after their originals.

    `probes=False` and `same_batch=True` are the test suite's switches that turn the defence off
    (no probes; each probe in the same batch as its original), to show what it stops.
    """
    if seq_len < 2:
        raise ValueError("causality probes need rows of at least 2 tokens")
    n_probes = probe_count(n_rows, batch) if probes else (-n_rows) % batch
    total = n_rows + n_probes
    first = 0 if same_batch else batch  # no probe in the first batch: its original would be in a later one
    slots = (
        set(rng.choice(np.arange(first, total), size=n_probes, replace=False).tolist()) if n_probes else set()
    )
    plan = Plan(batch, [], [])
    seen = 0  # evaluation rows placed so far
    for start in range(0, total, batch):
        rows_before = seen
        entries: list[tuple[str, int]] = []
        for pos in range(start, start + batch):
            if pos not in slots:
                entries.append(("row", seen))
                seen += 1
        # in the test mode a probe copies a row of its own batch; else one of an earlier batch
        pool_end = seen if same_batch else rows_before
        pool_start = rows_before if same_batch and seen > rows_before else 0
        for pos in range(start, start + batch):
            if pos in slots:
                if not probes:  # probes off: a row of zeros fills the batch, never counted
                    entries.insert(pos - start, ("fill", 0))
                    continue
                orig = int(rng.integers(pool_start, pool_end))
                donor = int(rng.integers(0, pool_end - 1)) if pool_end > 1 else -1
                if donor >= orig:
                    donor += 1  # any other row seen so far
                probe = Probe(orig, donor, int(rng.integers(0, seq_len - 1)))
                entries.insert(pos - start, ("probe", len(plan.probes)))
                plan.probes.append(probe)
                k = len(plan.batches)
                plan.last_use[orig] = k
                if donor >= 0:
                    plan.last_use[donor] = k
        plan.batches.append(entries)
    return plan


def probe_tokens(orig: np.ndarray, donor: np.ndarray | None, cut: int, vocab: int) -> np.ndarray:
    """The probe's input row: the original up to `cut`, then the donor's tokens (never equal at cut+1)."""
    row = orig.copy()
    row[cut + 1 :] = donor[cut + 1 :] if donor is not None else (orig[cut + 1 :] + 1) % vocab
    if row[cut + 1] == orig[cut + 1]:
        row[cut + 1] = (orig[cut + 1] + 1) % vocab
    return row


class Ledger:
    """Keeps what the probes need while the batches go by, and compares each probe with its original."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # row -> (inputs, targets)
        self.prefix: dict[int, np.ndarray] = {}  # row -> its per-position losses (float32)
        self.probed = {p.orig for p in plan.probes}
        self.compared = 0
        self.max_diff = 0.0

    def keep(self, row: int, x: np.ndarray, y: np.ndarray) -> None:
        if row in self.plan.last_use:
            self.rows[row] = (x.copy(), y.copy())

    def probe_row(self, j: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of probe j: the targets are its original's (what the losses are taken against)."""
        p = self.plan.probes[j]
        x, y = self.rows[p.orig]
        donor = self.rows[p.donor][0] if p.donor >= 0 else None
        return probe_tokens(x, donor, p.cut, vocab), y

    def original(self, row: int, losses: np.ndarray) -> None:
        if row in self.probed:
            self.prefix[row] = np.array(losses, dtype=np.float32)

    def probe(self, j: int, losses: np.ndarray) -> None:
        """Compare probe j with its original; NonCausal names the first position beyond tolerance."""
        p = self.plan.probes[j]
        a = self.prefix[p.orig][: p.cut + 1].astype(np.float64)
        b = np.asarray(losses, dtype=np.float64)[: p.cut + 1]
        diff = np.abs(a - b)
        self.compared += 1
        self.max_diff = max(self.max_diff, float(np.nan_to_num(diff, nan=np.inf).max()))
        bad = np.flatnonzero(~(diff <= ATOL + RTOL * np.abs(a)))  # NaN counts as a violation
        if bad.size:
            t = int(bad[0])
            raise NonCausal(
                f"the loss at position {t} of evaluation row {p.orig} changed from {a[t]:.6f} to {b[t]:.6f} "
                f"nats when the tokens after position {p.cut} were replaced"
            )

    def release(self, batch_index: int) -> None:
        """Forget rows no later batch needs."""
        for row in [r for r in self.rows if self.plan.last_use[r] <= batch_index]:
            del self.rows[row]
            self.prefix.pop(row, None)
