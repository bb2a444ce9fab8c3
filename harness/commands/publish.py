"""`autoresearch publish`: push a tag's branch and its results together.

    autoresearch publish [--tag TAG] [--remote NAME]

The results go on the branch autoresearch-results/<tag> (made with git plumbing; the checkout
is never touched), pushed atomically with autoresearch/<tag> and every attempt's code
(refs/autoresearch/<tag>/attempts/<n>).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.review.publish import publish
from harness.review.summary import newest_tag
from harness.store.git import Repo, fetch_refspec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tag", help="the night to publish (default: the newest results/<tag>.tsv)")
    parser.add_argument("--remote", help="where to push (default: the branch's upstream, else origin)")


def run(args: argparse.Namespace) -> int:
    view = Repo.find(Path.cwd())
    tag = args.tag or newest_tag(view.root / "results")
    done = publish(view, tag, args.remote)
    what = "new results commit" if done.new_results_commit else "results unchanged"
    print(
        f"published {done.branch} ({done.branch_sha[:7]}) and {done.results_branch} "
        f"({done.results_sha[:7]}, {done.experiments} experiments, {what}) and the code of "
        f"{done.attempts} attempts to {done.remote}.\n"
        f"On another clone: `git fetch {done.remote}` then "
        f"`autoresearch compare {done.remote}/{done.branch}`. To fetch every attempt's code too "
        f"(once per clone): git config --add remote.{done.remote}.fetch '{fetch_refspec(done.remote)}'"
    )
    return 0
