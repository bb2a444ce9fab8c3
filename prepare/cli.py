"""`autoresearch prepare` and `python -m prepare`: build a dataset and its tokenizer in the cache.

    autoresearch prepare [--dataset climbmix|arithmetic|text:PATH] [--num-shards N]
                         [--base-url URL] [--cache-dir DIR] [--workers N] [--max-chars N]
                         [--base-model]

`--base-model` also builds the `finetune` experiment's pretrained checkpoint for the active
device profile (`prepare.basemodel`: offline, once; on the `arithmetic` dataset's tokenizer).

`harness.commands.main` registers this module (add_arguments + run). Errors are raised as
prepare.errors.DataError; both command lines print its one-line message and exit 2. Ctrl-C
returns 130 after the downloads have stopped and removed their partial files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prepare import env
from prepare.errors import DataError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        default=None,
        help="arithmetic (synthetic, offline), climbmix (downloaded) or text:PATH "
        "(default: $AUTORESEARCH_DATASET or arithmetic)",
    )
    parser.add_argument(
        "--num-shards", type=int, default=10, help="climbmix training shards to fetch (default 10)"
    )
    parser.add_argument(
        "--base-url", default=None, help="where climbmix shards are served (default: the public dataset)"
    )
    parser.add_argument(
        "--cache-dir", default=None, help="cache root (default: $AUTORESEARCH_CACHE or ~/.cache/autoresearch)"
    )
    parser.add_argument("--workers", type=int, default=8, help="parallel downloads (default 8)")
    parser.add_argument(
        "--max-chars",
        type=int,
        default=1_000_000_000,
        help="characters of training text the tokenizer learns from (default 1e9)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (plain log lines)")
    parser.add_argument(
        "--base-model",
        action="store_true",
        help="also pretrain the finetune experiment's checkpoint for this device profile (once, offline)",
    )


def run(args: argparse.Namespace) -> int:
    from prepare import datasets

    spec = args.dataset or env.dataset_spec()
    cache_root = Path(args.cache_dir).expanduser() if args.cache_dir else env.cache_root()
    if args.workers < 1:
        raise DataError("--workers must be at least 1")
    if args.max_chars < 1:
        raise DataError("--max-chars must be positive")
    try:
        info = datasets.prepare_dataset(
            spec,
            cache_root,
            num_shards=args.num_shards,
            base_url=args.base_url,
            workers=args.workers,
            max_chars=args.max_chars,
            progress=not args.no_progress and sys.stderr.isatty(),
        )
    except KeyboardInterrupt:
        print(
            "\nprepare: interrupted. No partial shard was kept; run the same command again to resume.",
            file=sys.stderr,
        )
        return 130
    print(
        f"prepare: {info.spec} is ready: {len(info.train_files)} training shard(s), validation "
        f"{info.val_file.name}, tokenizer {info.tokenizer_dir}"
    )
    if args.base_model:
        from prepare import basemodel

        print(f"prepare: the pretrained checkpoint is ready: {basemodel.build(cache_root)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m prepare", description=__doc__.splitlines()[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except DataError as exc:
        print(f"prepare: error: {exc}", file=sys.stderr)
        return 2
