"""Git on real temporary repositories: the ratchet of a night, and the Repo the review commands use."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from support.gitrepo import TEST_EMAIL, TEST_NAME, TOY_TRAIN, commit_all, git, log, make_repo, snapshot

from harness.errors import ConfigError, EditError, RepoError
from harness.store.git import FALLBACK_EMAIL, FALLBACK_NAME, Ratchet, Repo, best_ref

MUTABLE = [TOY_TRAIN]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "proj")


def edit(r: Ratchet, text: str) -> None:
    (r.worktree / TOY_TRAIN).write_text(text)


def test_open_creates_worktree_branch_best_ref_and_exclude(repo: Path) -> None:
    head = git(repo, "rev-parse", "HEAD")
    r = Ratchet.open(repo, "mar8", MUTABLE, resume=False)
    assert r.worktree == repo / ".autoresearch" / "worktrees" / "mar8"
    assert r.branch == "autoresearch/mar8"
    assert r.best() == r.head() == head
    assert git(repo, "rev-parse", "refs/heads/autoresearch/mar8") == head
    assert git(repo, "rev-parse", best_ref("mar8")) == head
    assert git(r.worktree, "symbolic-ref", "HEAD") == "refs/heads/autoresearch/mar8"
    assert (r.worktree / TOY_TRAIN).read_text() == (repo / TOY_TRAIN).read_text()
    excluded = (repo / ".git" / "info" / "exclude").read_text().splitlines()
    assert "/.autoresearch/" in excluded and "/results/" in excluded
    assert git(repo, "status", "--porcelain") == ""  # the worktrees do not show up as untracked


def test_keep_and_revert_cycles_leave_the_person_untouched(repo: Path) -> None:
    (repo / "scratch.txt").write_text("the person's uncommitted notes\n")  # untracked, must survive
    git(repo, "add", "README.md")  # an index refresh before the snapshot, as a person's git would
    before = snapshot(repo)
    base = git(repo, "rev-parse", "HEAD")
    r = Ratchet.open(repo, "night", MUTABLE, resume=False)

    edit(r, "LEARNING_RATE = 0.02\n")
    c1 = r.commit("raise lr")
    assert r.head() == c1 and git(r.worktree, "rev-parse", "HEAD~1") == base
    r.keep(c1)
    assert r.best() == c1

    edit(r, "LEARNING_RATE = 0.5\n")
    c2 = r.commit("much higher lr")
    r.revert()  # discard
    assert r.head() == r.best() == c1
    assert (r.worktree / TOY_TRAIN).read_text() == "LEARNING_RATE = 0.02\n"

    edit(r, "LEARNING_RATE = 0.03\nraise SystemExit(1)\n")
    r.commit("crashy")
    r.revert()  # crash

    edit(r, "LEARNING_RATE = 0.025\n")
    c4 = r.commit("slightly higher lr")
    r.keep(c4)

    assert log(repo, "autoresearch/night") == ["slightly higher lr", "raise lr", "initial"]
    assert r.head() == r.best() == c4
    assert git(repo, "branch", "--contains", c2) == ""  # the discarded commit is on no branch
    assert snapshot(repo) == before
    assert (repo / TOY_TRAIN).read_text() == "LEARNING_RATE = 0.01\nprint('---')\nprint('val_bpb: 1.0')\n"
    assert git(repo, "rev-parse", "HEAD") == base and git(repo, "symbolic-ref", "HEAD") == "refs/heads/main"
    assert "LEARNING_RATE = 0.025" in (r.tree.read_file(r.best(), TOY_TRAIN) or "")
    assert "-LEARNING_RATE = 0.01" in r.tree.diff(base, c4) and "+LEARNING_RATE = 0.025" in r.tree.diff(
        base, c4
    )


def test_only_mutable_files_are_committed(repo: Path) -> None:
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    (r.worktree / "experiments" / "toy" / "junk.bin").write_bytes(b"\0" * 100)
    (r.worktree / "experiments" / "toy" / "__pycache__").mkdir()
    (r.worktree / "experiments" / "toy" / "__pycache__" / "train.cpython-311.pyc").write_bytes(b"x")
    (r.worktree / "prepare" / "__init__.py").write_text("EVAL_TOKENS = 1\n")  # tampering, not mutable
    git(r.worktree, "add", "prepare/__init__.py")  # even staged by someone else
    edit(r, "LEARNING_RATE = 0.03\n")
    sha = r.commit("lr 0.03")
    files = git(repo, "diff-tree", "--no-commit-id", "--name-only", "-r", sha).splitlines()
    assert files == [TOY_TRAIN]
    assert git(repo, "show", f"{sha}:prepare/__init__.py") == "EVAL_TOKENS = 1000"
    r.revert()
    assert (r.worktree / "prepare" / "__init__.py").read_text() == "EVAL_TOKENS = 1000\n"


def test_an_edit_that_changes_nothing_is_refused(repo: Path) -> None:
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    head = r.head()
    with pytest.raises(EditError, match="changes nothing"):
        r.commit("no-op")
    (r.worktree / "experiments" / "toy" / "other.txt").write_text("junk\n")
    with pytest.raises(EditError, match="changes nothing"):
        r.commit("only junk changed")
    assert r.head() == head


def test_commits_use_the_persons_identity(repo: Path) -> None:
    git(repo, "config", "user.name", "Ada Lovelace")
    git(repo, "config", "user.email", "ada@example.org")
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    edit(r, "LEARNING_RATE = 0.04\n")
    sha = r.commit("lr 0.04\n\nwith a body\tand a tab")
    assert git(repo, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", sha) == (
        "Ada Lovelace <ada@example.org>|Ada Lovelace <ada@example.org>|lr 0.04"
    )


def test_commits_fall_back_to_autoresearch_identity(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(repo.parent))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(repo.parent / "xdg"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_GLOBAL", raising=False)
    for var in ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "EMAIL"):
        monkeypatch.delenv(var, raising=False)
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    edit(r, "LEARNING_RATE = 0.05\n")
    sha = r.commit("lr 0.05")
    assert git(repo, "log", "-1", "--format=%an <%ae>", sha) == f"{FALLBACK_NAME} <{FALLBACK_EMAIL}>"
    assert f"{TEST_NAME} <{TEST_EMAIL}>" == git(repo, "log", "-1", "--format=%an <%ae>", "main")


def test_hooks_and_signing_do_not_block_a_night(repo: Path) -> None:
    hook = repo / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook says no' >&2\nexit 1\n")
    hook.chmod(0o755)
    git(repo, "config", "commit.gpgsign", "true")
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    edit(r, "LEARNING_RATE = 0.06\n")
    assert r.commit("lr 0.06") == r.head()


def test_keep_refuses_a_commit_off_the_branch(repo: Path) -> None:
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    edit(r, "LEARNING_RATE = 0.07\n")
    c1 = r.commit("a")
    r.revert()
    edit(r, "LEARNING_RATE = 0.08\n")
    c2 = r.commit("b")
    r.keep(c2)
    with pytest.raises(RepoError, match="does not descend"):
        r.keep(c1)
    assert r.best() == c2


def test_resume_continues_and_reattaches_a_missing_worktree(repo: Path) -> None:
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    edit(r, "LEARNING_RATE = 0.09\n")
    kept = r.commit("kept")
    r.keep(kept)
    edit(r, "LEARNING_RATE = 0.1\n")
    r.commit("in flight when the harness died")

    again = Ratchet.open(repo, "t", MUTABLE, resume=True)
    assert again.best() == kept
    again.revert()
    assert again.head() == kept

    shutil.rmtree(again.worktree)  # someone cleaned .autoresearch by hand
    third = Ratchet.open(repo, "t", MUTABLE, resume=True)
    assert third.worktree.is_dir() and third.head() == kept == third.best()
    assert (third.worktree / TOY_TRAIN).read_text() == "LEARNING_RATE = 0.09\n"
    edit(third, "LEARNING_RATE = 0.11\n")
    third.keep(third.commit("after resume"))
    assert log(repo, "autoresearch/t") == ["after resume", "kept", "initial"]


def test_resume_ignores_the_persons_later_work(repo: Path) -> None:
    Ratchet.open(repo, "t", MUTABLE, resume=False)
    (repo / TOY_TRAIN).write_text("LEARNING_RATE = 123\n")  # the person edits in their checkout
    r = Ratchet.open(repo, "t", MUTABLE, resume=True)
    assert (r.worktree / TOY_TRAIN).read_text().startswith("LEARNING_RATE = 0.01")


# --- refusals ---------------------------------------------------------------------------------


def test_refuses_a_folder_that_is_not_a_repo(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepoError, match="not a git repository.*git init"):
        Ratchet.open(tmp_path / "plain", "t", MUTABLE, resume=False)
    with pytest.raises(RepoError, match="not a git repository"):
        Ratchet.open(tmp_path / "missing", "t", MUTABLE, resume=False)


def test_refuses_a_repo_without_commits(tmp_path: Path) -> None:
    empty = make_repo(tmp_path / "empty", commit=False)
    with pytest.raises(RepoError, match="no commits yet.*git commit"):
        Ratchet.open(empty, "t", MUTABLE, resume=False)
    assert not (empty / ".autoresearch").exists()


def test_refuses_uncommitted_changes_in_a_mutable_file(repo: Path) -> None:
    (repo / TOY_TRAIN).write_text("LEARNING_RATE = 0.5  # not committed\n")
    before = snapshot(repo)
    with pytest.raises(RepoError, match=r"uncommitted changes: experiments/toy/train.py.*commit them"):
        Ratchet.open(repo, "t", MUTABLE, resume=False)
    assert snapshot(repo) == before
    assert not (repo / ".autoresearch").exists()
    assert git(repo, "branch", "--list", "autoresearch/*") == ""
    # staged but not committed is just as uncommitted
    git(repo, "add", TOY_TRAIN)
    with pytest.raises(RepoError, match="uncommitted changes"):
        Ratchet.open(repo, "t", MUTABLE, resume=False)
    # other files may be dirty: only the mutable ones matter
    git(repo, "checkout", "HEAD", "--", TOY_TRAIN)
    (repo / "README.md").write_text("edited\n")
    Ratchet.open(repo, "t", MUTABLE, resume=False)


def test_refuses_an_untracked_mutable_file(repo: Path) -> None:
    (repo / "experiments" / "toy" / "new.py").write_text("X = 1\n")
    with pytest.raises(RepoError, match="not committed: experiments/toy/new.py.*git add"):
        Ratchet.open(repo, "t", ["experiments/toy/new.py"], resume=False)


def test_refuses_an_existing_tag_without_resume(repo: Path) -> None:
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    edit(r, "LEARNING_RATE = 0.2\n")
    r.keep(r.commit("kept"))
    head = r.head()
    with pytest.raises(RepoError, match=r"already exists \(branch autoresearch/t\).*--resume"):
        Ratchet.open(repo, "t", MUTABLE, resume=False)
    assert r.head() == head == r.best()
    # only a worktree folder left (its branch deleted by hand): still refused
    other = make_repo(repo.parent / "other")
    (other / ".autoresearch" / "worktrees" / "x").mkdir(parents=True)
    with pytest.raises(RepoError, match="already exists .worktree folder"):
        Ratchet.open(other, "x", MUTABLE, resume=False)


def test_refuses_to_resume_a_tag_that_does_not_exist(repo: Path) -> None:
    before = snapshot(repo)
    with pytest.raises(RepoError, match="cannot resume tag 'nope'.*without --resume"):
        Ratchet.open(repo, "nope", MUTABLE, resume=True)
    assert snapshot(repo) == before and not (repo / ".autoresearch").exists()


def test_refuses_bad_tags(repo: Path) -> None:
    for tag in ("", "a/b", "..", "has space", "-x", "x.lock"):
        with pytest.raises(ConfigError, match="--tag"):
            Ratchet.open(repo, tag, MUTABLE, resume=False)


def test_person_can_keep_working_while_the_night_runs(repo: Path) -> None:
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    (repo / "README.md").write_text("more docs\n")
    person = commit_all(repo, "docs")  # the person's branch moves on; the tag's does not care
    edit(r, "LEARNING_RATE = 0.3\n")
    r.keep(r.commit("lr 0.3"))
    assert git(repo, "rev-parse", "main") == person
    assert git(repo, "merge-base", "main", "autoresearch/t") == git(repo, "rev-parse", "main~1")


def test_keep_leaves_the_worktree_at_the_kept_commit(repo: Path) -> None:
    """A run that rewrote its own mutable file must not leak that change into the next commit."""
    r = Ratchet.open(repo, "selfmod", MUTABLE, resume=False)
    edit(r, "LEARNING_RATE = 0.02\n")
    c1 = r.commit("raise lr")
    edit(r, "LEARNING_RATE = 0.02\nWRITTEN_BY_THE_RUN = 1\n")  # the run edits train.py as it runs
    r.keep(c1)
    assert (r.worktree / TOY_TRAIN).read_text() == "LEARNING_RATE = 0.02\n"
    assert git(r.worktree, "status", "--porcelain") == ""


# --- finding the repository -----------------------------------------------------------------


def test_find_resolves_a_tags_worktree_to_the_checkout_that_made_it(repo: Path) -> None:
    r = Ratchet.open(repo, "t", MUTABLE, resume=False)
    assert Repo.find(repo).root == repo.resolve()
    assert Repo.find(repo / "experiments" / "toy").root == repo.resolve()
    assert Repo.find(r.worktree).root == repo.resolve()
    assert Repo.find(r.worktree / "experiments" / "toy").root == repo.resolve()


def test_find_keeps_a_persons_own_linked_worktree(repo: Path, tmp_path: Path) -> None:
    """A checkout made with `git worktree add` elsewhere is a checkout of its own: its results are there."""
    own = tmp_path / "feature"
    git(repo, "worktree", "add", "-q", "-b", "feature", str(own))
    assert Repo.find(own / "experiments").root == own.resolve()
    r = Ratchet.open(own, "t", MUTABLE, resume=False)  # a night started in that checkout
    assert r.worktree == own.resolve() / ".autoresearch" / "worktrees" / "t"
    assert Repo.find(r.worktree / "experiments").root == own.resolve()


def test_find_outside_any_repository_says_so(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(RepoError, match="not inside a git repository.*git init"):
        Repo.find(tmp_path / "plain")


def test_commit_files_writes_a_branch_without_touching_the_checkout(repo: Path) -> None:
    before = snapshot(repo)
    r = Repo.find(repo)
    sha = r.commit_files("refs/heads/results", {"results/t.tsv": b"a\n", "results/t.json": b"{}\n"}, "one")
    assert sha is not None and r.resolve("results") == sha
    assert r.read_file("results", "results/t.tsv") == "a\n"
    assert (
        r.commit_files("refs/heads/results", {"results/t.tsv": b"a\n", "results/t.json": b"{}\n"}, "x")
        is None
    )
    again = r.commit_files("refs/heads/results", {"results/t.tsv": b"b\n"}, "two")
    assert again is not None and [c.subject for c in r.log(None, "results")] == ["one", "two"]
    assert r.log(None, "results")[1].parent == sha
    assert r.changed_paths(sha, again) == ["results/t.json", "results/t.tsv"]
    after = snapshot(repo)
    assert after.pop("refs/heads/results") == again and after == before  # only the new branch


def test_refs_history_and_errors_are_repo_errors(repo: Path) -> None:
    r = Repo.find(repo)
    assert r.resolve("nope") is None and r.read_file("HEAD", "missing.txt") is None
    with pytest.raises(RepoError, match="unknown ref 'nope'.*git fetch"):
        r.require("nope")
    with pytest.raises(RepoError, match="git log"):
        r.log(None, "nope")
    head = r.head()
    assert r.merge_base([head, "main"]) == head and r.is_ancestor(head, "main")
    assert "+# a project" in r.diff(None, head, ["README.md"])
