"""`autoresearch show`: one attempt of a night, whatever became of it.

    autoresearch show TAG N [--log-lines K]

Prints the attempt's row (status, metric, reason, agent), its diff against the best it was
tried on (from refs/autoresearch/<tag>/attempts/<n>: discards and crashes keep their code too),
its summary block and diagnostics, and the tail of its log. Works on any clone that fetched the
published night (see `autoresearch publish`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import ConfigError
from harness.review.show import gather, render
from harness.review.summary import metric_name
from harness.store.git import Repo
from harness.store.paths import TagPaths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tag", help="the night (its --tag)")
    parser.add_argument("n", help="the attempt number (the TSV's n column; 0 is the baseline)")
    parser.add_argument(
        "--log-lines", type=int, default=30, metavar="K", help="lines of the log to show (30)"
    )


def run(args: argparse.Namespace) -> int:
    if not str(args.n).isdigit():
        raise ConfigError(f"attempt number {args.n!r} is not a whole number (0 is the baseline)")
    if args.log_lines < 0:
        raise ConfigError(f"--log-lines {args.log_lines}: must be 0 or more")
    view = Repo.find(Path.cwd())
    shown = gather(view, args.tag, int(args.n), log_lines=args.log_lines)
    tsv = TagPaths(view.root, args.tag).tsv
    print(render(shown, metric_name(tsv) if tsv.is_file() else ""))
    return 0
