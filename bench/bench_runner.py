"""How much the harness costs around a chatty run: runner throughput and summary parsing.

    python bench/bench_runner.py [--mb 50] [--repeat 3]

1. runner: a child prints ``--mb`` MB of progress lines in the train files' format, then the summary
   block; `harness.night.runner.run` streams it (line split, loss check, log write, an ``on_line`` callback
   like the live view's). Reported: MB/s through the runner vs the same child writing to /dev/null.
2. metrics: `read_summary` (tail only) vs `parse_summary` of the whole log text, on that log.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from harness.night.metrics import last_loss, parse_summary, progress_pct, read_summary
from harness.night.runner import run

CHILD = r"""
import sys
target = int(sys.argv[1])
out = sys.stdout
n = 0
i = 0
while n < target:
    line = (f"step {i:05d} ({100*n/target:.1f}%) | loss: {3.0 + 1/(i+1):.6f} | lrm: 1.00 | dt: 312ms | "
            f"tok/sec: 1,234,567 | mfu: 40.1% | epoch: 1 | remaining: 287s\n")
    out.write(line)
    n += len(line)
    i += 1
out.write("---\nval_bpb:          0.997900\nnum_steps:        953\n")
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    size = int(args.mb * 1e6)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        (d / "child.py").write_text(CHILD)
        env = dict(os.environ)
        direct, streamed = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            subprocess.run(
                [sys.executable, "child.py", str(size)], cwd=d, stdout=subprocess.DEVNULL, check=True
            )
            direct.append(time.perf_counter() - t)
            seen = 0

            def on_line(line: str) -> None:
                nonlocal seen
                seen += 1
                last_loss(line)
                progress_pct(line)

            res = run(
                f"{sys.executable} child.py {size}",
                d,
                env,
                d / "run.log",
                timeout=600,
                max_log_bytes=size + 10_000_000,
                on_line=on_line,
            )
            assert res.exit_code == 0 and res.kill_reason is None, res
            streamed.append(res.wall_seconds)
        log = d / "run.log"
        mb = log.stat().st_size / 1e6
        tail_t, full_t = [], []
        for _ in range(args.repeat):
            t = time.perf_counter()
            assert read_summary(log) is not None
            tail_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            assert parse_summary(log.read_text()) is not None
            full_t.append(time.perf_counter() - t)
    med = statistics.median
    print(f"log: {mb:.1f} MB, {seen} lines, median of {args.repeat}")
    print(f"child -> /dev/null:     {med(direct):.2f} s ({mb / med(direct):.0f} MB/s)")
    print(f"child -> runner.run:    {med(streamed):.2f} s ({mb / med(streamed):.0f} MB/s)")
    print(f"read_summary (tail):    {med(tail_t) * 1000:.2f} ms")
    print(f"parse_summary (whole):  {med(full_t) * 1000:.0f} ms")


if __name__ == "__main__":
    main()
