"""Real git repositories for the review-command tests (report, publish, compare, transplant).

Builds a bare origin holding a toy experiment, clones of it, and "nights": a branch
autoresearch/<tag> whose commits are kept edits of the mutable file, plus results/<tag>.tsv
naming those commits, exactly the shape the loop leaves behind. Plain git commands, in tmp dirs.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from support.gitrepo import git

TRAIN = """\
# toy train file: the agent edits the constants
LEARNING_RATE = 0.01
BATCH_SIZE = 32
DEPTH = 4
WARMUP = 0


def main():
    loss = LEARNING_RATE * BATCH_SIZE / DEPTH
    print("---")
    print(f"val_bpb: {loss:.6f}")


main()
"""

EXPERIMENT_TOML = """\
name = "toy"
mutable = ["train.py"]
run = "python train.py"
metric = "val_bpb"
direction = "minimize"
"""

HEADER = "commit\tval_bpb\tmemory_gb\tstatus\tdescription\tdevice\thardware\n"


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Test")
    git(path, "config", "user.email", "test@example.com")
    return path


def seed(path: Path) -> Path:
    """A repository with the toy experiment committed on main (results/ ignored, like ours)."""
    init_repo(path)
    (path / "experiments" / "toy").mkdir(parents=True)
    (path / "experiments" / "toy" / "train.py").write_text(TRAIN)
    (path / "experiments" / "toy" / "experiment.toml").write_text(EXPERIMENT_TOML)
    (path / "README.md").write_text("toy\n")
    (path / ".gitignore").write_text("/results/\n/.autoresearch/\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "seed")
    return path


def origin_with_clones(tmp: Path, names: Sequence[str]) -> tuple[Path, list[Path]]:
    """A bare origin seeded with the toy experiment, and one clone per name."""
    bare = tmp / "origin.git"
    git(tmp, "init", "-q", "--bare", "-b", "main", str(bare))
    work = seed(tmp / "seed")
    git(work, "remote", "add", "origin", str(bare))
    git(work, "push", "-q", "origin", "main")
    clones = []
    for name in names:
        dest = tmp / name
        git(tmp, "clone", "-q", str(bare), str(dest))
        git(dest, "config", "user.name", f"Test {name}")
        git(dest, "config", "user.email", f"{name}@example.com")
        clones.append(dest)
    return bare, clones


@dataclass(frozen=True)
class Step:
    description: str
    old: str  # text replaced in train.py ("" for a discard/crash that is not committed)
    new: str
    status: str  # keep, discard, crash
    metric: float


def night(
    repo: Path, tag: str, steps: Sequence[Step], *, hardware: str = "", baseline: float = 1.0
) -> list[str]:
    """Create autoresearch/<tag> from main with one commit per kept step, and results/<tag>.tsv
    (whose rows ran on `hardware`, a CUDA device).

    Returns the short shas of the kept commits. The checkout ends back on main.
    """
    branch = f"autoresearch/{tag}"
    git(repo, "checkout", "-q", "-b", branch, "main")
    train = repo / "experiments" / "toy" / "train.py"
    rows = [
        f"{git(repo, 'rev-parse', '--short=7', 'HEAD')}\t{baseline:.6f}\t1.0\tkeep\tbaseline\tcuda\t{hardware}\n"
    ]
    kept = []
    for i, step in enumerate(steps):
        if step.status == "keep":
            text = train.read_text()
            assert step.old in text, step.old
            train.write_text(text.replace(step.old, step.new, 1))
            git(repo, "add", "experiments/toy/train.py")
            git(repo, "commit", "-qm", step.description)
            sha = git(repo, "rev-parse", "--short=7", "HEAD")
            kept.append(sha)
        else:
            sha = f"{i:07x}"
        metric = 0.0 if step.status == "crash" else step.metric
        rows.append(f"{sha}\t{metric:.6f}\t1.0\t{step.status}\t{step.description}\tcuda\t{hardware}\n")
    git(repo, "checkout", "-q", "main")
    (repo / "results").mkdir(exist_ok=True)
    (repo / "results" / f"{tag}.tsv").write_text(HEADER + "".join(rows))
    return kept


def toy_origin(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A bare origin holding the toy experiment of tests/toy/const (the loop's own test toy)."""
    toy = Path(__file__).resolve().parents[1] / "toy" / "const"
    project = Path(__file__).resolve().parents[2]
    work = tmp_path / "seed"
    (work / "experiments" / "toy").mkdir(parents=True)
    for name in ("train.py", "experiment.toml"):
        shutil.copy2(toy / name, work / "experiments" / "toy" / name)
    shutil.copy2(project / "program.md", work / "program.md")
    (work / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(tmp_path / "origin.git"))
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "toy project")
    git(work, "remote", "add", "origin", str(tmp_path / "origin.git"))
    git(work, "push", "-q", "origin", "main")
    clones = [tmp_path / name for name in ("m1", "m2")]
    for clone in clones:
        git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(clone))
    return tmp_path / "origin.git", clones


def reply(description: str, search: str, replace: str) -> str:
    return f"Description: {description}\nexperiments/toy/train.py\n<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"
