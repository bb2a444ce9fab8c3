"""Benchmark: evaluate_bpb wall time at the cuda profile's EVAL_TOKENS (40 x 524,288) on a GPU.

    python bench/bench_evaluate.py                 # on the GPU machine (needs torch with CUDA)
    python bench/bench_evaluate.py --device cpu    # smoke run of the script itself (cpu profile)

Self-contained and offline. It builds a `text:` dataset in a temporary cache from the .py files
of this interpreter's site-packages (written as one .jsonl, --corpus-chars characters) with
prepare's own pipeline, so the tokenizer is a real 8192-id BPE and the validation split is the
pinned one; then it times `prepare.evaluate_bpb` on a stand-in model: token embedding ->
--layers residual MLP blocks (width 512) -> an 8192-way head, under bf16 autocast on CUDA. The
stand-in is cheaper than the real GPT, so the figure is an upper bound on what prepare adds:
it also times the model's forward passes alone on the same rows and reports the difference
(packing + H2D copies + float32 chunked cross-entropy) as `overhead_seconds`.

Prints one JSON line: eval_tokens, batch, seconds (evaluate_bpb, after one warm-up call that
also fills the caches), forward_only_seconds, overhead_seconds, val_bpb, the GPU's name.
The target is evaluation well inside the 30 s of time outside the budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import site
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_corpus(path: Path, max_chars: int) -> None:
    chars = 0
    with open(path, "w") as out:
        for py in sorted(Path(site.getsitepackages()[0]).rglob("*.py")):
            try:
                text = py.read_text(encoding="utf-8")[:10_000]
            except (UnicodeDecodeError, OSError):
                continue
            if text.strip():
                out.write(json.dumps({"text": text}) + "\n")
                chars += len(text)
            if chars >= max_chars:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--corpus-chars", type=int, default=60_000_000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    try:
        run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: Path) -> None:
    os.environ.update(AUTORESEARCH_DEVICE=args.device, AUTORESEARCH_CACHE=str(tmp / "cache"))
    import torch
    from torch import nn

    from prepare import datasets, evalset, evaluate
    from prepare.tokenizer import Tokenizer

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: run this on the GPU machine, or pass --device cpu for a smoke run")
    corpus = tmp / "corpus.jsonl"
    write_corpus(corpus, args.corpus_chars)
    spec = f"text:{corpus}"
    os.environ["AUTORESEARCH_DATASET"] = spec
    t0 = time.perf_counter()
    datasets.prepare_dataset(spec, tmp / "cache", max_chars=20_000_000, progress=False)
    prep_s = time.perf_counter() - t0
    tok = Tokenizer.load()
    dev = torch.device(args.device)

    class StandIn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(tok.vocab_size, 512)
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.LayerNorm(512), nn.Linear(512, 2048), nn.GELU(), nn.Linear(2048, 512))
                for _ in range(args.layers)
            )
            self.head = nn.Linear(512, tok.vocab_size, bias=False)

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                x = self.emb(idx)
                for block in self.blocks:
                    x = x + block(x)
                return self.head(x)

    model = StandIn().to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    evaluate.evaluate_bpb(model, tok, args.batch)  # warm-up: CUDA context, kernels, allocator
    sync()
    t0 = time.perf_counter()
    bpb = evaluate.evaluate_bpb(model, tok, args.batch)
    sync()
    seconds = time.perf_counter() - t0
    batches = [(torch.from_numpy(x).long().to(dev)) for x, _ in evalset.eval_batches_numpy(tok, args.batch)]
    sync()
    t0 = time.perf_counter()
    with torch.no_grad():
        for x in batches:
            model(x)
    sync()
    forward_s = time.perf_counter() - t0
    n_rows, seq_len = evalset.eval_rows()
    print(
        json.dumps(
            {
                "bench": "evaluate_bpb",
                "device": torch.cuda.get_device_name() if dev.type == "cuda" else "cpu",
                "eval_tokens": n_rows * seq_len,
                "batch": args.batch,
                "seconds": round(seconds, 2),
                "forward_only_seconds": round(forward_s, 2),
                "overhead_seconds": round(seconds - forward_s, 2),
                "val_bpb": round(bpb, 4),
                "dataset_prepare_seconds": round(prep_s, 1),
                "threads": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
