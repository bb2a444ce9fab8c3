"""`autoresearch compare`: nights from several GPUs or machines, side by side.

    autoresearch compare REF [REF ...] [--json] [--no-diff]

Each REF is a branch, local or remote-tracking (origin/autoresearch/<tag>). With --json stdout
holds only the JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.review.compare import compare, render_text, to_json
from harness.store.git import Repo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "refs",
        nargs="+",
        metavar="REF",
        help="branches, local or remote-tracking (origin/autoresearch/<tag>)",
    )
    parser.add_argument("--json", action="store_true", help="print only JSON on stdout")
    parser.add_argument("--no-diff", action="store_true", help="leave the final diffs out of the text output")


def run(args: argparse.Namespace) -> int:
    view = Repo.find(Path.cwd())
    base, sides = compare(view, args.refs)
    if args.json:
        print(json.dumps(to_json(base, sides), indent=2))
    else:
        print(render_text(base, sides, diffs=not args.no_diff))
    return 0
