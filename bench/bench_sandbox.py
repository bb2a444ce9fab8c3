"""What the sandbox costs per run: the runner's wall time for the same command, plain and in bubblewrap.

Each repetition runs the command through `harness.night.runner.run` twice, alternating which
goes first, once plainly and once inside the `Sandbox` a night gives its runs (the command's
folder read-only, a scratch folder, no network, its own namespaces; `--gpu` adds the device
nodes and /sys as a CUDA night does). The difference of the medians is the sandbox's start-up
(and teardown) cost per run; the commands are short on purpose, so nothing hides it.

Run:  python bench/bench_sandbox.py [--repeat 20] [--command "python -c 'import torch'"] [--gpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from harness.integrity.sandbox import Sandbox, probe
from harness.night.runner import run

COMMANDS = ("true", "python -c pass", "python -c 'import numpy'")


def measure(command: str, repeat: int, gpu: bool) -> tuple[list[float], list[float]]:
    plain: list[float] = []
    boxed: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        root = Path(tmp)
        folder = root / "exp"
        folder.mkdir()
        scratch = root / "scratch"
        scratch.mkdir()
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch), "TMPDIR": str(scratch)}
        sandbox = Sandbox(scratch=scratch, read_only=(folder,), gpu=gpu)
        for i in range(repeat):
            order = [(plain, None), (boxed, sandbox)] if i % 2 == 0 else [(boxed, sandbox), (plain, None)]
            for into, box in order:
                t = time.perf_counter()
                result = run(command, folder, env, root / "run.log", timeout=120, sandbox=box)
                into.append(time.perf_counter() - t)
                if result.exit_code != 0:
                    raise SystemExit(f"{command!r} failed ({'sandboxed' if box else 'plain'}): {result}")
    return plain, boxed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--command", action="append", help="a run command (default: a few short ones)")
    parser.add_argument("--gpu", action="store_true", help="expose the GPU devices, as a cuda night does")
    args = parser.parse_args(argv)
    ok, why = probe()
    if not ok:
        print(f"no sandbox here: {why}")
        return 1
    print(
        f"sandbox: {why}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; {args.repeat} repetitions"
    )
    print("| command | plain median s | sandboxed median s | overhead median s | plain p90 | sandboxed p90 |")
    print("|---|---:|---:|---:|---:|---:|")
    for command in args.command or COMMANDS:
        plain, boxed = measure(command, args.repeat, args.gpu)
        p90 = lambda xs: sorted(xs)[max(0, int(0.9 * len(xs)) - 1)]  # noqa: E731
        print(
            f"| `{command}` | {statistics.median(plain):.3f} | {statistics.median(boxed):.3f} "
            f"| {statistics.median(boxed) - statistics.median(plain):+.3f} | {p90(plain):.3f} | {p90(boxed):.3f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
