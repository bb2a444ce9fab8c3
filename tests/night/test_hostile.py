"""Hostile but ordinary inputs a night meets (issue 18, "Measured"), each through the real CLI.

Every case here crashed the harness, lost a result or let something through before; now the
harness either goes on (saying what it worked around) or stops with one line and exit 2,
having changed nothing on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.commands.main import main
from harness.store.ledger import Ledger
from tests.conftest import Toy, git

TOY_TRAIN = Path(__file__).resolve().parents[1] / "toy" / "const" / "train.py"


def _run(*args: str) -> int:
    return main(["run", "--device", "cpu", *args])


def _whole_file(description: str, text: str) -> str:
    return f"Description: {description}\n```python\n{text}```\n"


def _with(prefix: str = "", suffix: str = "", **consts: object) -> str:
    """The toy train file with `prefix` run first, `suffix` last and some constants replaced."""
    text = TOY_TRAIN.read_text()
    for name, value in consts.items():
        lines = text.splitlines(keepends=True)
        text = "".join(f"{name} = {value!r}\n" if ln.startswith(f"{name} = ") else ln for ln in lines)
    return prefix + text + suffix


def state(repo: Path) -> dict[str, str]:
    """Everything a night keeps: the files under results/ (but the tag lock's own files) and the refs."""
    out = {
        str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((repo / "results").rglob("*"))
        if p.is_file() and p.name not in ("lock",) and not p.name.endswith(".lock")
    }
    out["refs"] = git(repo, "for-each-ref", "--format=%(refname) %(objectname)")
    return out


def one_line_exit_2(capsys: pytest.CaptureFixture[str], code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def night(toy_experiment: Toy) -> Toy:
    """A tag `t` with its baseline and one kept attempt."""
    toy = toy_experiment
    replies = [toy.reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")]
    assert _run("--tag", "t", "--agent", f"replay:{toy.replay_file(replies)}", "--baseline-runs", "1") == 0
    return toy


def test_a_folder_where_the_results_tsv_should_be(night: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    tsv = night.repo / "results" / "t.tsv"
    tsv.rename(night.repo / "results" / "t.tsv.moved")
    tsv.mkdir()
    before = state(night.repo)
    capsys.readouterr()
    code = _run("--tag", "t", "--agent", f"replay:{night.replay_file([])}", "--resume")
    one_line_exit_2(capsys, code, str(tsv), "mv ")
    assert state(night.repo) == before


@pytest.mark.parametrize(
    ("pending", "needle"),
    [
        ({"n": 1e400, "description": "x"}, "key 'n'"),  # was OverflowError: a traceback
        ({"n": "2", "description": "x"}, "key 'n'"),  # a string taken for a number
        ({"n": None, "description": "x"}, "key 'n'"),
        ({"n": 2, "description": ["x"]}, "key 'description'"),
        ({"n": 2, "description": "x", "cost_usd": "abc"}, "key 'cost_usd'"),
        ({"n": 2, "description": "x", "input_tokens": True}, "key 'input_tokens'"),
        ({"n": 99999999999999999999999, "description": "x"}, "key 'n'"),
        ({"n": 7, "description": "x"}, "attempt #7"),  # not the attempt in flight
        ({"n": 0, "description": "x", "commit": 5}, "key 'commit'"),
        ({"n": 2, "description": "x", "commit": "ab" * 20}, "not a commit"),
        ({"n": 2, "description": "x", "surprise": 1}, "unknown key 'surprise'"),
        ([1, 2], "not a JSON object"),
    ],
)
def test_pending_json_with_the_wrong_types(
    night: Toy, capsys: pytest.CaptureFixture[str], pending: object, needle: str
) -> None:
    path = night.repo / "results" / "t" / "pending.json"
    path.write_text(json.dumps(pending))
    before = state(night.repo)
    capsys.readouterr()
    code = _run("--tag", "t", "--agent", f"replay:{night.replay_file([])}", "--resume")
    line = one_line_exit_2(capsys, code, str(path), needle, f"rm {path}")
    assert "Traceback" not in line
    assert state(night.repo) == before
    path.unlink()  # what the line says to do
    assert _run("--tag", "t", "--agent", f"replay:{night.replay_file([])}", "--resume") == 0


def test_program_md_saved_as_latin_1(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    toy = toy_experiment
    (toy.repo / "program.md").write_bytes("Try a better learning rate; caf\xe9 au lait.\n".encode("latin-1"))
    git(toy.repo, "add", "program.md")
    git(toy.repo, "commit", "-q", "-m", "program in latin-1")
    replies = [toy.reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")]
    assert _run("--tag", "l1", "--agent", f"replay:{toy.replay_file(replies)}", "--baseline-runs", "1") == 0
    err = capsys.readouterr().err
    assert "Traceback" not in err
    warnings = [ln for ln in err.splitlines() if "program.md" in ln and "not UTF-8" in ln]
    assert len(warnings) == 1 and "0xe9" in warnings[0]  # once, not at every proposal
    assert [r["status"] for r in toy.tsv("l1")] == ["keep", "keep"]


HUGE_SUMMARY = """
import sys
print("---")
print("val_bpb:          0.800000")
line = "x" * 180
for i in range(200_000):  # ~40 MB of key: value lines
    sys.stdout.write(f"key_{i}: {line}\\n")
"""


def test_a_huge_summary_block_leaves_a_small_row(toy_experiment: Toy) -> None:
    toy = toy_experiment
    replies = [_whole_file("a huge summary", _with(suffix=HUGE_SUMMARY))]
    assert _run("--tag", "big", "--agent", f"replay:{toy.replay_file(replies)}", "--baseline-runs", "1") == 0
    tsv = toy.repo / "results" / "big.tsv"
    assert tsv.stat().st_size < 10_000
    rows = toy.tsv("big")
    assert rows[1]["status"] == "keep" and rows[1]["val_bpb"] == "0.800000"
    summary = json.loads(rows[1]["summary"])
    assert len(rows[1]["summary"]) <= 2000
    assert next(iter(summary)) == "val_bpb" and summary["_omitted"] > 199_000


# (no line breaks: the reply format ends the description at the first one)
HOSTILE = "\x1b[31mred\x1b[0m \x1b]0;pwned\x07\x1b[2J\x07bell \u202eevil\x9b1m \udce9 \x00nul"


def test_escape_sequences_in_a_description(toy_experiment: Toy, capsys: pytest.CaptureFixture[str]) -> None:
    toy = toy_experiment
    long_tail = "y" * 5000
    replies = [toy.reply(f"{HOSTILE} {long_tail}", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000")]
    path = toy.repo.parent / "hostile.jsonl"
    path.write_text(json.dumps({"reply": replies[0]}) + "\n")  # json.dumps escapes the surrogate
    assert _run("--tag", "esc", "--agent", f"replay:{path}", "--baseline-runs", "1") == 0
    out, err = capsys.readouterr()
    raw = (toy.repo / "results" / "esc.tsv").read_bytes()
    message = git(toy.repo, "log", "-1", "--format=%B", "autoresearch/esc")
    for where, text in (("tsv", raw.decode()), ("commit", message), ("console", out + err)):
        assert not any(ch in text for ch in "\x1b\x07\x00\x9b\u202e\r"), where
        assert "pwned" not in text, where  # the whole OSC sequence went, not just its ESC
    assert main(["report", "--tag", "esc"]) == 0
    page = (toy.repo / "results" / "esc" / "report.html").read_text()
    assert "red bell evil" in page and not any(ch in page for ch in "\x1b\x07\x00\x9b\u202e")
    description = toy.tsv("esc")[1]["description"]
    assert description.startswith("red bell evil \ufffd nul yyy") and len(description) <= 200
    assert len(message.strip()) <= 200 and message.startswith("red bell evil")


def _helper(toy: Toy, code: str) -> None:
    """Commit `helpers.py` next to the toy's train file (the static checks look at the train file
    only; what it imports runs unchecked, as code assembled at run time would)."""
    (toy.train.parent / "helpers.py").write_text(code)
    git(toy.repo, "add", "-A")
    git(toy.repo, "commit", "-q", "-m", "helpers")


STRAY_HELPER = """
import os, subprocess, sys, time

def leave_a_helper(where):
    # A helper process that closes its pipes (no setsid) and outlives the run. The train file
    # goes on only once the helper has closed them, so the run's output ends with the train
    # file: the harness sees the end of its output and a finished shell, nothing left to wait for.
    code = ("import os, sys, time; os.close(0); os.close(1); os.close(2); "
            "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(300)")
    subprocess.Popen([sys.executable, "-c", code, where])
    deadline = time.monotonic() + 30
    while not (os.path.exists(where) and os.path.getsize(where)) and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def test_a_process_that_closed_its_pipes_does_not_outlive_its_run(toy_experiment: Toy) -> None:
    toy = toy_experiment
    _helper(toy, STRAY_HELPER)
    stray = toy.repo.parent / "stray.pid"
    prefix = f"import helpers\nhelpers.leave_a_helper({str(stray)!r})\n"
    replies = [_whole_file("leaves a helper behind", _with(prefix=prefix, VAL_BPB=0.9))]
    # Without the sandbox (whose PID namespace contains this by itself): the fallback is tested.
    code = _run(
        "--tag",
        "s",
        "--sandbox",
        "off",
        "--agent",
        f"replay:{toy.replay_file(replies)}",
        "--baseline-runs",
        "1",
    )
    assert code == 0
    pid = int(stray.read_text())
    try:
        with open(f"/proc/{pid}/stat") as fh:
            alive = fh.read().split()[2] != "Z"
    except OSError:
        alive = False
    if alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "the helper outlived its run"
    assert toy.tsv("s")[1]["status"] == "keep"


def _stale_index_lock(worktree: Path) -> Path:
    """A real git killed -9 while it holds the worktree's index lock (what a power cut leaves)."""
    proc = subprocess.Popen(["git", "update-index", "--index-info"], cwd=worktree, stdin=subprocess.PIPE)
    gitdir = Path(git(worktree, "rev-parse", "--absolute-git-dir"))
    lock = gitdir / "index.lock"
    deadline = time.monotonic() + 30
    while not lock.exists():
        assert time.monotonic() < deadline, "git never took the lock"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return lock


def test_a_stale_git_index_lock_is_cleared_on_resume(night: Toy) -> None:
    worktree = night.repo / ".autoresearch" / "worktrees" / "t"
    lock = _stale_index_lock(worktree)
    assert lock.exists()
    # Without the fix: "index.lock: File exists ... remove the file manually" and the tag is stuck.
    replies = [
        night.reply("lower", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
        night.reply("lower again", "VAL_BPB = 0.900000", "VAL_BPB = 0.800000"),
    ]
    assert _run("--tag", "t", "--agent", f"replay:{night.replay_file(replies)}", "--resume") == 0
    assert not lock.exists()
    rows = night.tsv("t")
    assert [r["description"] for r in rows] == ["baseline", "lower", "lower again"]
    assert git(night.repo, "rev-parse", "--short=7", "autoresearch/t") == rows[-1]["commit"]


def test_a_git_lock_held_by_a_live_process_is_left_alone(
    night: Toy, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from harness.store import gitlocks

    monkeypatch.setattr(gitlocks, "WAIT_SECONDS", 0.5)
    worktree = night.repo / ".autoresearch" / "worktrees" / "t"
    proc = subprocess.Popen(["git", "update-index", "--index-info"], cwd=worktree, stdin=subprocess.PIPE)
    try:
        lock = Path(git(worktree, "rev-parse", "--absolute-git-dir")) / "index.lock"
        deadline = time.monotonic() + 30
        while not lock.exists():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        before = state(night.repo)
        capsys.readouterr()
        code = _run("--tag", "t", "--agent", f"replay:{night.replay_file([])}", "--resume")
        one_line_exit_2(capsys, code, str(lock), f"pid {proc.pid}")
        assert lock.exists() and state(night.repo) == before
    finally:
        proc.kill()
        proc.wait()


ABORT_AFTER_SUMMARY = """
import os, sys
sys.stdout.flush()
sys.stderr.write("terminate called without an active exception\\n")
os.abort()
"""


def test_an_abort_after_a_complete_summary_keeps_the_result(toy_experiment: Toy) -> None:
    """Exit 134 after the summary (the baseline too): judged by the summary, the exit noted in the row."""
    toy = toy_experiment
    toy.train.write_text(_with(suffix=ABORT_AFTER_SUMMARY))
    git(toy.repo, "commit", "-q", "-am", "a train file that aborts at exit")
    replies = [_whole_file("lower", _with(suffix=ABORT_AFTER_SUMMARY, VAL_BPB=0.9))]
    assert _run("--tag", "ab", "--agent", f"replay:{toy.replay_file(replies)}", "--baseline-runs", "1") == 0
    rows = toy.tsv("ab")
    assert [r["status"] for r in rows] == ["keep", "keep"]  # was: "the baseline run crashed", night over
    assert [r["val_bpb"] for r in rows] == ["1.000000", "0.900000"]
    for row in rows:
        assert row["reason"].startswith("exited with code 134 after a complete summary"), row["reason"]


FORGE = """
import os, signal
from pathlib import Path

def forge():
    # Append a forged `keep` for this attempt to the results, then kill the harness.
    repo = Path.cwd().parents[4]  # <repo>/.autoresearch/worktrees/f/experiments/toy
    tsv = repo / "results" / "f.tsv"
    header, *rows = tsv.read_text().splitlines()
    cells = dict.fromkeys(header.split("\\t"), "")
    cells.update(commit="abcdef0", val_bpb="0.100000", memory_gb="1.0", status="keep",
                 description="forged", n=str(len(rows)))
    with open(tsv, "a") as fh:
        fh.write("\\t".join(cells.values()) + "\\n")
    shell = os.getppid()
    harness = int(open(f"/proc/{shell}/stat").read().rsplit(")", 1)[1].split()[1])
    os.kill(harness, signal.SIGKILL)
"""


def test_a_row_forged_by_a_run_is_not_trusted_on_resume(toy_experiment: Toy) -> None:
    toy = toy_experiment
    _helper(toy, FORGE)
    replies = [
        _whole_file("forges its result", _with(prefix="import helpers\nhelpers.forge()\n", VAL_BPB=0.95))
    ]
    path = toy.replay_file(replies)
    # Without the sandbox, which would stop the write (and the kill) by itself: the resume path is tested.
    cmd = [sys.executable, "-m", "harness.commands.main", "run", "--device", "cpu", "--tag", "f",
           "--sandbox", "off", "--agent", f"replay:{path}", "--baseline-runs", "1"]  # fmt: skip
    done = subprocess.run(cmd, cwd=toy.repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stdout[-3000:] + done.stderr[-2000:]
    assert "forged" in (toy.repo / "results" / "f.tsv").read_text()

    assert _run("--tag", "f", "--sandbox", "off", "--agent", f"replay:{path}", "--resume") == 0
    rows = toy.tsv("f")
    assert [(r["description"], r["status"], r["reason"]) for r in rows] == [
        ("baseline", "keep", ""),
        ("forges its result", "crash", "interrupted"),
    ]
    untrusted = (toy.repo / "results" / "f.tsv.untrusted").read_text()
    assert "forged" in untrusted and "abcdef0" in untrusted
    assert git(toy.repo, "rev-parse", "--short=7", "autoresearch/f") == rows[0]["commit"]
    Ledger(toy.repo / "results" / "f.tsv").rows()  # strictly readable


@pytest.mark.parametrize("kind", ["plain", "rich"])
def test_escape_sequences_never_reach_the_live_view(kind: str) -> None:
    """Descriptions, reasons, messages quoting a provider or a log, and the provider's status line."""
    import io

    from harness.night.live import PlainView, RichView
    from harness.store.ledger import Row

    stream = io.StringIO()
    view = PlainView(stream) if kind == "plain" else RichView(stream)
    if isinstance(view, RichView):
        view.status_line = lambda: f"provider says {HOSTILE}"
    view.start(1, HOSTILE, 10.0)
    view.message(f"provider error: {HOSTILE}")
    view.finish(Row("abc1234", 0.9, 1.0, "crash", HOSTILE, {"reason": HOSTILE}), 0.9)
    view.close()
    out = stream.getvalue()
    assert "red bell evil" in out, out
    assert kind == "plain" or "provider says red bell evil" in out, out
    assert not any(ch in out for ch in "\x1b\x07\x00\x9b\u202e\r\udce9"), repr(out)
    assert "pwned" not in out
