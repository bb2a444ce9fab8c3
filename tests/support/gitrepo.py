"""Real temporary git repositories for tests (the aider `GitTemporaryDirectory` idea).

    from support.gitrepo import make_repo, git, snapshot   # tests/ is on sys.path under pytest
    repo = make_repo(tmp_path / "proj", {"experiments/toy/train.py": "X = 1\\n"})
    before = snapshot(repo)
    ...                                   # run the thing under test
    assert snapshot(repo) == before       # the person's checkout is byte-for-byte unchanged

Everything goes through the real `git` binary; commits made here carry a fixed test identity
passed on the command line, so they work without any git config on the machine.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path

TEST_NAME = "Test Person"
TEST_EMAIL = "person@example.com"

DEFAULT_FILES: dict[str, str] = {
    "README.md": "# a project\n",
    "program.md": "Make val_bpb lower.\n",
    "prepare/__init__.py": "EVAL_TOKENS = 1000\n",
    "experiments/toy/experiment.toml": 'name = "toy"\nmutable = ["train.py"]\nrun = "python train.py"\n',
    "experiments/toy/train.py": "LEARNING_RATE = 0.01\nprint('---')\nprint('val_bpb: 1.0')\n",
}
TOY_TRAIN = "experiments/toy/train.py"


def git(root: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run git in ``root`` and return its stdout without the trailing newline; raise on failure."""
    out = subprocess.run(
        ["git", "-c", f"user.name={TEST_NAME}", "-c", f"user.email={TEST_EMAIL}", *args],
        cwd=root,
        env={**os.environ, **(env or {})},
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.rstrip("\n")


def write(root: Path, files: Mapping[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def make_repo(
    root: Path,
    files: Mapping[str, str] | None = None,
    *,
    commit: bool = True,
    branch: str = "main",
) -> Path:
    """A fresh repository at ``root`` holding ``files`` (default: a tiny project), committed."""
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q", "-b", branch)
    write(root, DEFAULT_FILES if files is None else files)
    if commit:
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "initial")
    return root


def commit_all(root: Path, message: str) -> str:
    """Commit everything in ``root`` (a test's own doing, never the harness's); return the sha."""
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


def snapshot(root: Path) -> dict[str, str]:
    """The state of a person's checkout: every file's hash (outside .git and .autoresearch), the
    bytes of .git/index and .git/HEAD, and the sha of every branch under refs/heads/ except the
    harness's own ``autoresearch/*`` branches.

    Read without running a git command that could refresh the index.
    """
    state: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith((".git/", ".autoresearch/")) or rel in (".git", ".autoresearch"):
            continue
        if path.is_file():
            state[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    gitdir = root / ".git"
    for name in ("index", "HEAD"):
        p = gitdir / name
        state[f".git/{name}"] = hashlib.sha256(p.read_bytes()).hexdigest() if p.exists() else ""
    for ref in sorted((gitdir / "refs" / "heads").rglob("*")):
        if ref.is_file() and not ref.relative_to(gitdir).as_posix().startswith("refs/heads/autoresearch/"):
            state[ref.relative_to(gitdir).as_posix()] = ref.read_text().strip()
    return state


def log(root: Path, ref: str) -> list[str]:
    """Subjects of ``ref``'s commits, newest first."""
    out = git(root, "log", "--format=%s", ref)
    return out.splitlines()
