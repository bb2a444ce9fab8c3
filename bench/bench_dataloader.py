"""Benchmark: dataloader throughput (tokenize + best-fit pack) on ONE CPU core (or --threads N).

    python bench/bench_dataloader.py [--seconds 20] [--batch 32] [--seq-len 2048] [--threads 1]

Corpus: the .py files of this interpreter's site-packages (each file one document, at most
10,000 characters, the first --corpus-chars characters), written as parquet shards in a
temporary folder; tokenizer: an 8192-id BPE trained on that corpus with prepare's own code.
The process is pinned to --threads cores (sched_setaffinity) and tiktoken runs with that many
threads (default 1: the figure is per core; make_dataloader's default is min(8, cores - 1)).
Tokenization is ~85% of the time (cProfile), packing the rest. Prints one JSON line with tokens/s for the numpy loader and the torch (CPU)
loader, and the ratio to what an H100 consumes in the reference run (953 steps x 524,288
tokens in 300 s = 1.66 M tokens/s): a ratio above 1 means one core keeps the GPU fed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import site
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prepare import dataloader, encoding, shards, tokenizer  # noqa: E402

H100_TOKENS_PER_S = 953 * 524_288 / 300


def build_corpus(dest: Path, max_chars: int) -> list[Path]:
    docs: list[str] = []
    chars = 0
    for path in sorted(Path(site.getsitepackages()[0]).rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")[:10_000]
        except (UnicodeDecodeError, OSError):
            continue
        if text:
            docs.append(text)
            chars += len(text)
        if chars >= max_chars:
            break
    files = []
    for i in range(0, len(docs), 5000):
        files.append(dest / shards.shard_name(len(files)))
        shards.write_text_shard(files[-1], docs[i : i + 5000])
    return files


def measure(make, seconds: float, tokens_per_batch: int) -> tuple[float, int]:
    it = make()
    next(it)  # warm-up: the first refill of the buffer
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        next(it)
        n += 1
    return n * tokens_per_batch / (time.perf_counter() - t0), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--corpus-chars", type=int, default=60_000_000)
    parser.add_argument(
        "--threads", type=int, default=1, help="cores to pin to = tiktoken threads (default 1)"
    )
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[: args.threads]))
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        files = build_corpus(Path(tmp) / "data", args.corpus_chars)
        encoding.train_and_save(
            (t for b in shards.iter_text_batches(files) for t in b),
            8192,
            Path(tmp) / "tok",
            max_chars=10_000_000,
        )
        tok = tokenizer.Tokenizer.from_directory(Path(tmp) / "tok")
        per_batch = args.batch * args.seq_len
        kw = {"files": files, "num_threads": args.threads}
        np_rate, np_n = measure(
            lambda: dataloader.make_dataloader_numpy(tok, args.batch, args.seq_len, "train", **kw),
            args.seconds,
            per_batch,
        )
        th_rate, th_n = measure(
            lambda: dataloader.make_dataloader(tok, args.batch, args.seq_len, "train", device="cpu", **kw),
            args.seconds,
            per_batch,
        )
    print(
        json.dumps(
            {
                "bench": "dataloader",
                "threads": args.threads,
                "batch": args.batch,
                "seq_len": args.seq_len,
                "numpy_tokens_per_s": round(np_rate),
                "numpy_batches": np_n,
                "torch_cpu_tokens_per_s": round(th_rate),
                "torch_batches": th_n,
                "h100_consumes_tokens_per_s": round(H100_TOKENS_PER_S),
                "ratio_numpy_to_h100": round(np_rate / H100_TOKENS_PER_S, 2),
                "machine": platform.processor() or platform.machine(),
                "cpus_visible": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
