"""examples/own-project through `autoresearch run` exactly as its README tells a person: a copy,
git-initialised by the README's own commands, run with a harness that is not installed there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT

EXAMPLE = PROJECT / "examples" / "own-project"


def readme_commands() -> str:
    """The one ```bash block of the example's README."""
    blocks = re.findall(r"```bash\n(.*?)```", (EXAMPLE / "README.md").read_text(), re.S)
    assert len(blocks) == 1, blocks
    return blocks[0]


@pytest.mark.slow
def test_own_project_runs_as_its_readme_says(tmp_path: Path, clean_env: Path) -> None:
    project = tmp_path / "my-project"
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("__pycache__", "results"))
    # `autoresearch` is this tree's harness, whatever is installed on the machine; PATH holds
    # no python at all, as under cron: the runs must use the harness's own interpreter.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "autoresearch").write_text(f'#!/bin/sh\nexec {sys.executable} -m harness "$@"\n')
    (bin_dir / "autoresearch").chmod(0o755)
    git = shutil.which("git")
    assert git is not None
    (bin_dir / "git").symlink_to(git)
    env = {**os.environ, "PATH": str(bin_dir), "PYTHONPATH": str(PROJECT)}
    assert (
        shutil.which("python", path=env["PATH"]) is None and shutil.which("python3", path=env["PATH"]) is None
    )
    out = subprocess.run(
        ["/bin/bash", "-euo", "pipefail", "-c", readme_commands()],
        cwd=project, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "experiment.toml at the repository root" in out.stdout
    lines = (project / "results" / "first.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    rows = [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]
    assert header[:5] == ["commit", "accuracy", "memory_gb", "status", "description"]
    assert len(rows) == 4 and rows[0]["description"] == "baseline" and rows[0]["status"] == "keep"
    assert float(rows[0]["accuracy"]) > 0.5
    # The night's edits ran: none was refused by the integrity checks, none crashed.
    assert all(r["status"] in ("keep", "discard") for r in rows), rows
    assert "(maximize)" in out.stdout and "keep rate" in out.stdout  # the report ran too
    # results/ and the worktrees stay out of the person's `git status`.
    status = subprocess.run(["git", "status", "--porcelain"], cwd=project, capture_output=True, text=True)
    assert status.stdout == ""
