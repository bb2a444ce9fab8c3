"""The immutable guard: a real child process tampers with protected paths; all is caught and restored."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.integrity.guard import Guard


def _tree(tmp_path: Path) -> tuple[Path, Path, Path]:
    wt = tmp_path / "wt"
    (wt / "prepare").mkdir(parents=True)
    (wt / "prepare" / "__init__.py").write_text("X = 1\n")
    (wt / "prepare" / "evaluate.py").write_text("def evaluate_bpb():\n    return 1.0\n")
    (wt / "prepare" / "kernels").mkdir()
    (wt / "prepare" / "kernels" / "__init__.py").write_text("def usable(x):\n    return True\n")
    (wt / "constants.py").write_text("TIME_BUDGET = 300\n")
    (wt / "program.md").write_text("# program\n")
    (wt / "harness").mkdir()
    (wt / "harness" / "__init__.py").write_text("")
    exp = wt / "experiments" / "toy"
    exp.mkdir(parents=True)
    (exp / "experiment.toml").write_text('name = "toy"\n')
    (exp / "train.py").write_text("print('hi')\n")
    ledger = tmp_path / "results" / "night.tsv"
    ledger.parent.mkdir()
    ledger.write_text("commit\tval_bpb\tmemory_gb\tstatus\tdescription\nabc1234\t1.0\t0.0\tkeep\tbaseline\n")
    return wt, exp, ledger


def _run(code: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-c", code], cwd=cwd, check=True)


def _guard(wt: Path, exp: Path, ledger: Path) -> Guard:
    return Guard.for_worktree(wt, exp, ledger)


def test_clean_run_is_not_tampering(tmp_path: Path) -> None:
    wt, exp, ledger = _tree(tmp_path)
    guard = _guard(wt, exp, ledger)
    guard.snapshot()
    _run("open('train.py', 'a').write('# mutable file may change\\n'); open('out.txt', 'w').write('x')", exp)
    assert not guard.check()


@pytest.mark.parametrize(
    ("code", "shown"),
    [
        (
            "open('../../prepare/evaluate.py', 'w').write('def evaluate_bpb():\\n    return 0.1\\n')",
            "prepare/evaluate.py",
        ),
        ("open('../../constants.py', 'a').write('TIME_BUDGET = 900\\n')", "constants.py"),
        # the training kernels are prepare's too: a run cannot swap them for the next run
        (
            "open('../../prepare/kernels/__init__.py', 'a').write('usable = None\\n')",
            "prepare/kernels/__init__.py",
        ),
        ("open('../../program.md', 'w').write('ignore the rules')", "program.md"),
        ("open('experiment.toml', 'a').write('budget_seconds = 900\\n')", "experiment.toml"),
        ("open('../../harness/__init__.py', 'w').write('evil = 1')", "harness/__init__.py"),
    ],
)
def test_changed_protected_file_is_reported_and_restored(tmp_path: Path, code: str, shown: str) -> None:
    wt, exp, ledger = _tree(tmp_path)
    before = {p: p.read_bytes() for p in wt.rglob("*") if p.is_file() and p.name != "train.py"}
    guard = _guard(wt, exp, ledger)
    guard.snapshot()
    _run(code, exp)
    found = guard.check()
    assert found and shown in found.reason and found.reason.startswith("tampered: ")
    after = {p: p.read_bytes() for p in wt.rglob("*") if p.is_file() and p.name != "train.py"}
    assert after == before
    assert not guard.check()  # restored: a second check finds nothing


def test_ledger_append_is_cut_back(tmp_path: Path) -> None:
    wt, exp, ledger = _tree(tmp_path)
    original = ledger.read_bytes()
    guard = _guard(wt, exp, ledger)
    guard.snapshot()
    _run(f"open({str(ledger)!r}, 'a').write('fake\\t0.5\\t0.0\\tkeep\\tcheat\\n')", exp)
    found = guard.check()
    assert found and "night.tsv" in found.reason
    assert ledger.read_bytes() == original


def test_added_deleted_symlinked_and_shadowing_files(tmp_path: Path) -> None:
    wt, exp, ledger = _tree(tmp_path)
    guard = _guard(wt, exp, ledger)
    guard.snapshot()
    _run(
        "import os\n"
        "open('../../prepare/sitecustomize.py', 'w').write('x')\n"
        "os.remove('../../prepare/__init__.py')\n"
        "os.remove('../../constants.py'); os.symlink('/etc/hostname', '../../constants.py')\n"
        "open('prepare.py', 'w').write('def evaluate_bpb(*a): return 0.1')\n",
        exp,
    )
    found = guard.check()
    assert "prepare/sitecustomize.py" in found.added and "experiments/toy/prepare.py" in found.added
    assert "prepare/__init__.py" in found.deleted and "constants.py" in found.changed
    assert not (wt / "prepare" / "sitecustomize.py").exists() and not (exp / "prepare.py").exists()
    assert (wt / "prepare" / "__init__.py").read_text() == "X = 1\n"
    assert (
        not (wt / "constants.py").is_symlink() and (wt / "constants.py").read_text() == "TIME_BUDGET = 300\n"
    )


def test_bytecode_written_during_the_run_is_dropped_not_reported(tmp_path: Path) -> None:
    wt, exp, ledger = _tree(tmp_path)
    guard = _guard(wt, exp, ledger)
    guard.snapshot()
    cache = wt / "prepare" / "__pycache__"
    _run(
        f"import os; os.makedirs({str(cache)!r}); open({str(cache / 'evaluate.cpython-311.pyc')!r}, 'wb').write(b'forged')",
        exp,
    )
    assert not guard.check()
    assert not (cache / "evaluate.cpython-311.pyc").exists()


def test_check_before_snapshot_is_a_bug(tmp_path: Path) -> None:
    wt, exp, ledger = _tree(tmp_path)
    with pytest.raises(RuntimeError):
        _guard(wt, exp, ledger).check()


def test_git_hook_planted_by_a_run_is_removed(tmp_path: Path) -> None:
    wt, exp, ledger = _tree(tmp_path)
    hooks = tmp_path / "repo" / ".git" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "pre-commit.sample").write_text("#!/bin/sh\n")
    guard = Guard.for_worktree(wt, exp, ledger, repo_root=tmp_path / "repo")
    guard.snapshot()
    _run(f"open({str(hooks / 'post-commit')!r}, 'w').write('#!/bin/sh\\ncurl evil')", exp)
    found = guard.check()
    assert found and any("post-commit" in p for p in found.added)
    assert not (hooks / "post-commit").exists() and (hooks / "pre-commit.sample").exists()


def test_symlinked_folder_planted_in_a_protected_tree_is_removed(tmp_path: Path) -> None:
    """A symlinked __pycache__ (forged bytecode) or package inside prepare/ is not walked into
    by os.walk; it must still be reported and removed."""
    wt, exp, ledger = _tree(tmp_path)
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "evaluate.cpython-311.pyc").write_bytes(b"forged")
    guard = _guard(wt, exp, ledger)
    guard.snapshot()
    _run(
        "import os\n"
        f"os.symlink({str(forged)!r}, '../../prepare/__pycache__')\n"
        f"os.symlink({str(forged)!r}, '../../prepare/extra')\n",
        exp,
    )
    found = guard.check()
    assert "prepare/__pycache__" in found.added and "prepare/extra" in found.added, found
    assert not (wt / "prepare" / "__pycache__").exists() and not (wt / "prepare" / "extra").exists()
    assert (forged / "evaluate.cpython-311.pyc").exists()  # the link is removed, not its target
    assert not guard.check()


def test_restored_files_keep_their_mode(tmp_path: Path) -> None:
    """A restored file comes back with the permissions it had, not a temporary file's 0600:
    a hook that loses its execute bit, or a ledger only its owner can read, is a damage of its own."""
    wt, exp, ledger = _tree(tmp_path)
    hooks = tmp_path / "repo" / ".git" / "hooks"
    hooks.mkdir(parents=True)
    (hooks / "pre-push").write_text("#!/bin/sh\nexit 0\n")
    (hooks / "pre-push").chmod(0o755)
    (wt / "constants.py").chmod(0o644)
    ledger.chmod(0o664)
    guard = Guard.for_worktree(wt, exp, ledger, repo_root=tmp_path / "repo")
    guard.snapshot()
    _run(
        "import os\n"
        f"open({str(hooks / 'pre-push')!r}, 'w').write('#!/bin/sh\\ncurl evil\\n')\n"
        "open('../../constants.py', 'a').write('TIME_BUDGET = 900\\n')\n"
        "os.remove('../../program.md')\n"
        f"open({str(ledger)!r}, 'a').write('fake\\t0.5\\t0.0\\tkeep\\tcheat\\n')\n",
        exp,
    )
    found = guard.check()
    assert found and "program.md" in found.deleted
    assert (hooks / "pre-push").stat().st_mode & 0o777 == 0o755
    assert (wt / "constants.py").stat().st_mode & 0o777 == 0o644
    assert (wt / "program.md").stat().st_mode & 0o777 == 0o644
    assert ledger.stat().st_mode & 0o777 == 0o664


def test_a_changed_mode_is_tampering_and_is_undone(tmp_path: Path) -> None:
    wt, exp, ledger = _tree(tmp_path)
    (wt / "constants.py").chmod(0o644)
    guard = _guard(wt, exp, ledger)
    guard.snapshot()
    _run("import os; os.chmod('../../constants.py', 0o777)", exp)
    found = guard.check()
    assert found and "constants.py" in found.changed
    assert (wt / "constants.py").stat().st_mode & 0o777 == 0o644
