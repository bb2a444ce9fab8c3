"""harness.store.novelty: the normalised-change key, and the registry shared by threads and processes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from harness.store.novelty import FileRegistry, change_key, normalise

P = "experiments/gpt/train.py"
BASE = '''"""A train file."""
import math

LR = 0.04  # the learning rate
DEPTH = 8


def schedule(step):
    # warm up, then decay
    return min(1.0, step / 100) * math.cos(step)
'''


def key(after: str, before: str = BASE) -> str | None:
    return change_key({P: before}, {P: after})


def test_the_same_change_written_differently_has_the_same_key() -> None:
    plain = key(BASE.replace("LR = 0.04", "LR = 0.02"))
    assert plain is not None
    assert key(BASE.replace("LR = 0.04  # the learning rate", "LR=0.02   # halved, see #3")) == plain
    assert key(BASE.replace("LR = 0.04", "LR = 0.02").replace("# warm up, then decay", "")) == plain


def test_the_same_change_on_another_version_of_the_file_has_the_same_key() -> None:
    """An unrelated change kept since moved the lines: the idea is the same, so is the key."""
    moved = BASE.replace("import math\n", "import math\nimport os\n").replace("DEPTH = 8", "DEPTH = 12")
    assert key(moved.replace("LR = 0.04", "LR = 0.02"), moved) == key(BASE.replace("LR = 0.04", "LR = 0.02"))


def test_different_changes_have_different_keys() -> None:
    keys = {
        key(BASE.replace("LR = 0.04", "LR = 0.02")),
        key(BASE.replace("LR = 0.04", "LR = 0.03")),
        key(BASE.replace("DEPTH = 8", "DEPTH = 0.02")),
        key(BASE.replace("step / 100", "step / 200")),
        key(
            BASE.replace("    return min", "        return min").replace(
                "def schedule(step):\n", "def schedule(step):\n    if True:\n"
            )
        ),
    }
    assert None not in keys and len(keys) == 5


def test_comments_docstrings_and_whitespace_only_have_no_key() -> None:
    assert key(BASE.replace("# the learning rate", "# tuned")) is None
    assert key(BASE.replace('"""A train file."""', '"""Another docstring."""')) is None
    assert key(BASE.replace("min(1.0, step / 100)", "min( 1.0 ,step/100 )") + "\n\n") is None


def test_python_indentation_counts_and_other_files_are_compared_by_lines() -> None:
    assert normalise(P, "if x:\n    y = 1\nz = 2\n") != normalise(P, "if x:\n    y = 1\n    z = 2\n")
    assert normalise("run.sh", "  a   b  \n\n c\n") == ["a b", "c"]
    assert normalise(P, "x = (\n    1,\n    2)\n") == ["x = ( 1 , 2 )"]


def test_registry_claims_once_numbers_settles_and_releases(tmp_path: Path) -> None:
    reg = FileRegistry(tmp_path / "novelty.jsonl", owner="t")
    assert reg.claim("k1", "first") is None
    seen = reg.claim("k1", "again")
    assert (
        seen is not None and seen.in_flight and seen.n is None and seen.label("t") == "a proposal in flight"
    )
    reg.number("k1", 4)
    reg.settle("k1", 4, "discard", 0.95)
    done = reg.claim("k1", "third")
    assert done is not None and (done.n, done.status, done.metric, done.label("t")) == (
        4,
        "discard",
        0.95,
        "#4",
    )
    assert done.label("other") == "#4 of t"
    assert reg.claim("k2", "second") is None and [e.key for e in reg.in_flight()] == ["k2"]
    reg.release("k2")
    assert reg.in_flight() == [] and reg.claim("k2", "back") is None
    # A torn last line (a crash mid-write) is ignored.
    with open(tmp_path / "novelty.jsonl", "a") as fh:
        fh.write('{"op": "claim", "key": "k3"')
    assert reg.lookup("k3") is None and reg.lookup("k1") is not None
    # ... and the next event after it is a line of its own, seen by another reader of the file
    assert reg.claim("k4", "after the tear") is None
    other = FileRegistry(tmp_path / "novelty.jsonl", owner="u")
    assert other.lookup("k4") is not None and other.lookup("k3") is None and other.lookup("k1") is not None
    # a registry file replaced by a shorter one (restored from a copy) is read again from the start
    (tmp_path / "novelty.jsonl").write_text('{"op":"claim","key":"k9","description":"d","owner":"t"}\n')
    assert reg.lookup("k1") is None and reg.lookup("k9") is not None


def test_release_owner_frees_only_that_owners_flights(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    a, b = FileRegistry(path, owner="a"), FileRegistry(path, owner="b")
    assert a.claim("x", "a's") is None and b.claim("y", "b's") is None
    a.number("x", 1)
    a.settle("x", 1, "keep", 0.9)
    assert a.claim("z", "a's other") is None
    assert a.release_owner() == 1  # z; x is settled
    assert sorted(e.key for e in b.in_flight()) == ["y"]
    assert b.claim("x", "b tries a's") is not None  # a's settled result holds for b too


def test_concurrent_claims_from_threads_and_processes_have_one_winner(tmp_path: Path) -> None:
    path = tmp_path / "novelty.jsonl"
    script = (
        "import sys; from harness.store.novelty import FileRegistry;"
        "r = FileRegistry(sys.argv[1], owner=sys.argv[2]);"
        "print(sum(r.claim(f'k{i}', 'p') is None for i in range(40)))"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path), f"p{i}"], stdout=subprocess.PIPE, text=True
        )
        for i in range(3)
    ]
    wins: list[int] = []
    reg = FileRegistry(path, owner="threads")

    def claim_all() -> None:
        wins.append(sum(reg.claim(f"k{i}", "t") is None for i in range(40)))

    threads = [threading.Thread(target=claim_all) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wins += [int(p.communicate(timeout=60)[0]) for p in procs]
    assert sum(wins) == 40  # every key claimed exactly once over 6 claimants
    claims = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(c["key"] for c in claims) == sorted(f"k{i}" for i in range(40))
