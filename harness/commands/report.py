"""`autoresearch report`: summarize a night into progress.png, report.html and summary.json.

    autoresearch report [--tag TAG | --tsv FILE] [--out DIR] [--json] [--direction minimize|maximize]

Without --tag or --tsv it reports the newest results/<tag>.tsv of the repository. With --json
stdout holds only the summary JSON (and nothing is written unless --out is given too). Lines
of the TSV that cannot be read are named on stderr, never fatal.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from harness.review.report import attempt_diffs, kept_diffs, render_text, write_report
from harness.review.summary import load, newest_tag, results_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--tag", help="the night to report on: reads results/<tag>.tsv (default: the newest)")
    src.add_argument("--tsv", type=Path, help="any results TSV in the 5-column format, e.g. a hand-made one")
    parser.add_argument(
        "--out", type=Path, help="where progress.png and report.html go (default results/<tag>/)"
    )
    parser.add_argument("--json", action="store_true", help="print only the summary as JSON on stdout")
    parser.add_argument(
        "--direction", choices=("minimize", "maximize"), help="override the inferred metric direction"
    )


def run(args: argparse.Namespace) -> int:
    cwd = Path.cwd()
    tag: str | None = args.tag
    if args.tsv is not None:
        path = Path(args.tsv)
        default_out = path.parent / path.stem
        tag = tag or path.stem
    else:
        results = results_dir(cwd)
        tag = tag or newest_tag(results)
        path = results / f"{tag}.tsv"
        default_out = results / tag

    def skipped(line: int, why: str) -> None:
        print(f"{path}: skipped line {line}: {why}", file=sys.stderr)

    summary, rows = load(path, args.direction, on_skip=skipped)
    if args.json and args.out is None:
        print(json.dumps(summary.to_json(), indent=2))
        return 0
    diffs, note = kept_diffs(cwd, tag, summary)
    out = Path(args.out) if args.out is not None else default_out
    written = write_report(summary, rows, out, diffs, diff_note=note, attempts=attempt_diffs(cwd, tag))
    if args.json:
        print(json.dumps(summary.to_json(), indent=2))
    else:
        print(render_text(summary))
        print(f"\nwrote {written.png} and {written.html}")
    return 0
