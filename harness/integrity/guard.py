"""The immutable guard: what a run must not change is hashed before it and checked after it.

A run executes the agent's code as the same user as the harness, so nothing stops it from
writing to prepare/ (the evaluator), constants.py (the budget), program.md, the experiment's
experiment.toml, the harness package itself or the results TSV. The guard makes such a write
useless and visible:

* `Guard.snapshot()` (once, when the night opens its worktree) records the bytes and mode of
  every protected file: the protected trees and files of the worktree, the installed harness
  package, the git hooks (git runs hooks inside the harness). These never change during a
  night, so the snapshot is never taken again: a file patched *between* two runs (by a process
  an earlier run left behind) is found by the check before the next run, not adopted as the
  new normal.
* `Guard.rebase()` (right before each run) records the files the harness itself writes
  between runs: the results TSV and the journal (pending.json).
* `Guard.check()` (right before each run, and after it once nothing of the run is alive)
  compares, restores every changed, added or deleted file from the snapshot with its mode (the
  harness's own copy: for the worktree that is the committed content, the TSV is cut back to
  what the harness wrote; a changed mode alone is a change too), and returns a `Tampering`
  report; after a run the loop logs the attempt as a crash with reason `tampered: <paths>`.

Also caught: files a run drops next to the train file that would shadow a protected module
on the next run (`prepare.py`, `constants.py`, `sitecustomize.py`, `*.pth`, ...), since the
script's own folder comes first on sys.path; they are deleted.

Bytecode caches (`__pycache__/*.pyc`) under protected trees are not tampering by themselves
(an honest run's `import prepare` writes them), but any that appeared or changed during the
run are deleted so that a forged .pyc cannot stand in for the source in a later process.

The installed harness package is protected too, except when it is an editable install
inside a git working copy (a developer's checkout): restoring files there could revert a
person's concurrent edits, so the guard protects the worktree's copy (the one a run's
`import harness` resolves to) and leaves the checkout alone.

Not contained: a run can still do anything the user can outside these paths (that is what
the static checks of harness.integrity.checks refuse up front), and it can change a protected file and
change it back within the run (which is why the metric is computed after the run, by the
evaluator, from a copy of prepare/ taken after this check: harness.integrity.evaluation).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.store.atomic import write_atomic

#: worktree-relative paths protected by default (files, or folders protected recursively)
DEFAULT_PROTECTED = ("prepare", "constants.py", "program.md", "harness", "pyproject.toml")

#: names that, dropped into the experiment folder, would shadow a protected module
SHADOW_NAMES = (
    "prepare.py",
    "prepare",
    "constants.py",
    "harness",
    "harness.py",
    "sitecustomize.py",
    "usercustomize.py",
    "torch.py",
    "numpy.py",
)

_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class Tampering:
    """What a run changed among the protected paths (already restored when reported)."""

    changed: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changed or self.added or self.deleted)

    @property
    def reason(self) -> str:
        """The TSV reason: `tampered: <what>` (shortened to a handful of paths)."""
        parts = [f"changed {p}" for p in self.changed] + [f"added {p}" for p in self.added]
        parts += [f"deleted {p}" for p in self.deleted]
        shown = ", ".join(parts[:4]) + (f" (+{len(parts) - 4} more)" if len(parts) > 4 else "")
        return f"tampered: {shown}"


@dataclass(frozen=True)
class _File:
    data: bytes
    mode: int  # the permission bits


@dataclass
class _Snapshot:
    files: dict[Path, _File] = field(default_factory=dict)
    pyc: dict[Path, tuple[int, int]] = field(default_factory=dict)  # path -> (mtime_ns, size)
    shadows: set[Path] = field(default_factory=set)
    own: dict[Path, _File | None] = field(default_factory=dict)  # the harness's files; None: absent


def _walk(root: Path) -> Iterable[Path]:
    """Every file below `root` (or `root` itself), symlinks included, caches excluded."""
    if root.is_symlink() or root.is_file():
        yield root
        return
    if not root.is_dir():
        return
    for dirpath, dirnames, filenames in os.walk(root):
        # os.walk lists a symlinked folder among the folders and never enters it: yield it as an
        # entry (reported and removed like any planted link), even where it poses as __pycache__
        links = sorted(d for d in dirnames if (Path(dirpath) / d).is_symlink())
        dirnames[:] = sorted(
            d for d in dirnames if d not in links and d not in _SKIP_DIRS and not d.endswith(".egg-info")
        )
        for name in links:
            yield Path(dirpath) / name
        for name in sorted(filenames):
            yield Path(dirpath) / name


def _pycaches(root: Path) -> Iterable[Path]:
    if not root.is_dir():
        return
    for dirpath, _dirnames, filenames in os.walk(root):
        if Path(dirpath).name == "__pycache__":
            for name in filenames:
                yield Path(dirpath) / name


def _read(path: Path) -> _File | None:
    """File content and mode, or None for a symlink / unreadable file (both count as changed)."""
    if path.is_symlink():
        return None
    try:
        return _File(path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    except OSError:
        return None


def _restore(path: Path, file: _File) -> None:
    if path.is_symlink() or path.is_dir():
        _remove(path)
    write_atomic(path, file.data, mode=file.mode)


def _remove(path: Path) -> None:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        pass


class Guard:
    """Snapshot the protected paths before a run; detect and undo changes after it."""

    def __init__(
        self,
        roots: Sequence[Path],
        *,
        experiment_dir: Path | None = None,
        ledger: Path | None = None,
        journal: Path | None = None,
    ) -> None:
        """`roots`: protected files or folders (absolute). `experiment_dir`: where shadowing
        modules must not appear. `ledger`, `journal`: the results TSV and pending.json, which
        only the harness writes (between runs)."""
        self.roots = [Path(r) for r in roots]
        self.experiment_dir = experiment_dir
        self.ledger = ledger
        self.own = [p for p in (ledger, journal) if p is not None]
        self._snap: _Snapshot | None = None

    @classmethod
    def for_worktree(
        cls,
        worktree: Path,
        experiment_dir: Path,
        ledger: Path | None,
        *,
        repo_root: Path | None = None,
        journal: Path | None = None,
    ) -> Guard:
        """The standard protection: DEFAULT_PROTECTED in the worktree, experiment.toml and
        program.md of the experiment, the installed harness package, the repo's git hooks."""
        import harness

        roots = [worktree / p for p in DEFAULT_PROTECTED]
        roots += [experiment_dir / "experiment.toml", experiment_dir / "program.md"]
        installed = Path(harness.__file__).resolve().parent
        # An editable install inside a git working copy is a developer's checkout: restoring
        # it would undo their concurrent edits, so there only the worktree's copy (the one a
        # run imports, PYTHONPATH puts the worktree first) is protected. See the docstring.
        if not any((p / ".git").exists() for p in installed.parents):
            roots.append(installed)
        if repo_root is not None:
            # hooks run inside the harness's own git calls; .git/config is left alone because a
            # person's `autoresearch publish` (or another worker) may legitimately change it mid-run
            roots.append(repo_root / ".git" / "hooks")
        unique: dict[Path, None] = {}
        for r in roots:
            unique.setdefault(r.resolve() if r.exists() else r, None)
        return cls(list(unique), experiment_dir=experiment_dir, ledger=ledger, journal=journal)

    # -- before the run -----------------------------------------------------------------

    def snapshot(self) -> None:
        """Record every protected file's bytes and mode (and the harness's own files) as they are now."""
        snap = _Snapshot()
        for root in self.roots:
            for path in _walk(root):
                file = _read(path)
                if file is not None:
                    snap.files[path] = file
            for pyc in _pycaches(root):
                try:
                    st = pyc.stat()
                except OSError:
                    continue
                snap.pyc[pyc] = (st.st_mtime_ns, st.st_size)
        if self.experiment_dir is not None:
            snap.shadows = set(self._shadows())
        self._snap = snap
        self.rebase()

    def rebase(self) -> None:
        """Record the harness's own files (TSV, journal) as they are now: it wrote them since."""
        if self._snap is None:
            raise RuntimeError("Guard.rebase() before Guard.snapshot()")
        self._snap.own = {p: self._read_own(p) for p in self.own}

    def _read_own(self, path: Path) -> _File | None:
        if path == self.ledger:  # the ledger's absence and emptiness are the same state
            return _read(path) or _File(b"", 0o644)
        return _read(path) if path.exists() or path.is_symlink() else None

    def _shadows(self) -> list[Path]:
        assert self.experiment_dir is not None
        found = [self.experiment_dir / n for n in SHADOW_NAMES if (self.experiment_dir / n).exists()]
        if self.experiment_dir.is_dir():
            found += sorted(self.experiment_dir.glob("*.pth"))
        return found

    # -- after the run ------------------------------------------------------------------

    def check(self) -> Tampering:
        """Compare with the snapshot, restore what differs, and report it."""
        snap = self._snap
        if snap is None:
            raise RuntimeError("Guard.check() before Guard.snapshot()")
        changed: list[Path] = []
        added: list[Path] = []
        deleted: list[Path] = []
        seen: set[Path] = set()
        for root in self.roots:
            for path in _walk(root):
                seen.add(path)
                before = snap.files.get(path)
                if before is None:
                    added.append(path)
                    _remove(path)
                    continue
                if _read(path) != before:
                    changed.append(path)
                    _restore(path, before)
            # a .pyc written during the run may be honest or forged: drop it either way
            for pyc in list(_pycaches(root)):
                try:
                    st = pyc.stat()
                except OSError:
                    continue
                if snap.pyc.get(pyc) != (st.st_mtime_ns, st.st_size):
                    _remove(pyc)
        for path, file in snap.files.items():
            if path not in seen:
                deleted.append(path)
                _restore(path, file)
        if self.experiment_dir is not None:
            for shadow in self._shadows():
                if shadow not in snap.shadows:
                    added.append(shadow)
                    _remove(shadow)
        for path, before in snap.own.items():
            if self._read_own(path) != before:
                changed.append(path)
                if before is None:
                    _remove(path)
                else:
                    _restore(path, before)
        return Tampering(
            changed=tuple(self._show(p) for p in changed),
            added=tuple(self._show(p) for p in added),
            deleted=tuple(self._show(p) for p in deleted),
        )

    def _show(self, path: Path) -> str:
        """A short name for the report: relative to the nearest protected root's parent."""
        for root in self.roots:
            try:
                return str(path.relative_to(root.parent))
            except ValueError:
                continue
        if self.experiment_dir is not None:
            try:
                return str(path.relative_to(self.experiment_dir))
            except ValueError:
                pass
        return path.name
