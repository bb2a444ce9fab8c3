"""The immutable benchmark and correctness gate of the `kernel` experiment (a Triton kernel race).

    python -m prepare.kernel_bench [FILE]      (FILE: the agent's kernel, default kernel.py)

FILE defines `causal_conv1d(x, weight, bias) -> y`, the causal depthwise convolution of the
`conv-lm` experiment: x is (B, T, C) contiguous (float32 or bfloat16), weight (C, K) and bias
(C,) float32, and y[b, t, c] = bias[c] + sum_k weight[c, k] * x[b, t - (K - 1) + k, c] (zero
before the sequence), of x's shape, dtype and device. This module:

1. refuses to start without a CUDA GPU (one line, exit 2), unless TRITON_INTERPRET=1 asks for
   Triton's interpreter on the CPU (tests only: tiny shapes, timings meaningless);
2. imports FILE and runs the **correctness gate**: adversarial shapes (one token, fewer tokens
   than taps, channel and token counts that are no multiple of any tile, one tap, many taps,
   large magnitudes, bfloat16) and random shapes drawn afresh from the operating system's random
   source in every run, each compared with a float64 reference computed here; the inputs must be
   left unchanged. A failure prints ``@@autoresearch incorrect <case>: <why>`` and exits 1, which
   the harness records as the crash reason ``incorrect: ...``;
3. **benchmarks** fixed shapes: each timed call reads a different input buffer (several, more
   bytes than the GPU's L2 cache), and after the timing the buffers are rewritten in place and
   each one's output checked again, so a kernel that remembers earlier answers is caught;
4. prints the summary block: ``gbps`` (the metric: geometric mean over the shapes of the bytes a
   call must move, x read and y written, over its median time) and per-shape microseconds.

The agent's kernel runs in this process (a benchmark has to call it), so this module is a gate
against honest mistakes, not a wall against a kernel that patches it in memory: ARCHITECTURE.md
("Integrity: the kernel experiment") says what isolation still holds.
``--no-gate`` skips every correctness check; only tests pass it, to show what the gate stops.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARKER = "@@autoresearch incorrect"
# |kernel - reference| <= TOLERANCE[dtype] * (|x| conv |weight| + |bias|) + TINY: float32 leaves room
# for a float32 sum of up to 64 products in any order; bfloat16 for rounding the float32 result once.
TOLERANCE = {"float32": 2.0**-17, "bfloat16": 2.0**-7}
TINY = 1e-30
RANDOM_CASES = 12
ROTATING_BYTES = 256 << 20  # input buffers per shape: more than any GPU's L2 cache


@dataclass(frozen=True)
class Case:
    """One input of the gate or the benchmark."""

    name: str
    batch: int
    tokens: int
    channels: int
    taps: int
    dtype: str = "float32"
    scale: float = 1.0


# (tokens, channels) tails that are no multiple of 16, 32, 64 or 128; a single token; T < K
ADVERSARIAL = (
    Case("one element", 1, 1, 1, 1),
    Case("fewer tokens than taps", 2, 3, 7, 4),
    Case("one token, many channels", 1, 1, 300, 4),
    Case("ragged tiles", 1, 257, 130, 4),
    Case("ragged tiles bf16", 2, 129, 200, 4, "bfloat16"),
    Case("odd taps", 3, 100, 33, 7),
    Case("one tap", 2, 65, 65, 1),
    Case("many taps", 1, 70, 40, 16),
    Case("large magnitudes", 2, 90, 96, 4, "float32", 1e4),
    Case("tiny magnitudes", 2, 90, 96, 4, "float32", 1e-4),
)
GPU_ADVERSARIAL = (Case("long ragged bf16", 2, 8191, 1537, 4, "bfloat16"),)
BENCH_GPU = (
    Case("lm-2048", 8, 2048, 1024, 4, "bfloat16"),
    Case("long-16k", 2, 16384, 768, 4, "bfloat16"),
    Case("fp32-4k", 4, 4096, 2048, 4, "float32"),
)
BENCH_INTERPRETER = (Case("tiny", 2, 64, 32, 4),)


class Incorrect(Exception):
    """The kernel's answer for one case is wrong; the message says how."""


def reference(x: Any, weight: Any, bias: Any) -> tuple[Any, Any]:
    """(y, magnitude) in float64: the convolution and the same sum over absolute values."""
    import torch.nn.functional as F

    xd, wd, bd = x.double(), weight.double(), bias.double()
    K, T = wd.shape[1], xd.shape[1]
    padded = F.pad(xd, (0, 0, K - 1, 0))
    y = bd.expand_as(xd).clone()
    size = bd.abs().expand_as(xd).clone()
    for k in range(K):
        y += padded[:, k : k + T] * wd[:, k]
        size += (padded[:, k : k + T] * wd[:, k]).abs()
    return y, size


def make_inputs(case: Case, device: str, generator: Any) -> tuple[Any, Any, Any]:
    import torch

    dtype = getattr(torch, case.dtype)
    shape = (case.batch, case.tokens, case.channels)
    x = (torch.randn(shape, generator=generator) * case.scale).to(device=device, dtype=dtype)
    weight = (torch.randn((case.channels, case.taps), generator=generator) / math.sqrt(case.taps)).to(device)
    bias = torch.randn((case.channels,), generator=generator).to(device)
    return x, weight, bias


def check(kernel: Callable[..., Any], case: Case, x: Any, weight: Any, bias: Any) -> None:
    """Raise Incorrect unless kernel(x, weight, bias) matches the reference within the tolerance."""
    import torch

    originals = (x.clone(), weight.clone(), bias.clone())
    want, size = reference(x, weight, bias)
    got = kernel(x, weight, bias)
    if x.is_cuda:
        torch.cuda.synchronize()
    if not isinstance(got, torch.Tensor):
        raise Incorrect(f"returned {type(got).__name__}, not a tensor")
    if got.shape != x.shape or got.dtype != x.dtype or got.device != x.device:
        raise Incorrect(f"returned {tuple(got.shape)} {got.dtype} on {got.device}; want those of x")
    for name, before, now in zip(("x", "weight", "bias"), originals, (x, weight, bias), strict=True):
        if not torch.equal(before, now):
            raise Incorrect(f"changed its input {name}")
    error = (got.double() - want).abs()
    allowed = TOLERANCE[case.dtype] * size + TINY
    bad = ~(error <= allowed)  # NaN counts as bad
    if bool(bad.any()):
        b, t, c = (int(i) for i in bad.nonzero()[0])
        raise Incorrect(
            f"y[{b}, {t}, {c}] = {got[b, t, c].item():.6g}, want {want[b, t, c].item():.6g} "
            f"({int(bad.sum())} of {bad.numel()} values off by more than {TOLERANCE[case.dtype]:.2g} relative)"
        )


def random_cases(rng: random.Random, gpu: bool) -> list[Case]:
    most_tokens, most_channels = (4096, 2048) if gpu else (80, 72)
    return [
        Case(
            f"random {i}",
            rng.randint(1, 4),
            rng.randint(1, most_tokens),
            rng.randint(1, most_channels),
            rng.randint(1, 8),
            rng.choice(("float32", "bfloat16")),
        )  # fmt: skip
        for i in range(RANDOM_CASES)
    ]


def gate(kernel: Callable[..., Any], device: str, seed: int) -> int:
    """Check every case; raise Incorrect naming the first that fails. Returns the number checked."""
    import torch

    rng = random.Random(seed)
    cases = list(ADVERSARIAL) + (list(GPU_ADVERSARIAL) if device == "cuda" else [])
    cases += random_cases(rng, device == "cuda")
    generator = torch.Generator().manual_seed(seed)
    for case in cases:
        try:
            check(kernel, case, *make_inputs(case, device, generator))
        except Incorrect as exc:
            shape = f"B={case.batch} T={case.tokens} C={case.channels} K={case.taps} {case.dtype}"
            raise Incorrect(f"{case.name} ({shape}): {exc}") from None
    return len(cases)


def bench(kernel: Callable[..., Any], case: Case, device: str, *, verify: bool, repeats: int) -> float:
    """Median seconds of one call on `case`, each call reading another buffer; then the re-check."""
    import torch

    generator = torch.Generator().manual_seed(0)
    x, weight, bias = make_inputs(case, device, generator)
    n_buffers = (
        max(2, min(16, ROTATING_BYTES // max(1, x.numel() * x.element_size()))) if device == "cuda" else 2
    )
    buffers = [x] + [torch.randn_like(x, dtype=torch.float32).to(x.dtype) for _ in range(n_buffers - 1)]
    for buf in buffers:  # warm-up: compilation, autotuning, caches
        kernel(buf, weight, bias)
    times = []
    for i in range(repeats):
        buf = buffers[i % len(buffers)]
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            kernel(buf, weight, bias)
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            kernel(buf, weight, bias)
            times.append(time.perf_counter() - t0)
    if verify:  # new contents in the same buffers: an answer remembered from before is now wrong
        for buf in buffers:
            buf.copy_(torch.randn_like(buf, dtype=torch.float32).to(buf.dtype))
            try:
                check(kernel, case, buf, weight, bias)
            except Incorrect as exc:
                raise Incorrect(
                    f"{case.name} after the timing, on new data in a timed buffer: {exc}"
                ) from None
    return statistics.median(times)


def load_kernel(path: Path) -> Callable[..., Any]:
    spec = importlib.util.spec_from_file_location("agent_kernel", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"kernel_bench: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["agent_kernel"] = module  # Triton reads the kernel's source through its module
    spec.loader.exec_module(module)
    kernel = getattr(module, "causal_conv1d", None)
    if not callable(kernel):
        raise AttributeError(f"{path.name} defines no function causal_conv1d(x, weight, bias)")
    return kernel


def pick_device() -> str | None:
    """cuda, cpu under Triton's interpreter, or None (refuse)."""
    import torch

    if os.environ.get("TRITON_INTERPRET") == "1":
        return "cpu"
    return "cuda" if torch.cuda.is_available() else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m prepare.kernel_bench", description=__doc__.split("\n")[0]
    )
    parser.add_argument("file", nargs="?", default="kernel.py", help="the agent's kernel (default kernel.py)")
    parser.add_argument("--no-gate", action="store_true", help=argparse.SUPPRESS)  # tests only
    args = parser.parse_args(argv)
    device = pick_device()
    if device is None:
        print(
            "kernel_bench: needs a CUDA GPU and torch sees none (the kernel experiment times Triton "
            "kernels on the GPU; TRITON_INTERPRET=1 runs Triton's CPU interpreter, for tests only)",
            file=sys.stderr,
        )
        return 2
    import torch

    kernel = load_kernel(Path(args.file))
    t0 = time.time()
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu (Triton interpreter)"
    print(f"kernel_bench: {name} | gate: {'off' if args.no_gate else 'on'}")
    checked = 0
    try:
        if not args.no_gate:
            checked = gate(kernel, device, random.SystemRandom().randrange(2**31))
            print(f"gate: {checked} cases correct ({time.time() - t0:.1f}s)")
        shapes = BENCH_GPU if device == "cuda" else BENCH_INTERPRETER
        repeats = 50 if device == "cuda" else 3
        seconds = {c.name: bench(kernel, c, device, verify=not args.no_gate, repeats=repeats) for c in shapes}
    except Incorrect as exc:
        print(f"{MARKER} {exc}", flush=True)
        return 1
    rates = []
    for case in shapes:
        elem = 2 if case.dtype == "bfloat16" else 4
        moved = 2 * case.batch * case.tokens * case.channels * elem  # x read once, y written once
        rates.append(moved / seconds[case.name] / 1e9)
        print(f"{case.name}: {seconds[case.name] * 1e6:.1f} us, {rates[-1]:.1f} GB/s")
    print("---")
    print(f"gbps:             {math.exp(sum(math.log(r) for r in rates) / len(rates)):.6g}")
    for case in shapes:
        print(f"us_{case.name.replace('-', '_')}: {seconds[case.name] * 1e6:.2f}")
    print(f"gate_cases:       {checked}")
    print(f"total_seconds:    {time.time() - t0:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
