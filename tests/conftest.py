"""Shared fixtures: real git repositories in temporary folders, holding real experiments.

`project_repo`  a copy of this project's constants.py, prepare/, experiments/, program.md and
                pyproject.toml, git-initialised and committed (the real default experiment).
`toy_experiment` a small repo whose experiments/toy/train.py prints a summary block with
                val_bpb taken from its constant VAL_BPB (see tests/toy/const/train.py); fast.
Both chdir into the repo, use a private cache root (AUTORESEARCH_CACHE) and a git identity, and
drop API keys from the environment, so `--agent auto` resolves to the offline search agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.gitrepo import git  # re-exported: tests import it from here too

PROJECT = Path(__file__).resolve().parents[1]
TOY = Path(__file__).resolve().parent / "toy"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "results")

# The tests that interrupt a child with SIGINT need it to start with SIGINT's default action (then
# Python raises KeyboardInterrupt in it). A suite started in the background by a non-interactive
# shell inherits SIGINT ignored, and an ignored signal stays ignored across exec; a handler does not.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def init_repo(repo: Path) -> None:
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.name", "Test Person")
    git(repo, "config", "user.email", "person@example.com")
    git(repo, "config", "commit.gpgsign", "false")
    (repo / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial")


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No API keys, a private cache root, a git identity for commits. Returns the cache root."""
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "OPENAI_")) or name.endswith("_API_KEY"):
            monkeypatch.delenv(name, raising=False)
    # torch's inductor writes its cache folder into os.environ the first time anything compiles in
    # the test process; a run would then inherit that folder as if the person had chosen it.
    for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "cache"
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    # The user's config folder (autoresearch.toml) must not leak a person's defaults into tests.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    for var, value in (
        ("GIT_AUTHOR_NAME", "Test Harness"),
        ("GIT_AUTHOR_EMAIL", "harness@example.com"),
        ("GIT_COMMITTER_NAME", "Test Harness"),
        ("GIT_COMMITTER_EMAIL", "harness@example.com"),
    ):
        monkeypatch.setenv(var, value)
    return cache


@pytest.fixture
def project_repo(tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    repo = tmp_path / "project"
    repo.mkdir()
    for name in ("constants.py", "program.md", "pyproject.toml"):
        if (PROJECT / name).exists():
            shutil.copy2(PROJECT / name, repo / name)
    for name in ("prepare", "experiments"):
        if (PROJECT / name).is_dir():
            shutil.copytree(PROJECT / name, repo / name, ignore=_IGNORE)
    init_repo(repo)
    monkeypatch.chdir(repo)
    return repo


@pytest.fixture
def no_sandbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nights without the sandbox (AUTORESEARCH_SANDBOX=off), for tests that read a run's pid from
    its log and look for it on the host: a sandboxed run has its own PID namespace, so the pid it
    prints means nothing outside. These test the process-group handling a night without the
    sandbox relies on; tests/integrity/test_sandbox.py covers the sandboxed runs."""
    monkeypatch.setenv("AUTORESEARCH_SANDBOX", "off")


@dataclass
class Toy:
    """A repo with the toy experiment; `train` is its mutable file, `rel` the path replies name."""

    repo: Path
    train: Path
    rel: str = "experiments/toy/train.py"

    def reply(self, description: str, search: str, replace: str) -> str:
        return f"Description: {description}\n{self.rel}\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"

    def replay_file(self, replies: list[str], name: str = "replies.jsonl") -> Path:
        # Outside the repo, like a person's file, so it never dirties the checkout.
        path = self.repo.parent / name
        path.write_text("".join(json.dumps({"reply": r}) + "\n" for r in replies))
        return path

    def tsv(self, tag: str) -> list[dict[str, str]]:
        path = self.repo / "results" / f"{tag}.tsv"
        lines = path.read_text().splitlines()
        header = lines[0].split("\t")
        return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


@pytest.fixture
def toy_experiment(tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Toy]:
    repo = tmp_path / "toyrepo"
    (repo / "experiments").mkdir(parents=True)
    shutil.copytree(TOY / "const", repo / "experiments" / "toy", ignore=_IGNORE)
    shutil.copy2(PROJECT / "program.md", repo / "program.md") if (PROJECT / "program.md").exists() else None
    init_repo(repo)
    monkeypatch.chdir(repo)
    yield Toy(repo, repo / "experiments" / "toy" / "train.py")
