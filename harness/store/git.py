"""Git, behind one class: `Repo` (gitpython underneath; nothing else in the harness touches git).

`Repo.find(start)`: the checkout containing `start`; a tag's worktree resolves to the checkout
that made it, so the review commands find the results from any folder. `Repo.open(root)`:
exactly `root`, refusing what a night cannot start from (no repository, bare, no commits).
A Repo reads refs, history, diffs and files, pushes, and commits two ways: `commit` of chosen
paths in its working tree, and `commit_files` with plumbing only (publish's results branch:
the checkout, index and HEAD are never touched).

`Ratchet` is the night's use of it: the tag's own worktree on branch ``autoresearch/<tag>``,
made from the person's HEAD (their checkout is never touched). Each attempt commits the
mutable files only (never ``git add -A``); `keep` moves the best ref
``refs/autoresearch/<tag>/best`` forward to it, `revert` hard-resets to the best ref, so the
branch holds only kept commits and its head is the best-known version.

Every git failure leaves as a `RepoError` saying what to do (`ANY_GIT_ERROR`: all gitpython
raises); `Ratchet.commit` raises `EditError` when the edit changes nothing.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import git
from gitdb.base import IStream
from gitdb.exc import BadName, BadObject, ODBError

from harness.credentials import redact
from harness.errors import ConfigError, EditError, RepoError
from harness.store.paths import WORKTREES, checkout_of

# Everything gitpython raises for a missing repo, a bad ref or a failed git command.
ANY_GIT_ERROR: tuple[type[Exception], ...] = (git.GitError, BadName, BadObject, ODBError, ValueError, OSError)
# ... and for a path or branch that is not there.
_LOOKUP_ERROR: tuple[type[Exception], ...] = (KeyError, IndexError, *ANY_GIT_ERROR)

BRANCH_PREFIX = "autoresearch/"
RESULTS_PREFIX = "autoresearch-results/"
# Lines added to .git/info/exclude: the tags' worktrees and results stay out of `git status`.
EXCLUDE_LINES = ("/.autoresearch/", "/results/")
FALLBACK_NAME = "autoresearch"
FALLBACK_EMAIL = "autoresearch@localhost"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Reading status without taking optional locks: git would otherwise refresh (rewrite) the
# person's index file just because we looked.
_READ_ONLY = {"GIT_OPTIONAL_LOCKS": "0"}


def best_ref(tag: str) -> str:
    return f"refs/autoresearch/{tag}/best"


def attempts_prefix(tag: str) -> str:
    """Where every committed attempt of a tag is kept: refs/autoresearch/<tag>/attempts/<n>."""
    return f"refs/autoresearch/{tag}/attempts/"


def attempt_ref(tag: str, n: int) -> str:
    return f"{attempts_prefix(tag)}{n}"


# Where `git fetch` puts another machine's attempt refs, once the refspec below is configured:
# refs/autoresearch-fetched/<remote>/<tag>/attempts/<n> (outside refs/remotes, so `git branch -r`
# does not list hundreds of them, and apart from the local refs a night of the same tag moves).
FETCHED_PREFIX = "refs/autoresearch-fetched/"


def fetch_refspec(remote: str) -> str:
    """The fetch refspec that brings a remote's attempt refs (and best refs) with a plain `git fetch`."""
    return f"+refs/autoresearch/*:{FETCHED_PREFIX}{remote}/*"


def check_tag(tag: str) -> str:
    """The tag, if it is usable as a branch and folder name; ConfigError otherwise."""
    if not _TAG.match(tag) or ".." in tag or tag.endswith((".", ".lock")):
        raise ConfigError(
            f"--tag {tag!r} is not usable: use letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit), e.g. --tag mar8"
        )
    return tag


def results_ref_for(ref: str) -> str:
    """The results branch that travels with a tag's branch: autoresearch/T -> autoresearch-results/T.

    Works for local (`autoresearch/T`), remote-tracking (`origin/autoresearch/T`) and full
    (`refs/remotes/origin/autoresearch/T`) names.
    """
    head, sep, tail = ref.rpartition(BRANCH_PREFIX)
    return f"{head}{RESULTS_PREFIX}{tail}" if sep else ""


def tag_of(ref: str) -> str | None:
    """The tag of a ref named like [remote/]autoresearch/<tag>, else None."""
    _, sep, tail = ref.rpartition(BRANCH_PREFIX)
    return tail if sep and tail else None


@dataclass(frozen=True)
class CommitInfo:
    """One commit on a branch: its sha, the message's first line, and its first parent."""

    sha: str
    subject: str
    parent: str | None

    @property
    def short(self) -> str:
        return self.sha[:7]


class Repo:
    """One git working tree (the person's checkout, or a tag's worktree)."""

    def __init__(self, repo: git.Repo) -> None:
        if repo.bare or repo.working_tree_dir is None:
            raise RepoError(f"{repo.git_dir} is a bare git repository; run from a checkout of it")
        self._repo = repo
        self.root = Path(repo.working_tree_dir)

    @classmethod
    def find(cls, start: Path) -> Repo:
        """The checkout containing `start`; inside a tag's worktree, the checkout that made it."""
        start = Path(start).resolve()
        try:
            repo = git.Repo(start, search_parent_directories=True)
            owner = checkout_of(Path(repo.working_tree_dir or start))
            if owner is not None and (owner / ".git").exists():
                repo = git.Repo(owner)
        except ANY_GIT_ERROR:
            raise RepoError(
                f"{start} is not inside a git repository; run `git init` and commit the experiment first, "
                "or run this from your checkout"
            ) from None
        return cls(repo)

    @classmethod
    def open(cls, root: Path) -> Repo:
        """Exactly the checkout at `root`, with at least one commit."""
        try:
            repo = cls(git.Repo(root))
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise RepoError(
                f"{root} is not a git repository. autoresearch keeps every experiment as a commit: "
                "run `git init && git add -A && git commit -m 'initial'` there first, or run from your checkout."
            ) from None
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"cannot open the git repository at {root}: {exc}") from exc
        if not repo._repo.head.is_valid():
            raise RepoError(
                f"the git repository at {root} has no commits yet: git add -A && git commit -m 'initial'"
            )
        return repo

    @classmethod
    def clone(cls, url: str, dest: Path) -> Repo:
        """A fresh clone of `url` at `dest` (a Ray worker's checkout of the family's remote)."""
        try:
            return cls(git.Repo.clone_from(url, dest))
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"cannot clone {url} into {dest}: {exc}") from exc

    def git(self, *args: str, env: Mapping[str, str] | None = None, strip: bool = True) -> str:
        """Run one git command here; a failure becomes a RepoError quoting git."""
        try:
            out = self._repo.git.execute(["git", *args], env=env and dict(env), strip_newline_in_stdout=strip)
        except git.GitCommandError as exc:
            stderr = (exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
            raise RepoError(
                f"git {' '.join(args[:3])} failed in {self.root}: {stderr or exc}. "
                "Check the repository (git status) and run the command again (a night continues with --resume)."
            ) from exc
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"git {' '.join(args[:3])} failed in {self.root}: {exc}") from exc
        return str(out)

    def _ok(self, *args: str) -> bool:
        """Whether a git command succeeds (a question asked of git, not an error)."""
        try:
            self._repo.git.execute(["git", *args])
        except ANY_GIT_ERROR:
            return False
        return True

    def identity(self) -> dict[str, str]:
        """The person's git identity (user.name / user.email) for commits, or autoresearch's own."""

        def get(key: str, fallback: str) -> str:
            try:
                return str(self._repo.git.config("--get", key)).strip() or fallback
            except ANY_GIT_ERROR:
                return fallback

        name, email = get("user.name", FALLBACK_NAME), get("user.email", FALLBACK_EMAIL)
        return {
            f"GIT_{who}_{key}": value
            for who in ("AUTHOR", "COMMITTER")
            for key, value in (("NAME", name), ("EMAIL", email))
        }

    # -- refs and history ---------------------------------------------------------------------

    def resolve(self, ref: str) -> str | None:
        """The full sha of the commit `ref` names, or None when it names none."""
        try:
            return str(self._repo.commit(ref).hexsha)
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

    def head(self) -> str:
        """The sha HEAD is at."""
        return self.git("rev-parse", "--verify", "HEAD")

    def has_branch(self, name: str) -> bool:
        return self._ok("rev-parse", "--verify", "--quiet", f"refs/heads/{name}")

    def autoresearch_branches(self) -> list[str]:
        """Local and remote-tracking branches named like [remote/]autoresearch/<tag>."""
        patterns = (f"refs/heads/{BRANCH_PREFIX}", f"refs/remotes/*/{BRANCH_PREFIX}*")
        return sorted(self.git("for-each-ref", "--format=%(refname:short)", *patterns).splitlines())

    def merge_base(self, refs: Sequence[str]) -> str | None:
        """The best common ancestor of all `refs` (None when they share no history)."""
        try:
            out = self._repo.git.merge_base("--octopus", *refs) if len(refs) > 1 else self.resolve(refs[0])
        except ANY_GIT_ERROR:
            return None
        return str(out or "").strip() or None

    def is_ancestor(self, ancestor: str, ref: str) -> bool:
        return self._ok("merge-base", "--is-ancestor", ancestor, ref)

    def log(self, base: str | None, ref: str) -> list[CommitInfo]:
        """The first-parent commits in base..ref, oldest first (all of ref's history without base)."""
        rev = f"{base}..{ref}" if base else ref
        out = self.git("log", "--first-parent", "--reverse", "--format=%H%x00%P%x00%s", rev)
        commits = []
        for line in out.splitlines():
            sha, parents, subject = line.split("\x00", 2)
            commits.append(CommitInfo(sha, subject, parents.split()[0] if parents else None))
        return commits

    def diff(self, a: str | None, b: str, paths: Sequence[str] = ()) -> str:
        """The unified diff from `a` (None = the empty tree) to `b`, optionally limited to paths."""
        base = a if a is not None else self.git("hash-object", "-t", "tree", "/dev/null")
        return self.git("diff", base, b, "--", *paths, strip=False)

    def show(self, ref: str, path: str) -> str | None:
        """`path` at `ref` through one `git show` (a process of its own: safe from any thread), or None."""
        try:
            out = self._repo.git.execute(["git", "show", f"{ref}:{path}"], strip_newline_in_stdout=False)
        except ANY_GIT_ERROR:
            return None
        return str(out)

    def merge_texts(self, ours: str, base: str, theirs: str) -> str | None:
        """The three-way merge of one file's texts (`git merge-file`), or None when they conflict."""
        with tempfile.TemporaryDirectory(prefix="autoresearch-merge-") as tmp:
            names = []
            for name, text in (("ours", ours), ("base", base), ("theirs", theirs)):
                path = Path(tmp) / name
                path.write_text(text, encoding="utf-8")
                names.append(str(path))
            try:
                out = self._repo.git.execute(
                    ["git", "merge-file", "-p", *names], strip_newline_in_stdout=False
                )
            except ANY_GIT_ERROR:
                return None  # exit status > 0: the number of conflicts
        return str(out)

    def refs(self, prefix: str) -> dict[str, str]:
        """Every ref under `prefix` -> the sha it names."""
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)

    def fetch_refspecs(self, remote: str) -> list[str]:
        try:
            out = self._repo.git.config("--get-all", f"remote.{remote}.fetch")
        except ANY_GIT_ERROR:
            return []
        return [line.strip() for line in str(out).splitlines() if line.strip()]

    def add_fetch_refspec(self, remote: str, refspec: str) -> bool:
        """Add `refspec` to the remote's fetch refspecs unless it is there; whether it was added."""
        if refspec in self.fetch_refspecs(remote):
            return False
        self.git("config", "--add", f"remote.{remote}.fetch", refspec)
        return True

    def changed_paths(self, a: str, b: str) -> list[str]:
        return [p for p in self.git("diff", "--name-only", a, b).splitlines() if p]

    def read_file(self, ref: str, path: str) -> str | None:
        """The content of `path` (relative to the repository root) at `ref`, or None when it is not there."""
        try:
            blob = self._repo.commit(ref).tree / path
        except _LOOKUP_ERROR:
            return None
        data: bytes = blob.data_stream.read()
        return data.decode("utf-8", errors="replace")

    # -- writes -------------------------------------------------------------------------------

    def commit(self, paths: Sequence[str], message: str) -> str | None:
        """Commit `paths` as they are in the working tree; the new sha, or None when they equal HEAD.

        Only `paths` are staged. Hooks and commit signing of the person's config are skipped:
        nobody is there at night to type a passphrase.
        """
        self.git("reset", "-q")  # unstage anything an earlier, interrupted attempt left
        self.git("add", "--", *paths)
        if not self.git("diff", "--cached", "--name-only", "--", *paths):
            return None
        message = redact(message)  # a description may carry a leaked key in some encoding
        self.git("commit", "-q", "--no-verify", "--no-gpg-sign", "-m", message, env=self.identity())
        return self.head()

    def commit_files(self, ref: str, files: Mapping[str, bytes], message: str) -> str | None:
        """Make `ref` point at a new commit whose tree is exactly `files`, parented on ref's tip.

        Uses only object writes and update-ref, so the checkout, index and HEAD are untouched.
        Returns the new sha, or None when the tree did not change.
        """
        try:
            tree = self._tree(files).hex()
            parent = self.resolve(ref)
            if parent is not None and self._repo.commit(parent).tree.hexsha == tree:
                return None
            args = [tree, "-m", message] + (["-p", parent] if parent else [])
            sha = str(self._repo.git.commit_tree(*args, env=self.identity())).strip()
            self._repo.git.update_ref(ref, sha, *([parent] if parent else []))
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"cannot record results on {ref}: {exc}") from exc
        return sha

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

    def _store(self, kind: str, data: bytes) -> bytes:
        return bytes(self._repo.odb.store(IStream(kind, len(data), BytesIO(data))).binsha)

    # -- remotes ------------------------------------------------------------------------------

    def upstream_remote(self, branch: str) -> str | None:
        """The remote the local `branch` tracks, or None."""
        try:
            tracking = self._repo.heads[branch].tracking_branch()
        except _LOOKUP_ERROR:
            return None
        return tracking.remote_name if tracking is not None else None

    def remote_names(self) -> list[str]:
        return [r.name for r in self._repo.remotes]

    def push(self, remote: str, refspecs: Sequence[str]) -> None:
        """Push all refspecs in one atomic push: they land together or not at all."""
        try:
            try:
                self._repo.git.push("--atomic", "--porcelain", remote, *refspecs)
            except git.GitCommandError as exc:
                if "atomic" not in str(exc.stderr or ""):
                    raise
                # A server without atomic pushes: one ordinary push of both refs is the next best.
                self._repo.git.push("--porcelain", remote, *refspecs)
        except git.GitCommandError as exc:
            detail = str(exc.stderr or exc).strip()
            raise RepoError(
                f"pushing to {remote!r} failed: {detail}. If the remote moved, run `git fetch {remote}` "
                "and look at the branch before publishing again."
            ) from exc

    def set_upstream(self, branch: str, remote: str) -> None:
        try:
            self._repo.git.config(f"branch.{branch}.remote", remote)
            self._repo.git.config(f"branch.{branch}.merge", f"refs/heads/{branch}")
        except ANY_GIT_ERROR as exc:
            raise RepoError(f"pushed, but cannot set the upstream of {branch}: {exc}") from exc


class Ratchet:
    """One tag's worktree and branch, which only ever move forward. Build it with `Ratchet.open`."""

    def __init__(self, repo: Repo, tree: Repo, tag: str, mutable: Sequence[str]) -> None:
        self.repo = repo  # the person's checkout (refs are shared; its files are never touched)
        self.tree = tree  # the tag's worktree
        self.tag = tag
        self.mutable = tuple(mutable)
        self.worktree = tree.root
        self.branch = BRANCH_PREFIX + tag

    @classmethod
    def open(cls, repo_root: Path, tag: str, mutable: Sequence[str], *, resume: bool) -> Ratchet:
        """Create the tag's worktree and branch (or, with ``resume``, re-open them), after checking.

        Refuses with a RepoError: a folder that is not a git repository, a repository without
        commits, a mutable file that is untracked or has uncommitted changes in the person's
        checkout (new tag only: a resumed tag continues its own branch), an existing tag without
        ``resume``, and ``resume`` of a tag that does not exist. ``mutable`` is relative to the
        repository root. Nothing is changed when it refuses.
        """
        check_tag(tag)
        if not mutable:
            raise ConfigError("no mutable files: experiment.toml must list at least one under 'mutable'")
        repo = Repo.open(Path(repo_root).resolve())
        branch = BRANCH_PREFIX + tag
        worktree = repo.root / WORKTREES / tag
        has_branch = repo.has_branch(branch)
        if resume:
            if not has_branch:
                extra = (
                    f" A stale worktree folder {worktree} is left; remove it with "
                    f"`git worktree remove --force {worktree}`."
                    if worktree.exists()
                    else ""
                )
                raise RepoError(
                    f"cannot resume tag {tag!r}: there is no branch {branch} in {repo.root}. "
                    f"Start it without --resume.{extra}"
                )
            tree = _attach_worktree(repo, worktree, branch)
            if repo.resolve(best_ref(tag)) is None:
                # Killed between creating the branch and recording the best: the branch tip then
                # is still the person's HEAD it was created from, i.e. the baseline.
                repo.git("update-ref", best_ref(tag), tree.head())
        else:
            if has_branch or worktree.exists():
                what = f"branch {branch}" if has_branch else f"worktree folder {worktree}"
                raise RepoError(
                    f"tag {tag!r} already exists ({what}). Continue it with --resume, or pick a new --tag. "
                    f"To start it over, delete it first: git worktree remove --force {worktree}; "
                    f"git branch -D {branch}"
                )
            _check_clean(repo, mutable)
            worktree.parent.mkdir(parents=True, exist_ok=True)
            repo.git("worktree", "prune")  # forget worktrees whose folders were deleted by hand
            repo.git("worktree", "add", "-q", "-b", branch, str(worktree), "HEAD")
            tree = Repo.open(worktree)
            repo.git("update-ref", best_ref(tag), tree.head())
            for ref in repo.refs(attempts_prefix(tag)):  # left by a deleted night of the same tag
                repo.git("update-ref", "-d", ref)
        _exclude(repo)
        return cls(repo, tree, tag, mutable)

    def best(self) -> str:
        """The sha of the last kept commit."""
        return self.repo.git("rev-parse", "--verify", best_ref(self.tag) + "^{commit}")

    def head(self) -> str:
        """The sha the worktree (and the branch) is at."""
        return self.tree.head()

    def commit(self, message: str) -> str:
        """Commit the mutable files as they are in the worktree; returns the new sha.

        EditError("the edit changes nothing") when they equal HEAD (untracked junk and other
        changed files never count: only the mutable files are staged).
        """
        sha = self.tree.commit(self.mutable, message.strip() or "autoresearch experiment")
        if sha is None:
            raise EditError(
                "the edit changes nothing", "The edit changes nothing: the file is identical to before."
            )
        return sha

    def keep(self, sha: str) -> None:
        """Make ``sha`` (a descendant of the best commit) the best; the branch and worktree end up at it."""
        full = self.tree.git("rev-parse", "--verify", sha + "^{commit}")
        old = self.best()
        if not self.tree.is_ancestor(old, full):
            raise RepoError(
                f"cannot keep {full[:7]}: it does not descend from the best commit {old[:7]} of {self.branch}; "
                "the branch must only move forward"
            )
        self.repo.git("update-ref", best_ref(self.tag), full, old)
        # Always reset, also when the head is already there: a run may have rewritten its own
        # mutable file, and that change must not ride along into the next attempt's commit.
        self.tree.git("reset", "-q", "--hard", full)

    def restart_from_checkout(self) -> str | None:
        """Move a tag that has kept nothing yet to the person's current HEAD; returns the new sha,
        or None when it is already there.

        How a fix of a crashed baseline, committed on the person's branch, reaches the tag on
        --resume. Only for a tag without a kept result: the branch otherwise moves only forward.
        """
        head = self.repo.head()
        if head == self.best():
            return None
        _check_clean(self.repo, self.mutable)
        self.repo.git("update-ref", best_ref(self.tag), head)
        self.tree.git("reset", "-q", "--hard", head)
        return head

    def revert(self) -> None:
        """Hard-reset the worktree and branch to the best commit (discard / crash / bad edit)."""
        self.tree.git("reset", "-q", "--hard", self.best())

    def push_branch(self, remote: str) -> None:
        """Push the branch (its head is the best) to `remote`, forced: a restarted tag rewrites it."""
        self.repo.push(remote, [f"+refs/heads/{self.branch}:refs/heads/{self.branch}"])

    # -- every attempt's code -----------------------------------------------------------------

    def mark_attempt(self, n: int, sha: str) -> None:
        """Keep attempt n's commit reachable as refs/autoresearch/<tag>/attempts/<n> (a discard
        or crash is reset away from the branch, but its code stays here)."""
        self.repo.git("update-ref", attempt_ref(self.tag, n), sha)

    def attempt_commit(self, n: int) -> str | None:
        """Attempt n's commit. Through one `git rev-parse` of its own (not gitpython's object
        database, whose reader process is not thread-safe): proposals are made in other threads."""
        try:
            return self.repo.git("rev-parse", "--verify", "--quiet", attempt_ref(self.tag, n) + "^{commit}")
        except RepoError:
            return None

    def attempt_diff(self, n: int) -> str | None:
        """Attempt n's change (its commit against its first parent), the mutable files only."""
        sha = self.attempt_commit(n)
        if sha is None:
            return None
        try:
            return self.repo.git("diff", f"{sha}^", sha, "--", *self.mutable, strip=False)
        except RepoError:
            return None  # the first commit of the repository has no parent to compare with

    def rebase_attempt(self, n: int, onto: Mapping[str, str]) -> dict[str, str]:
        """The mutable files of `onto` (the best's) with attempt n's change applied: for each file a
        three-way merge of (the best, n's parent, n). EditError (feedback for the model) when n has
        no commit or its change conflicts with the best. Safe to call from any thread."""
        sha = self.attempt_commit(n)
        if sha is None:
            raise EditError(
                f"attempt #{n} has no commit to build on",
                f"`Parent: #{n}` names an attempt whose code was never committed (it did not apply, or "
                "there is no such attempt). Name a recent attempt that ran, or leave the Parent line out.",
            )
        out: dict[str, str] = {}
        for path in self.mutable:
            ours = onto.get(path, "")
            base, theirs = self.repo.show(f"{sha}^", path), self.repo.show(sha, path)
            if base is None or theirs is None or base == theirs:
                out[path] = ours
                continue
            merged = theirs if base == ours else self.repo.merge_texts(ours, base, theirs)
            if merged is None:
                raise EditError(
                    f"attempt #{n}'s change conflicts with the current best in {path}",
                    f"`Parent: #{n}`: that attempt's change to `{path}` conflicts with what was kept since, "
                    "so it cannot be applied to the current best. Build on the best instead (no Parent line).",
                )
            out[path] = merged
        return out

    def __repr__(self) -> str:
        return f"Ratchet(tag={self.tag!r}, worktree={str(self.worktree)!r})"


# --- opening a tag ---------------------------------------------------------------------------


def _check_clean(repo: Repo, mutable: Sequence[str]) -> None:
    """Refuse mutable files that differ from HEAD in the person's checkout: the run starts from
    HEAD, so uncommitted work would be silently ignored (and later be in the way of a merge)."""
    status = repo.git("status", "--porcelain", "--untracked-files=all", "--", *mutable, env=_READ_ONLY)
    dirty = [line[3:] for line in status.splitlines() if line.strip()]
    untracked = [p for p in mutable if repo.read_file("HEAD", p) is None]
    if untracked:
        raise RepoError(
            f"mutable file(s) not committed: {', '.join(untracked)}. The night starts from your last "
            f"commit; add them first: git add {' '.join(untracked)} && git commit -m 'experiment files'"
        )
    if dirty:
        raise RepoError(
            f"mutable file(s) with uncommitted changes: {', '.join(dirty)}. The night starts from your "
            f"last commit (HEAD) and would ignore them: commit them (git commit {' '.join(dirty)}) "
            "or discard them (git restore <file>) first."
        )


def _attach_worktree(repo: Repo, worktree: Path, branch: str) -> Repo:
    """The existing worktree of ``branch``, re-attached at ``worktree`` if its folder is gone."""
    if not (worktree / ".git").exists():
        if worktree.exists() and any(worktree.iterdir()):
            raise RepoError(
                f"{worktree} exists but is not a git worktree; move it away and run again with --resume"
            )
        worktree.parent.mkdir(parents=True, exist_ok=True)
        repo.git("worktree", "prune")
        repo.git("worktree", "add", "-q", "--force", str(worktree), branch)
    try:
        tree = Repo(git.Repo(worktree))
    except ANY_GIT_ERROR as exc:
        raise RepoError(
            f"cannot open the worktree {worktree}: {exc}; move it away and run with --resume"
        ) from exc
    current = tree.git("rev-parse", "--symbolic-full-name", "HEAD")  # "HEAD" when detached
    if current != f"refs/heads/{branch}":
        raise RepoError(
            f"the worktree {worktree} is not on branch {branch} (it is on {current.removeprefix('refs/heads/')}); "
            f"check it out there (git -C {worktree} checkout {branch}) and run again with --resume"
        )
    return tree


def _exclude(repo: Repo) -> None:
    """Hide the worktrees and results from the person's `git status` (info/exclude: not a tracked file)."""
    exclude = Path(repo.git("rev-parse", "--path-format=absolute", "--git-common-dir")) / "info" / "exclude"
    try:
        text = exclude.read_text() if exclude.exists() else ""
        missing = [line for line in EXCLUDE_LINES if line not in text.splitlines()]
        if missing:
            exclude.parent.mkdir(parents=True, exist_ok=True)
            sep = "" if not text or text.endswith("\n") else "\n"
            exclude.write_text(text + sep + "".join(f"{line}\n" for line in missing))
    except OSError as exc:
        raise RepoError(f"cannot update {exclude}: {exc}") from exc
