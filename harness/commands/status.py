"""`autoresearch status [--tag TAG]`: a tag's rows, counts, best and whether it is running.

Without --tag: one line per tag under results/. Nothing is written or locked.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.review.status import list_lines, tag_lines
from harness.review.summary import results_dir


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tag", help="the tag to show (default: list all tags)")


def run(args: argparse.Namespace) -> int:
    results = results_dir(Path.cwd())
    for line in tag_lines(results, args.tag) if args.tag else list_lines(results):
        print(line)
    return 0
