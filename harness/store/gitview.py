"""Read-mostly git access for the morning-review commands (report, compare, publish, transplant).

The loop's own git (worktree, commit, keep, revert) lives in `harness.store.git`; this module
is the small helper the review commands share: resolve refs, walk a branch's kept commits,
diff, read a file at a commit, and the two writes `publish` needs (a results commit made with
plumbing, and a push). Nothing here touches the person's checkout, index or HEAD.

Every git failure leaves as a `RepoError` whose message says what to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import git
from gitdb.base import IStream
from gitdb.exc import BadName, BadObject, ODBError

from harness.errors import RepoError

# Everything gitpython raises for a bad ref, a missing repo or a failed command.
ANY_GIT_ERROR: tuple[type[Exception], ...] = (
    git.GitError,
    BadName,
    BadObject,
    ODBError,
    ValueError,
    OSError,
)

BRANCH_PREFIX = "autoresearch/"
_LOOKUP_ERROR: tuple[type[Exception], ...] = (KeyError, IndexError, *ANY_GIT_ERROR)
RESULTS_PREFIX = "autoresearch-results/"


@dataclass(frozen=True)
class CommitInfo:
    """One commit on a branch: its sha, the message's first line, and its first parent."""

    sha: str
    subject: str
    parent: str | None

    @property
    def short(self) -> str:
        return self.sha[:7]


class GitView:
    """One repository, seen through the handful of operations the review commands need."""

    def __init__(self, repo: git.Repo) -> None:
        self.repo = repo

    @classmethod
    def find(cls, start: Path) -> GitView:
        """The repository containing `start` (a worktree resolves to its main repository)."""
        try:
            repo = git.Repo(start, search_parent_directories=True)
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"{start} is not inside a git repository; run this from your checkout") from exc
        # Inside the loop's worktree, the results live next to the main checkout.
        common = Path(repo.git.rev_parse("--path-format=absolute", "--git-common-dir"))
        if common.name == ".git" and Path(repo.working_tree_dir or "") != common.parent:
            repo = git.Repo(common.parent)
        return cls(repo)

    @property
    def root(self) -> Path:
        if self.repo.working_tree_dir is None:
            raise RepoError(f"{self.repo.git_dir} is a bare repository; run this from a checkout")
        return Path(self.repo.working_tree_dir)

    # -- refs ---------------------------------------------------------------------------------

    def resolve(self, ref: str) -> str | None:
        """The full sha `ref` names, or None when it names no commit."""
        try:
            return str(self.repo.commit(ref).hexsha)
        except ANY_GIT_ERROR:
            return None

    def require(self, ref: str) -> str:
        """Like `resolve`, but an unknown ref is a clear error listing the branches there are."""
        sha = self.resolve(ref)
        if sha is None:
            known = ", ".join(self.autoresearch_branches()) or "none"
            raise RepoError(
                f"unknown ref {ref!r}. Known autoresearch branches: {known}. "
                "For another machine's branch, run `git fetch` first and name it like origin/autoresearch/<tag>."
            )
        return sha

    def autoresearch_branches(self) -> list[str]:
        """Local and remote-tracking branches named like autoresearch/<tag>."""
        names: list[str] = []
        for ref in self.repo.refs:
            name = ref.name
            if isinstance(ref, git.RemoteReference):
                if name.split("/", 1)[-1].startswith(BRANCH_PREFIX):
                    names.append(name)
            elif isinstance(ref, git.Head) and name.startswith(BRANCH_PREFIX):
                names.append(name)
        return sorted(names)

    def merge_base(self, refs: Sequence[str]) -> str | None:
        """The best common ancestor of all `refs` (None when they share no history)."""
        try:
            out = (
                self.repo.git.merge_base("--octopus", *refs)
                if len(refs) > 1
                else self.repo.commit(refs[0]).hexsha
            )
        except ANY_GIT_ERROR:
            return None
        return str(out).strip() or None

    def is_ancestor(self, ancestor: str, ref: str) -> bool:
        try:
            self.repo.git.merge_base("--is-ancestor", ancestor, ref)
        except git.GitCommandError:
            return False
        return True

    def log(self, base: str | None, ref: str) -> list[CommitInfo]:
        """The first-parent commits in base..ref, oldest first (all of ref's history without base)."""
        rev = f"{base}..{ref}" if base else ref
        try:
            out = self.repo.git.log("--first-parent", "--reverse", "--format=%H%x00%P%x00%s", rev)
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"cannot read the history of {ref}: {exc}") from exc
        commits = []
        for line in str(out).splitlines():
            sha, parents, subject = line.split("\x00", 2)
            commits.append(CommitInfo(sha, subject, parents.split()[0] if parents else None))
        return commits

    def diff(self, a: str | None, b: str, paths: Sequence[str] = ()) -> str:
        """The unified diff from `a` (None = the empty tree) to `b`, optionally limited to paths."""
        base = a if a is not None else self.repo.git.hash_object("-t", "tree", "/dev/null")
        try:
            return str(self.repo.git.diff(base, b, "--", *paths, stdout_as_string=True))
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"cannot diff {a}..{b}: {exc}") from exc

    def changed_paths(self, a: str, b: str) -> list[str]:
        try:
            out = self.repo.git.diff("--name-only", a, b)
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"cannot diff {a}..{b}: {exc}") from exc
        return [p for p in str(out).splitlines() if p]

    def read_file(self, ref: str, path: str) -> str | None:
        """The content of `path` at `ref`, or None when it does not exist there."""
        try:
            blob = self.repo.commit(ref).tree / path
        except _LOOKUP_ERROR:
            return None
        data: bytes = blob.data_stream.read()
        return data.decode("utf-8", errors="replace")

    # -- remotes ------------------------------------------------------------------------------

    def upstream_remote(self, branch: str) -> str | None:
        """The remote the local `branch` tracks, or None."""
        try:
            head = self.repo.heads[branch]
        except _LOOKUP_ERROR:
            return None
        tracking = head.tracking_branch()
        return tracking.remote_name if tracking is not None else None

    def remote_names(self) -> list[str]:
        return [r.name for r in self.repo.remotes]

    def push(self, remote: str, refspecs: Sequence[str]) -> None:
        """Push all refspecs in one atomic push: they land together or not at all."""
        try:
            try:
                self.repo.git.push("--atomic", "--porcelain", remote, *refspecs)
            except git.GitCommandError as exc:
                if "atomic" not in str(exc.stderr or ""):
                    raise
                # A server without atomic pushes: one ordinary push of both refs is the next best.
                self.repo.git.push("--porcelain", remote, *refspecs)
        except git.GitCommandError as exc:
            detail = str(exc.stderr or exc).strip()
            raise RepoError(
                f"pushing to {remote!r} failed: {detail}. If the remote moved, run `git fetch {remote}` "
                "and look at the branch before publishing again."
            ) from exc

    def set_upstream(self, branch: str, remote: str) -> None:
        try:
            self.repo.git.config(f"branch.{branch}.remote", remote)
            self.repo.git.config(f"branch.{branch}.merge", f"refs/heads/{branch}")
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"pushed, but cannot set the upstream of {branch}: {exc}") from exc

    # -- plumbing writes (publish) ------------------------------------------------------------

    def _store(self, kind: str, data: bytes) -> bytes:
        return bytes(self.repo.odb.store(IStream(kind, len(data), BytesIO(data))).binsha)

    def _tree(self, files: Mapping[str, bytes]) -> bytes:
        """Write a (nested) tree holding `files` (path -> content); returns its binary sha."""
        blobs: dict[str, bytes] = {}
        subdirs: dict[str, dict[str, bytes]] = {}
        for path, content in files.items():
            head, _, rest = path.partition("/")
            if rest:
                subdirs.setdefault(head, {})[rest] = content
            else:
                blobs[head] = self._store("blob", content)
        entries = [(name, b"100644", sha) for name, sha in blobs.items()]
        entries += [(name, b"40000", self._tree(sub)) for name, sub in subdirs.items()]
        # git orders tree entries by name, comparing a directory's name as if it ended in '/'.
        entries.sort(key=lambda e: e[0] + ("/" if e[1] == b"40000" else ""))
        raw = b"".join(mode + b" " + name.encode() + b"\0" + sha for name, mode, sha in entries)
        return self._store("tree", raw)

    def commit_files(self, ref: str, files: Mapping[str, bytes], message: str) -> str | None:
        """Make `ref` point at a new commit whose tree is exactly `files`, parented on ref's tip.

        Uses only object writes and update-ref, so the checkout, index and HEAD are untouched.
        Returns the new sha, or None when the tree did not change.
        """
        tree = self._tree(files).hex()
        parent = self.resolve(ref)
        if parent is not None and self.repo.commit(parent).tree.hexsha == tree:
            return None
        args = [tree, "-m", message] + (["-p", parent] if parent else [])
        env = dict(os.environ)
        # commit-tree needs an identity; a fresh machine may have none configured.
        reader = self.repo.config_reader()
        if not reader.has_option("user", "name"):
            env.setdefault("GIT_AUTHOR_NAME", "autoresearch")
            env.setdefault("GIT_COMMITTER_NAME", "autoresearch")
        if not reader.has_option("user", "email"):
            env.setdefault("GIT_AUTHOR_EMAIL", "autoresearch@localhost")
            env.setdefault("GIT_COMMITTER_EMAIL", "autoresearch@localhost")
        try:
            sha = str(self.repo.git.commit_tree(*args, env=env)).strip()
            self.repo.git.update_ref(ref, sha, *([parent] if parent else []))
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"cannot record results on {ref}: {exc}") from exc
        return sha


def results_ref_for(ref: str) -> str:
    """The results branch that travels with a tag's branch: autoresearch/T -> autoresearch-results/T.

    Works for local (`autoresearch/T`), remote-tracking (`origin/autoresearch/T`) and full
    (`refs/remotes/origin/autoresearch/T`) names.
    """
    head, sep, tail = ref.rpartition(BRANCH_PREFIX)
    if not sep:
        return ""
    return f"{head}{RESULTS_PREFIX}{tail}"


def tag_of(ref: str) -> str | None:
    """The tag of a ref named like [remote/]autoresearch/<tag>, else None."""
    _, sep, tail = ref.rpartition(BRANCH_PREFIX)
    return tail if sep and tail else None
