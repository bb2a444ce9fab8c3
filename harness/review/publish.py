"""Publish a night: push the tag's branch and its results so they travel together.

    autoresearch publish [--tag T] [--remote NAME]

Where the results live in git. The branch `autoresearch/<tag>` holds only kept commits
(code); the ledger `results/<tag>.tsv` is untracked on purpose (the loop appends to it
every few minutes and must never dirty the person's checkout). Publishing records the
ledger on a sibling branch, `autoresearch-results/<tag>`, whose tree is exactly

    results/<tag>.tsv                 the ledger, byte for byte
    results/<tag>.json                the report's summary (experiments, kept, best, ...)
    results/<tag>/notes.md            the research notes, when there are any
    results/<tag>/attempts/<n>.json   each attempt's record (diagnostics, note, log tail)

Each publish adds one commit there (only when something changed), made with git plumbing
(blob and tree objects, commit-tree, update-ref): the person's checkout, index and HEAD are
never touched. Both branches, and every attempt's code (refs/autoresearch/<tag>/attempts/<n>,
discards and crashes included), go out in one atomic push, so a remote never has a branch
without its results or the other way round. Because it is an ordinary branch, a plain
`git fetch` on any other clone brings it as `origin/autoresearch-results/<tag>`, next to
`origin/autoresearch/<tag>`; `autoresearch compare` reads it from there. Attempt refs are not
branches: publish adds the fetch refspec `+refs/autoresearch/*:refs/autoresearch-fetched/<remote>/*`
to the remote here, and any other clone gets them from a plain `git fetch` after adding it once
(`git config --add remote.origin.fetch '+refs/autoresearch/*:refs/autoresearch-fetched/origin/*'`).

When a night ends, `autoresearch run` calls `publish_if_upstream`: if the tag's branch tracks a remote
(e.g. after a first manual publish, which sets the upstream), it publishes again.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ConfigError, DataError, HarnessError
from harness.review.summary import metric_name, summarize
from harness.store import attempts
from harness.store.git import (
    ANY_GIT_ERROR,
    BRANCH_PREFIX,
    RESULTS_PREFIX,
    Repo,
    attempts_prefix,
    fetch_refspec,
)
from harness.store.ledger import read_any_tsv
from harness.store.paths import TagPaths

# What publish_if_upstream swallows: the end of a night must not fail on git or the network.
_NEVER_FATAL: tuple[type[Exception], ...] = (HarnessError, *ANY_GIT_ERROR)


@dataclass(frozen=True)
class Published:
    """What one publish did."""

    remote: str
    branch: str
    branch_sha: str
    results_branch: str
    results_sha: str
    new_results_commit: bool
    experiments: int
    attempts: int  # attempt refs pushed
    refspec_added: bool  # the fetch refspec of attempt refs was added to the remote here


def results_files(root: Path, tag: str) -> dict[str, bytes]:
    """The tree of the results branch: the TSV as it is on disk and its summary JSON."""
    tsv = TagPaths(root, tag).tsv
    if not tsv.is_file():
        raise DataError(
            f"no results at {tsv}; run `autoresearch run --tag {tag}` first, or pass the right --tag"
        )
    rows, skipped = read_any_tsv(tsv)
    summary = summarize(rows, metric_name(tsv), None, skipped, f"results/{tag}.tsv").to_json()
    files = {
        f"results/{tag}.tsv": tsv.read_bytes(),
        f"results/{tag}.json": (json.dumps(summary, indent=2) + "\n").encode("utf-8"),
    }
    paths = TagPaths(root, tag)
    if paths.notes.is_file():
        files[f"results/{tag}/notes.md"] = paths.notes.read_bytes()
    for n in sorted(attempts.read_all(paths.attempts)):
        files[f"results/{tag}/attempts/{n}.json"] = paths.record(n).read_bytes()
    return files


def pick_remote(view: Repo, branch: str, remote: str | None) -> str:
    """--remote, else the branch's upstream remote, else origin, else the only remote."""
    names = view.remote_names()
    if remote is not None:
        if remote not in names:
            raise ConfigError(
                f"no remote named {remote!r}; this repository has: {', '.join(names) or 'none'}"
            )
        return remote
    chosen = view.upstream_remote(branch)
    if chosen:
        return chosen
    if "origin" in names:
        return "origin"
    if len(names) == 1:
        return names[0]
    if not names:
        raise ConfigError(
            "this repository has no remote; add one (`git remote add origin URL`) and publish again"
        )
    raise ConfigError(f"several remotes ({', '.join(names)}); pick one with --remote NAME")


def publish(view: Repo, tag: str, remote: str | None = None) -> Published:
    """Record the results on autoresearch-results/<tag> and push it together with the branch."""
    branch = BRANCH_PREFIX + tag
    results_branch = RESULTS_PREFIX + tag
    branch_sha = view.resolve(f"refs/heads/{branch}")
    if branch_sha is None:
        raise ConfigError(
            f"no branch {branch} here; run `autoresearch run --tag {tag}` or pass another --tag"
        )
    target = pick_remote(view, branch, remote)
    files = results_files(view.root, tag)
    rows = files[f"results/{tag}.tsv"].decode("utf-8", "replace").splitlines()
    experiments = max(len([line for line in rows if line.strip()]) - 1, 0)
    new = view.commit_files(
        f"refs/heads/{results_branch}",
        files,
        f"results: {tag}: {experiments} experiments at {branch_sha[:7]}",
    )
    results_sha = view.require(f"refs/heads/{results_branch}")
    refspecs = [
        f"refs/heads/{branch}:refs/heads/{branch}",
        f"refs/heads/{results_branch}:refs/heads/{results_branch}",
    ]
    attempt_refs = view.refs(attempts_prefix(tag))
    if attempt_refs:
        # Forced: a tag deleted and started again numbers its attempts from 0 again.
        refspecs.append(f"+{attempts_prefix(tag)}*:{attempts_prefix(tag)}*")
    view.push(target, refspecs)
    # From now on the branch has an upstream, so the loop republishes when a run ends.
    for name in (branch, results_branch):
        if view.upstream_remote(name) is None:
            view.set_upstream(name, target)
    added = view.add_fetch_refspec(target, fetch_refspec(target))
    return Published(
        target, branch, branch_sha, results_branch, results_sha, new is not None, experiments,
        len(attempt_refs), added,
    )  # fmt: skip


def publish_if_upstream(repo_root: Path, tag: str) -> bool:
    """Publish when the tag's branch tracks a remote; called by `autoresearch run` when a night ends.

    Never raises: a night's end must not fail on the network. Returns whether it published,
    and says why not on stderr when it tried and failed.
    """
    try:
        view = Repo.find(Path(repo_root))
        remote = view.upstream_remote(BRANCH_PREFIX + tag)
        if remote is None:
            return False
        done = publish(view, tag, remote)
    except _NEVER_FATAL as exc:
        print(f"autoresearch: could not publish {tag}: {exc}", file=sys.stderr)
        return False
    print(f"published {done.branch} and {done.results_branch} to {done.remote}", file=sys.stderr)
    return True
