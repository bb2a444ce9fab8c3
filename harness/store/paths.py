"""Where a night's files live: the one place that knows every path of a tag.

    results/<tag>.tsv                 the ledger (one row per attempt; <tag>.tsv.lock its lock)
    results/<tag>/runs/<n>.log        the log of attempt n (n = 0 is the baseline; repeats <n>.r<k>.log),
                                      with <log>.pid while it runs; the evaluator's output is appended;
                                      <n>.warmup.log: the discarded warm-up run before the baseline
    results/<tag>/scratch/<log name>/ the last run's scratch folder (its HOME and TMPDIR; the only
                                      place a sandboxed run may write), with hand-off/: the model the
                                      run hands to the evaluator; removed when the next run starts
    results/<tag>/pending.json        the attempt in flight (for --resume)
    results/<tag>/lock                the tag lock (lock.pid: who holds it)
    results/<tag>/queue.jsonl         transplanted replies (queue.jsonl.served, queue.jsonl.lock)
    results/<tag>/attempts/<n>.json   attempt n's record: diagnostics, novelty key, note, log tail
    results/<tag>/notes.md            the research notes (the model's and the person's; in every prompt)
    results/<tag>/novelty.jsonl       the novelty registry: changes tried and in flight (novelty.jsonl.lock)
    results/<tag>/{progress.png,report.html,summary.json}   the report
    .autoresearch/worktrees/<tag>/    the tag's git worktree on branch autoresearch/<tag>

`root` is the person's checkout (the repository the night was started in), never the tag's
worktree: `harness.store.git.Repo.find` resolves a worktree to the checkout that made it.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = "results"
WORKTREES = Path(".autoresearch") / "worktrees"


def compile_cache(cache_root: Path) -> Path:
    """`<cache root>/compile-cache/`: the torch.compile (inductor) and Triton caches every run
    shares, across tags, worktrees and --gpus workers, so only a night's first compilation is
    cold. Both libraries write their entries atomically (a temporary file, then a rename), so
    concurrent workers neither corrupt nor half-read an entry."""
    return cache_root / "compile-cache"


def results_dir(root: Path) -> Path:
    """results/ of the checkout at `root`."""
    return root / RESULTS


def checkout_of(worktree: Path) -> Path | None:
    """The checkout that made `worktree`, when it is a tag's worktree (<checkout>/.autoresearch/worktrees/<tag>)."""
    if worktree.parent.name == WORKTREES.name and worktree.parent.parent.name == WORKTREES.parent.name:
        return worktree.parents[2]
    return None


class TagPaths:
    """Every path of one tag in the checkout at `root`."""

    def __init__(self, root: Path, tag: str) -> None:
        self.root, self.tag = root, tag
        self.results = results_dir(root)
        self.tsv = self.results / f"{tag}.tsv"
        self.dir = self.results / tag
        self.runs = self.dir / "runs"
        self.pending = self.dir / "pending.json"
        self.lock = self.dir / "lock"
        self.lock_owner = self.dir / "lock.pid"
        self.queue = self.dir / "queue.jsonl"
        self.attempts = self.dir / "attempts"
        self.notes = self.dir / "notes.md"
        self.novelty = self.dir / "novelty.jsonl"
        self.scratch = self.dir / "scratch"
        self.worktree = root / WORKTREES / tag

    def log(self, n: int, k: int = 0) -> Path:
        """The log of run k of attempt n (k = 0 the first; repeats and re-measurements follow)."""
        return self.runs / (f"{n}.log" if k == 0 else f"{n}.r{k}.log")

    def record(self, n: int) -> Path:
        """The record of attempt n (`harness.store.attempts`)."""
        return self.attempts / f"{n}.json"

    def warmup_log(self, n: int) -> Path:
        """The log of the discarded warm-up run before the baseline (attempt n)."""
        return self.runs / f"{n}.warmup.log"

    def logs_of(self, n: int) -> list[Path]:
        """Every log of attempt n, in name order."""
        return sorted(self.runs.glob(f"{n}.*log"))

    def recorded(self) -> bool:
        """Whether anything of this tag was recorded: its ledger, or a file of its folder besides
        the lock (a harness killed before it made the branch leaves only the lock behind)."""
        if self.tsv.exists():
            return True
        lock_files = (self.lock, self.lock_owner)
        return self.dir.is_dir() and any(p not in lock_files for p in self.dir.iterdir())
