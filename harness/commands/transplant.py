"""`autoresearch transplant`: queue another branch's kept changes as proposals for a night.

    autoresearch transplant --from REF --tag TAG [--dry-run]

Each kept commit of REF that autoresearch/<TAG> lacks becomes one reply in
results/<TAG>/queue.jsonl; the next `autoresearch run --tag TAG --resume` tries them first,
each judged like any other proposal. --dry-run prints the replies instead.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.review.transplant import append_queue, plan
from harness.store.git import Repo
from harness.store.paths import TagPaths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="REF",
        help="the branch whose kept changes to carry over",
    )
    parser.add_argument("--tag", required=True, help="the night that should try them (its branch must exist)")
    parser.add_argument("--dry-run", action="store_true", help="print the replies instead of queueing them")


def run(args: argparse.Namespace) -> int:
    view = Repo.find(Path.cwd())
    target, items = plan(view, args.source, args.tag)
    if args.dry_run:
        print("\n".join(t.reply for t in items))
        return 0
    queue = TagPaths(view.root, args.tag).queue
    append_queue(queue, [t.reply for t in items])
    print(f"queued {len(items)} change(s) from {args.source} in {queue}:")
    for t in items:
        flag = "" if t.applies_now else f"  [does not apply to {target} as it is now: {t.note}]"
        print(f"  {t.commit.short} {t.commit.subject}{flag}")
    print(
        f"The next `autoresearch run --tag {args.tag} --resume` tries them first, each judged like any proposal."
    )
    return 0
