"""Toy train file for the harness tests: its val_bpb is the constant VAL_BPB.

MODE picks a misbehaviour: "ok", "raise" (an exception), "hang" (sleeps past the timeout),
"nan" (a NaN loss on a progress line), "slow" (sleeps SLEEP seconds mid-run, for kill tests),
"nometric" (exits 0 without a summary block).
"""

import os
import time

VAL_BPB = 1.000000
MODE = "ok"
SLEEP = 0.0
STEPS = 4

print(f"started pid={os.getpid()}", flush=True)
for step in range(STEPS):
    pct = 100.0 * (step + 1) / STEPS
    loss = float("nan") if MODE == "nan" and step == 2 else 3.0 * VAL_BPB
    print(f"step {step:05d} ({pct:.1f}%) | loss: {loss:.6f}", flush=True)
    if MODE == "slow" and step == 1:
        time.sleep(SLEEP)
if MODE == "raise":
    raise ValueError("toy failure on purpose")
if MODE == "hang":
    time.sleep(3600)
if MODE == "nometric":
    print("done without a summary")
else:
    print("---")
    print(f"val_bpb:          {VAL_BPB:.6f}")
    print("training_seconds: 0.1")
    print("total_seconds:    0.2")
    print("peak_vram_mb:     2048.0")
    print(f"num_steps:        {STEPS}")
