"""Benchmark: what taking the metric out of the train process costs, and what the causality proof costs.

    python bench/bench_handoff.py                    # this machine: cpu profile, arithmetic dataset
    python bench/bench_handoff.py --device cuda      # the GPU machine: cuda profile, a text: corpus

It builds experiments/gpt/train.py's model as that file does for the profile (the tiny CPU
configuration, or the default depth-8 model on CUDA, inside its bf16 autocast), perturbs its
weights (an untrained model's logits are too uniform to mean much), and times:

* `in_process_s`: prepare.evaluate_bpb on the live model, as every run did before (cold: the
  first call in the process, as in a run);
* `hand_off_s`: prepare.hand_off (torch.export, lowering to ATen, writing the files);
* `evaluator_s`: `python -m prepare.evaluate_program` as the harness starts it (a new interpreter:
  imports, loading the program, the evaluation with its probes), wall clock;
* each also in CPU seconds (`*_cpu_s`: this process's, or the evaluator child's), the figure a
  shared machine does not distort;
* `probes_cost`: the evaluation with its probes against the same evaluation without them, in one
  process, alternating, `--repeats` times each (medians): the share of evaluation time the
  causality proof adds. On the CPU it is measured in CPU seconds of this process with torch on
  `--threads` threads (default 1), which other processes on a shared machine do not change; on
  CUDA in wall seconds (the GPU is not shared);
* `max_probe_diff`: the largest difference of an honest model's losses between a probe and its
  original (the causality tolerance assumes 0 on the same batch shape: on CUDA this line is the
  measurement that says whether it holds);
* `val_bpb_diff`: evaluator minus in-process val_bpb (must be below 1e-4).

The cuda mode builds a `text:` dataset from this interpreter's site-packages .py files the way
bench/bench_evaluate.py does (offline). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for the CPU measurements")
    parser.add_argument("--corpus-chars", type=int, default=60_000_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-handoff-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    os.environ.update(AUTORESEARCH_DEVICE=args.device, AUTORESEARCH_CACHE=str(tmp / "cache"))
    os.environ.pop("AUTORESEARCH_HAND_OFF", None)
    import torch

    from prepare import datasets, evaluate_program, verdict
    from prepare.evaluate import evaluate_bpb
    from prepare.handoff import hand_off
    from prepare.tokenizer import Tokenizer

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.device == "cuda" else time.process_time
    if args.device == "cuda":
        if not torch.cuda.is_available():
            sys.exit("no CUDA device: run this on the GPU machine, or leave out --device for the cpu profile")
        from bench_evaluate import write_corpus

        corpus = tmp / "corpus.jsonl"
        write_corpus(corpus, args.corpus_chars)
        spec = f"text:{corpus}"
        datasets.prepare_dataset(spec, tmp / "cache", max_chars=20_000_000, progress=False)
    else:
        spec = "arithmetic"
        datasets.prepare_dataset(spec, tmp / "cache", progress=False)
    os.environ["AUTORESEARCH_DATASET"] = spec
    tok = Tokenizer.load()
    spec_ = importlib.util.spec_from_file_location("gpt_train", ROOT / "experiments" / "gpt" / "train.py")
    assert spec_ and spec_.loader
    train = importlib.util.module_from_spec(spec_)
    spec_.loader.exec_module(train)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = train.build_model(tok.vocab_size, device)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    model.eval()
    t0, c0 = time.perf_counter(), time.process_time()
    with autocast:
        in_process = evaluate_bpb(model, tok, train.EVAL_BATCH_SIZE)
    sync()
    in_process_s, in_process_cpu = time.perf_counter() - t0, time.process_time() - c0

    folder = tmp / "hand-off"
    os.environ["AUTORESEARCH_HAND_OFF"] = str(folder)
    model.backend = "sdpa"
    train.build_attention_masks("sdpa", train.MAX_SEQ_LEN, model.windows, device)
    t0, c0 = time.perf_counter(), time.process_time()
    with autocast:
        hand_off(model, train.EVAL_BATCH_SIZE)
    hand_off_s, hand_off_cpu = time.perf_counter() - t0, time.process_time() - c0
    os.environ.pop("AUTORESEARCH_HAND_OFF")
    size_mb = sum(f.stat().st_size for f in folder.iterdir()) / 1e6

    child_env = {**os.environ, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    if args.device == "cpu":
        child_env["OMP_NUM_THREADS"] = str(args.threads)  # the same threads as the in-process figures
    t0, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-B", "-u", "-m", "prepare.evaluate_program", str(folder)],
        cwd=ROOT, capture_output=True, text=True, env=child_env,
    )  # fmt: skip
    evaluator_s = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    evaluator_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    if done.returncode != 0:
        sys.exit(f"the evaluator failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1][len(verdict.RESULT_MARKER) :])

    with_probes, without = [], []
    for _ in range(args.repeats):
        for probes, times in ((True, with_probes), (False, without)):
            t0 = clock()
            evaluate_program.evaluate(folder, probes=probes)
            sync()
            times.append(clock() - t0)
    on, off = statistics.median(with_probes), statistics.median(without)
    print(
        json.dumps(
            {
                "bench": "hand_off",
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "profile": args.device,
                "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
                "program_batch": json.loads((folder / "program.json").read_text())["batch"],
                "program_MB": round(size_mb, 1),
                "in_process_s": round(in_process_s, 2),
                "in_process_cpu_s": round(in_process_cpu, 2),
                "hand_off_s": round(hand_off_s, 2),
                "hand_off_cpu_s": round(hand_off_cpu, 2),
                "evaluator_s": round(evaluator_s, 2),
                "evaluator_cpu_s": round(evaluator_cpu, 2),
                "evaluator_inner_s": result["seconds"],
                "clock": "wall" if args.device == "cuda" else "cpu",
                "eval_with_probes_s": round(on, 3),
                "eval_without_probes_s": round(off, 3),
                "probes_cost": round(on / off - 1, 4),
                "probes": result["probes"],
                "max_probe_diff": result["max_probe_diff"],
                "val_bpb": round(result["val_bpb"], 6),
                "val_bpb_diff": result["val_bpb"] - in_process,
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()
