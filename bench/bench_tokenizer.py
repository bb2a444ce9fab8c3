"""Benchmark: tokenizer training time (rustbpe, VOCAB_SIZE=8192, the GPT-4-style split).

    python bench/bench_tokenizer.py [--max-chars 50000000] [--root DIR]

Corpus: the .py files under DIR (default: this interpreter's site-packages), read in sorted
order, each file one document, the same DOC_CHAR_CAP (10,000 characters) per document that
`autoresearch prepare` applies, until --max-chars characters. Prints one JSON line: corpus
characters and bytes, documents, training seconds (wall), and the pickle's sha256 (training is
deterministic, so the same corpus gives the same hash on every machine).
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
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prepare import encoding  # noqa: E402


def corpus(root: Path, max_chars: int, stats: dict[str, int]) -> Iterator[str]:
    for path in sorted(root.rglob("*.py")):
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        doc = text[: encoding.DOC_CHAR_CAP]
        if not doc:
            continue
        stats["docs"] += 1
        stats["chars"] += len(doc)
        stats["bytes"] += len(doc.encode("utf-8"))
        yield doc
        if stats["chars"] >= max_chars:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-chars", type=int, default=50_000_000)
    parser.add_argument("--root", type=Path, default=Path(site.getsitepackages()[0]))
    parser.add_argument("--vocab-size", type=int, default=8192)
    args = parser.parse_args()
    stats = {"docs": 0, "chars": 0, "bytes": 0}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        sha, train_s = encoding.train_and_save(
            corpus(args.root, args.max_chars, stats), args.vocab_size, Path(tmp), max_chars=args.max_chars
        )
        total = time.perf_counter() - t0
    print(
        json.dumps(
            {
                "bench": "tokenizer_training",
                "corpus": f"{args.root}/**/*.py",
                **stats,
                "vocab_size": args.vocab_size,
                "train_seconds": round(train_s, 2),
                "total_seconds": round(total, 2),
                "sha256": sha[:16],
                "cpus": os.cpu_count(),
                "machine": platform.processor() or platform.machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
