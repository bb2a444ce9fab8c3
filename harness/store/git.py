"""The ratchet: the tag's own git worktree and branch, which only ever move forward.

`Ratchet.open` gives each tag a worktree ``<repo>/.autoresearch/worktrees/<tag>`` on branch
``autoresearch/<tag>``, created from the person's HEAD, so the person's checkout (files, index,
HEAD, branch) is never touched. Each attempt is one commit on that branch made from the mutable
files only (never ``git add -A``); `keep` moves the best ref ``refs/autoresearch/<tag>/best`` to
it, `revert` hard-resets the worktree and branch back to the best ref. So the branch holds only
kept commits, and its head is always the best-known version once an attempt is settled.

This is the only module that touches git for the loop (gitpython, behind one class). Every git
failure leaves as a `RepoError` whose message says what to do; `commit` raises `EditError` when
the edit changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import git
from gitdb.exc import BadName, BadObject, ODBError

from harness.errors import ConfigError, EditError, RepoError

# Everything gitpython raises for a missing repo, a bad ref or a failed git command.
ANY_GIT_ERROR: tuple[type[Exception], ...] = (git.GitError, BadName, BadObject, ODBError, ValueError, OSError)

BRANCH_PREFIX = "autoresearch/"
WORKTREES_DIR = Path(".autoresearch") / "worktrees"
EXCLUDE_LINE = "/.autoresearch/"
FALLBACK_NAME = "autoresearch"
FALLBACK_EMAIL = "autoresearch@localhost"
_TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Reading status without taking optional locks: git would otherwise refresh (rewrite) the
# person's index file just because we looked.
_READ_ONLY = {"GIT_OPTIONAL_LOCKS": "0"}


def best_ref(tag: str) -> str:
    return f"refs/autoresearch/{tag}/best"


def check_tag(tag: str) -> str:
    """The tag, if it is usable as a branch and folder name; ConfigError otherwise."""
    if not _TAG.match(tag) or ".." in tag or tag.endswith((".", ".lock")):
        raise ConfigError(
            f"--tag {tag!r} is not usable: use letters, digits, '.', '_' or '-' "
            "(at most 64, starting with a letter or digit), e.g. --tag mar8"
        )
    return tag


class Ratchet:
    """One tag's worktree and branch. Build it with `Ratchet.open`."""

    def __init__(
        self, repo: git.Repo, tree: git.Repo, tag: str, mutable: Sequence[str], identity: Mapping[str, str]
    ) -> None:
        self._repo = repo  # the person's repository (refs are shared; its checkout is never touched)
        self._tree = tree  # the tag's worktree
        self.tag = tag
        self.mutable = tuple(mutable)
        self.worktree = Path(tree.working_tree_dir or "")
        self.branch = BRANCH_PREFIX + tag
        self._identity = dict(identity)

    # --- opening -----------------------------------------------------------------------------

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
        root = Path(repo_root).resolve()
        repo = _open_repo(root)
        branch = BRANCH_PREFIX + tag
        worktree = root / WORKTREES_DIR / tag
        has_branch = _ref_exists(repo, f"refs/heads/{branch}")
        if resume:
            if not has_branch:
                extra = (
                    f" A stale worktree folder {worktree} is left; remove it with "
                    f"`git worktree remove --force {worktree}`."
                    if worktree.exists()
                    else ""
                )
                raise RepoError(
                    f"cannot resume tag {tag!r}: there is no branch {branch} in {root}. "
                    f"Start it without --resume.{extra}"
                )
            tree = _attach_worktree(repo, worktree, branch)
            if not _ref_exists(repo, best_ref(tag)):
                # Killed between creating the branch and recording the best: the branch tip then
                # is still the person's HEAD it was created from, i.e. the baseline.
                _git(repo, "update-ref", best_ref(tag), tree.head.commit.hexsha)
        else:
            if has_branch or worktree.exists():
                what = f"branch {branch}" if has_branch else f"worktree folder {worktree}"
                raise RepoError(
                    f"tag {tag!r} already exists ({what}). Continue it with --resume, or pick a new --tag. "
                    f"To start it over, delete it first: git worktree remove --force {worktree}; "
                    f"git branch -D {branch}"
                )
            _check_clean(repo, mutable)
            tree = _create_worktree(repo, worktree, branch)
            _git(repo, "update-ref", best_ref(tag), tree.head.commit.hexsha)
        _exclude(repo)
        return cls(repo, tree, tag, mutable, _identity(repo))

    # --- the ratchet -------------------------------------------------------------------------

    def best(self) -> str:
        """The sha of the last kept commit."""
        return _git(self._repo, "rev-parse", "--verify", best_ref(self.tag) + "^{commit}")

    def head(self) -> str:
        """The sha the worktree (and the branch) is at."""
        return _git(self._tree, "rev-parse", "--verify", "HEAD")

    def commit(self, message: str) -> str:
        """Commit the mutable files as they are in the worktree; returns the new sha.

        Only the mutable files are staged (untracked junk and other changed files stay out).
        Hooks and commit signing of the person's config are skipped: nobody is there at night
        to type a passphrase. EditError("the edit changes nothing") when they equal HEAD.
        """
        message = message.strip() or "autoresearch experiment"
        _git(self._tree, "reset", "-q")  # unstage anything an earlier, interrupted attempt left
        _git(self._tree, "add", "--", *self.mutable)
        if not _git(self._tree, "diff", "--cached", "--name-only", "--", *self.mutable):
            raise EditError(
                "the edit changes nothing", "The edit changes nothing: the file is identical to before."
            )
        _git(self._tree, "commit", "-q", "--no-verify", "--no-gpg-sign", "-m", message, env=self._identity)
        return self.head()

    def keep(self, sha: str) -> None:
        """Make ``sha`` (a descendant of the best commit) the best; the branch and worktree end up at it."""
        full = _git(self._tree, "rev-parse", "--verify", sha + "^{commit}")
        old = self.best()
        try:
            self._tree.git.merge_base("--is-ancestor", old, full)
        except git.GitCommandError:
            raise RepoError(
                f"cannot keep {full[:7]}: it does not descend from the best commit {old[:7]} of {self.branch}; "
                "the branch must only move forward"
            ) from None
        _git(self._repo, "update-ref", best_ref(self.tag), full, old)
        # Always reset, also when the head is already there: a run may have rewritten its own
        # mutable file, and that change must not ride along into the next attempt's commit.
        _git(self._tree, "reset", "-q", "--hard", full)

    def revert(self) -> None:
        """Hard-reset the worktree and branch to the best commit (discard / crash / bad edit)."""
        _git(self._tree, "reset", "-q", "--hard", self.best())

    def diff(self, a: str, b: str) -> str:
        """The unified diff from ``a`` to ``b`` (commits, or refs of the repository)."""
        return _git(self._tree, "diff", a, b, strip=False)

    def show(self, path: str, rev: str | None = None) -> str:
        """A file's text at ``rev`` (default: the best commit); path relative to the repository root."""
        return _git(self._tree, "show", f"{rev or self.best()}:{path}", strip=False)

    def __repr__(self) -> str:
        return f"Ratchet(tag={self.tag!r}, worktree={str(self.worktree)!r})"


# --- helpers ---------------------------------------------------------------------------------


def _git(repo: git.Repo, *args: str, env: Mapping[str, str] | None = None, strip: bool = True) -> str:
    """Run one git command in ``repo``; a failure becomes a RepoError quoting git."""
    try:
        out = repo.git.execute(["git", *args], env=dict(env) if env else None, strip_newline_in_stdout=strip)
    except git.GitCommandError as exc:
        stderr = (exc.stderr or "").strip().removeprefix("stderr:").strip().strip("'").strip()
        raise RepoError(
            f"git {' '.join(args[:3])} failed in {repo.working_tree_dir}: {stderr or exc}. "
            "Check the repository (git status) and run again; with --resume to continue the tag."
        ) from exc
    except ANY_GIT_ERROR as exc:
        raise RepoError(f"git {' '.join(args[:3])} failed in {repo.working_tree_dir}: {exc}") from exc
    return str(out)


def _open_repo(root: Path) -> git.Repo:
    try:
        repo = git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise RepoError(
            f"{root} is not a git repository. autoresearch keeps every experiment as a commit: "
            "run `git init && git add -A && git commit -m 'initial'` there first, or run from your checkout."
        ) from None
    except ANY_GIT_ERROR as exc:
        raise RepoError(f"cannot open the git repository at {root}: {exc}") from exc
    if repo.bare or repo.working_tree_dir is None:
        raise RepoError(f"{root} is a bare git repository; run from a checkout with a working tree")
    if not repo.head.is_valid():
        raise RepoError(
            f"the git repository at {root} has no commits yet. Commit your files first: "
            "git add -A && git commit -m 'initial'"
        )
    return repo


def _ref_exists(repo: git.Repo, ref: str) -> bool:
    try:
        repo.git.rev_parse("--verify", "--quiet", ref)
    except git.GitCommandError:
        return False
    return True


def _check_clean(repo: git.Repo, mutable: Sequence[str]) -> None:
    """Refuse mutable files that differ from HEAD in the person's checkout: the run starts from
    HEAD, so uncommitted work would be silently ignored (and later be in the way of a merge)."""
    status = _git(repo, "status", "--porcelain", "--untracked-files=all", "--", *mutable, env=_READ_ONLY)
    dirty = [line[3:] for line in status.splitlines() if line.strip()]
    untracked = [p for p in mutable if not _tracked(repo, p)]
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


def _tracked(repo: git.Repo, path: str) -> bool:
    try:
        repo.git.cat_file("-e", f"HEAD:{path}")
    except git.GitCommandError:
        return False
    return True


def _create_worktree(repo: git.Repo, worktree: Path, branch: str) -> git.Repo:
    worktree.parent.mkdir(parents=True, exist_ok=True)
    _git(repo, "worktree", "prune")  # forget worktrees whose folders were deleted by hand
    _git(repo, "worktree", "add", "-q", "-b", branch, str(worktree), "HEAD")
    return git.Repo(worktree)


def _attach_worktree(repo: git.Repo, worktree: Path, branch: str) -> git.Repo:
    """The existing worktree of ``branch``, re-attached at ``worktree`` if its folder is gone."""
    if not (worktree / ".git").exists():
        if worktree.exists() and any(worktree.iterdir()):
            raise RepoError(
                f"{worktree} exists but is not a git worktree; move it away and run again with --resume"
            )
        worktree.parent.mkdir(parents=True, exist_ok=True)
        _git(repo, "worktree", "prune")
        _git(repo, "worktree", "add", "-q", "--force", str(worktree), branch)
    try:
        tree = git.Repo(worktree)
    except ANY_GIT_ERROR as exc:
        raise RepoError(
            f"cannot open the worktree {worktree}: {exc}; move it away and run with --resume"
        ) from exc
    try:
        current = _git(tree, "symbolic-ref", "-q", "HEAD")
    except RepoError:
        current = ""  # a detached HEAD
    if current != f"refs/heads/{branch}":
        raise RepoError(
            f"the worktree {worktree} is not on branch {branch} (it is on {current or 'a detached HEAD'}); "
            f"check it out there (git -C {worktree} checkout {branch}) and run again with --resume"
        )
    return tree


def _exclude(repo: git.Repo) -> None:
    """Hide the worktrees from the person's `git status` (info/exclude: not a tracked file)."""
    exclude = Path(repo.common_dir) / "info" / "exclude"
    try:
        text = exclude.read_text() if exclude.exists() else ""
        if EXCLUDE_LINE not in text.splitlines():
            exclude.parent.mkdir(parents=True, exist_ok=True)
            sep = "" if not text or text.endswith("\n") else "\n"
            exclude.write_text(f"{text}{sep}{EXCLUDE_LINE}\n")
    except OSError as exc:
        raise RepoError(f"cannot update {exclude}: {exc}") from exc


def _identity(repo: git.Repo) -> dict[str, str]:
    """The person's git identity for the experiment commits, or autoresearch's own."""

    def get(key: str) -> str:
        try:
            return str(repo.git.config("--get", key)).strip()
        except git.GitCommandError:
            return ""

    name = get("user.name") or FALLBACK_NAME
    email = get("user.email") or FALLBACK_EMAIL
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_COMMITTER_NAME": name,
        "GIT_COMMITTER_EMAIL": email,
    }
