"""Property-based fuzzing of every state file a night reads back, through the real CLI.

One night (baseline, a keep, a discard) is made once; each example damages one of its state
files (results TSV, its seal, pending.json, the tag lock and its pid file, the transplant queue
and its served count, program.md, experiment.toml, a replay file) with generated content, runs
`autoresearch run --resume`, and checks what the issue asks for any input:

* it proceeds (exit 0) or stops with exit 2 and one line on stderr, never a traceback;
* exit 2 changes nothing: the results (but the lock's own files) and every ref are as before;
* exit 0 loses and duplicates no row: the rows before are the first rows after, numbered
  without gaps, and the branch is at the best kept commit (`refs/autoresearch/<tag>/best`).

Between examples the night is put back (results/ restored, refs and worktree reset). Bounded
for CI by AUTORESEARCH_FUZZ_EXAMPLES (default 12 per file), derandomized so CI is reproducible.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.commands.main import main
from harness.store.schema import read_notes
from tests.conftest import PROJECT, TOY, git, init_repo

EXAMPLES = max(3, int(os.environ.get("AUTORESEARCH_FUZZ_EXAMPLES", "200")) // 16)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TAG = "t"


@dataclass
class Night:
    repo: Path
    saved: Path  # a copy of results/ as the night left it
    refs: dict[str, str]
    replies: Path  # an empty replay file: --resume ends right after recovering

    @property
    def results(self) -> Path:
        return self.repo / "results"

    @property
    def tag_dir(self) -> Path:
        return self.repo / "results" / TAG

    def restore(self, *damaged: Path) -> None:
        for path in damaged:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        shutil.rmtree(self.results, ignore_errors=True)
        shutil.copytree(self.saved, self.results)
        for ref, sha in self.refs.items():
            git(self.repo, "update-ref", ref, sha)
        worktree = self.repo / ".autoresearch" / "worktrees" / TAG
        gitdir = self.repo / ".git" / "worktrees" / TAG
        for lock in gitdir.glob("*.lock"):
            lock.unlink()
        git(worktree, "reset", "-q", "--hard", self.refs[f"refs/heads/autoresearch/{TAG}"])
        git(self.repo, "checkout", "-q", "--", ".")

    def resume(self, *extra: str) -> tuple[int, str]:
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(
                [
                    "run",
                    "--device",
                    "cpu",
                    "--tag",
                    TAG,
                    "--agent",
                    f"replay:{self.replies}",
                    "--resume",
                    *extra,
                ]
            )
        return code, err.getvalue()


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Night]:
    base = tmp_path_factory.mktemp("fuzzstate")
    repo = base / "repo"
    (repo / "experiments").mkdir(parents=True)
    shutil.copytree(TOY / "const", repo / "experiments" / "toy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(PROJECT / "program.md", repo / "program.md")
    env = {
        "GIT_AUTHOR_NAME": "T",
        "GIT_AUTHOR_EMAIL": "t@e",
        "GIT_COMMITTER_NAME": "T",
        "GIT_COMMITTER_EMAIL": "t@e",
    }
    old_cwd, old_env = Path.cwd(), dict(os.environ)
    os.environ.update(env)
    os.environ["AUTORESEARCH_CACHE"] = str(base / "cache")
    for name in list(os.environ):
        if name.startswith(("ANTHROPIC_", "OPENAI_")):
            del os.environ[name]
    init_repo(repo)
    os.chdir(repo)
    try:
        rel = "experiments/toy/train.py"
        replies = [
            f"Description: lower\n{rel}\n<<<<<<< SEARCH\nVAL_BPB = 1.000000\n=======\nVAL_BPB = 0.900000\n>>>>>>> REPLACE\n",
            f"Description: raise\n{rel}\n<<<<<<< SEARCH\nVAL_BPB = 0.900000\n=======\nVAL_BPB = 0.950000\n>>>>>>> REPLACE\n",
        ]
        first = base / "first.jsonl"
        first.write_text("".join(json.dumps({"reply": r}) + "\n" for r in replies))
        assert (
            main(
                ["run", "--device", "cpu", "--tag", TAG, "--agent", f"replay:{first}", "--baseline-runs", "1"]
            )
            == 0
        )
        saved = base / "saved-results"
        shutil.copytree(repo / "results", saved)
        refs = dict(
            reversed(line.split(" ", 1))  # type: ignore[misc]
            for line in git(repo, "for-each-ref", "--format=%(objectname) %(refname)").splitlines()
        )
        empty = base / "empty.jsonl"
        empty.write_text("")
        yield Night(repo, saved, refs, empty)
    finally:
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def snapshot(night: Night) -> dict[str, str]:
    files = {
        str(p.relative_to(night.repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(night.results.rglob("*"))
        if p.is_file() and p.name != "lock" and not p.name.endswith((".lock", "lock.pid"))
    }
    files["refs"] = git(night.repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return files


def rows_of(night: Night) -> list[tuple[str, ...]]:
    lines = (night.results / f"{TAG}.tsv").read_text().splitlines()
    return [tuple(line.split("\t")[:6]) for line in lines[1:]]


def check(
    night: Night, code: int, err: str, before: dict[str, str], rows_before: list[tuple[str, ...]]
) -> None:
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("autoresearch: warning:")]
        assert len(lines) == 1, err
        assert snapshot(night) == before, err
        return
    rows = rows_of(night)
    assert rows[: len(rows_before)] == rows_before, "a row was lost or changed"
    assert [r[5] for r in rows] == [str(i) for i in range(len(rows))], "rows duplicated or missing"
    keeps = [r for r in rows if r[3] == "keep"]
    head = git(night.repo, "rev-parse", "--short=7", f"autoresearch/{TAG}")
    assert head == keeps[-1][0] == git(night.repo, "rev-parse", "--short=7", f"refs/autoresearch/{TAG}/best")


def fuzz(night: Night, path: Path, content: bytes | None, *extra: str) -> None:
    """Put `content` at `path` (None: a folder there), resume, check, and put the night back."""
    night.restore()
    rows_before = rows_of(night)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    before = snapshot(night)
    try:
        code, err = night.resume(*extra)
        check(night, code, err, before, rows_before)
    finally:
        night.restore(path)


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
_pending_keys = ["n", "commit", "parent", "description", "reply", "agent", "model", "input_tokens",
                 "output_tokens", "cost_usd", "row"]  # fmt: skip
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10), st.integers(), st.floats(), st.text(max_size=30),
    st.sampled_from(["", "0", "2", "a" * 40, "0000000", "keep"]),
)  # fmt: skip
PENDING = st.one_of(
    st.binary(max_size=200),
    _json_values.map(lambda v: json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(_pending_keys), _scalars, max_size=8).map(lambda d: json.dumps(d).encode()),
    st.builds(
        lambda n, desc, extra: json.dumps({"n": n, "description": desc, **extra}).encode(),
        st.integers(0, 4), st.text(max_size=50), st.dictionaries(st.sampled_from(_pending_keys[1:]), _scalars, max_size=3),
    ),
)  # fmt: skip


def _mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for pos, cut, insert in edits:
        pos = pos % (len(data) + 1)
        data = data[:pos] + insert + data[pos + cut :]
    return data


EDITS = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 40), st.binary(max_size=12)), min_size=1, max_size=4
)
TEXTS = st.one_of(
    st.binary(max_size=300), st.text(max_size=300).map(lambda s: s.encode("utf-8", "surrogatepass"))
)


@SETTINGS
@given(edits=EDITS, tail=st.one_of(st.none(), TEXTS))
def test_damaged_results_tsv(made: Night, edits: list[tuple[int, int, bytes]], tail: bytes | None) -> None:
    original = (made.saved / f"{TAG}.tsv").read_bytes()
    content = _mutate(original, edits) if tail is None else original + tail
    fuzz(made, made.results / f"{TAG}.tsv", content)


@SETTINGS
@given(content=st.one_of(st.none(), TEXTS, PENDING))
def test_damaged_seal(made: Night, content: bytes | None) -> None:
    fuzz(made, made.results / f"{TAG}.tsv.seal", content)


@SETTINGS
@given(content=st.one_of(st.none(), PENDING))
def test_damaged_pending(made: Night, content: bytes | None) -> None:
    fuzz(made, made.tag_dir / "pending.json", content)


@SETTINGS
@given(which=st.sampled_from(["lock", "lock.pid"]), content=st.one_of(st.none(), TEXTS))
def test_damaged_lock_files(made: Night, which: str, content: bytes | None) -> None:
    fuzz(made, made.tag_dir / which, content)


QUEUE = st.one_of(
    TEXTS,
    st.lists(st.one_of(_json_values.map(json.dumps), st.text(max_size=40).map(lambda s: json.dumps({"reply": s})), st.text(max_size=20)), max_size=5).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
)  # fmt: skip


@SETTINGS
@given(
    which=st.sampled_from(["queue.jsonl", "queue.jsonl.served"]),
    content=st.one_of(st.none(), QUEUE, st.integers(-3, 10).map(lambda i: str(i).encode())),
)
def test_damaged_transplant_queue(made: Night, which: str, content: bytes | None) -> None:  # fmt: skip
    fuzz(made, made.tag_dir / which, content, "--max-experiments", "3")


@SETTINGS
@given(content=st.one_of(st.none(), TEXTS))
def test_damaged_program_md(made: Night, content: bytes | None) -> None:
    fuzz(made, made.repo / "program.md", content)


_toml_values = st.one_of(
    st.integers(-2, 1000), st.floats(allow_nan=True), st.booleans(), st.text(max_size=12),
    st.lists(st.text(max_size=12), max_size=3), st.sampled_from(['["train.py"]', '"python train.py"', "inf", "nan"]),
)  # fmt: skip
_toml_keys = st.sampled_from(["name", "mutable", "run", "metric", "direction", "budget_seconds", "timeout_seconds",
                              "dataset", "verify_metric", "surprise"])  # fmt: skip


def _toml(pairs: dict[str, object]) -> bytes:
    lines = []
    for key, value in pairs.items():
        if isinstance(value, str) and value in ('["train.py"]', '"python train.py"', "inf", "nan"):
            lines.append(f"{key} = {value}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines).encode("utf-8", "surrogatepass")


@SETTINGS
@given(content=st.one_of(TEXTS, st.dictionaries(_toml_keys, _toml_values, max_size=6).map(_toml)))
def test_damaged_experiment_toml(made: Night, content: bytes) -> None:
    fuzz(made, made.repo / "experiments" / "toy" / "experiment.toml", content)


@SETTINGS
@given(content=st.one_of(st.none(), QUEUE))
def test_damaged_replay_file(made: Night, content: bytes | None) -> None:
    path = made.repo.parent / "fuzzed-replay.jsonl"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    night = Night(made.repo, made.saved, made.refs, path)
    night.restore()
    rows_before, before = rows_of(night), snapshot(night)
    try:
        code, err = night.resume("--max-experiments", "3")
        check(night, code, err, before, rows_before)
    finally:
        night.restore(path)


@settings(max_examples=EXAMPLES * 4, deadline=None, derandomize=True, database=None)
@given(content=st.one_of(st.none(), TEXTS, st.binary(min_size=1, max_size=64).map(lambda b: b * 40000)))
def test_notes_read_as_bounded_text(tmp_path_factory: pytest.TempPathFactory, content: bytes | None) -> None:
    from harness.errors import DataError

    path = tmp_path_factory.mktemp("notes") / "notes.md"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    try:
        text = read_notes(path)
    except DataError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return
    assert isinstance(text, str) and len(text) <= 1 << 20
