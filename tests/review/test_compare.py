"""`autoresearch compare` across two machines: two clones of one origin each run a night and
publish; after `git fetch` one clone compares origin/autoresearch/A with origin/autoresearch/B."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.review_repos import Step, git, night, origin_with_clones, reply, toy_origin

from harness.commands.main import main

NIGHT_A = [
    Step("lower the learning rate", "LEARNING_RATE = 0.01", "LEARNING_RATE = 0.005", "keep", 0.90),
    Step("batch 64", "", "", "discard", 0.95),
    Step("deeper", "DEPTH = 4", "DEPTH = 6", "keep", 0.85),
]
NIGHT_B = [
    Step("warmup 20", "WARMUP = 0", "WARMUP = 20", "keep", 0.97),
    Step("batch 16", "", "", "crash", 0.0),
    Step("deeper, like A found", "DEPTH = 4", "DEPTH = 6", "keep", 0.93),
    Step("lr 0.02", "", "", "discard", 0.99),
]


def cli(monkeypatch: pytest.MonkeyPatch, cwd: Path, *args: str) -> int:
    monkeypatch.chdir(cwd)
    return main(list(args))


@pytest.fixture
def two_nights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Clone a ran night A on an H100, clone b night B on an A100; both published; a fetched."""
    _, (a, b) = origin_with_clones(tmp_path, ["a", "b"])
    night(a, "nov21-h100", NIGHT_A, hardware="NVIDIA H100")
    night(b, "nov21-a100", NIGHT_B, hardware="NVIDIA A100", baseline=1.01)
    assert cli(monkeypatch, a, "publish", "--tag", "nov21-h100") == 0
    assert cli(monkeypatch, b, "publish", "--tag", "nov21-a100") == 0
    git(a, "fetch", "-q")
    return a


def test_compare_fetched_nights_json(
    two_nights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    ra, rb = "origin/autoresearch/nov21-h100", "origin/autoresearch/nov21-a100"
    assert cli(monkeypatch, two_nights, "compare", ra, rb, "--json") == 0
    data = json.loads(capsys.readouterr().out)  # stdout holds only the JSON
    a, b = data["refs"]
    assert (a["ref"], a["experiments"], a["kept"], a["best"], a["hardware"]) == (
        ra,
        4,
        3,
        0.85,
        ["NVIDIA H100"],
    )
    assert (b["ref"], b["experiments"], b["kept"], b["crashed"], b["best"]) == (rb, 5, 3, 1, 0.93)
    assert b["hardware"] == ["NVIDIA A100"] and b["baseline"] == 1.01
    assert a["keep_rate"] == pytest.approx(2 / 3) and b["keep_rate"] == pytest.approx(2 / 4)
    assert a["results_source"] == "origin/autoresearch-results/nov21-h100:results/nov21-h100.tsv"
    assert data["base"] == git(two_nights, "rev-parse", "origin/main")
    assert "+LEARNING_RATE = 0.005" in a["diff"] and "+WARMUP = 20" in b["diff"]
    # "deeper" was kept on both machines (different commits, same change): neither lacks it.
    assert [c["subject"] for c in data["lacks"][ra][rb]] == ["lower the learning rate"]
    assert [c["subject"] for c in data["lacks"][rb][ra]] == ["warmup 20"]


def test_compare_text_mixes_local_and_remote(
    two_nights: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert (
        cli(monkeypatch, two_nights, "compare", "autoresearch/nov21-h100", "origin/autoresearch/nov21-a100")
        == 0
    )
    out = capsys.readouterr().out
    assert "autoresearch/nov21-h100" in out and "origin/autoresearch/nov21-a100" in out
    best = next(line for line in out.splitlines() if line.startswith("best"))
    assert "0.850000" in best and "0.930000" in best
    hardware = next(line for line in out.splitlines() if line.startswith("hardware"))
    assert "NVIDIA H100" in hardware and "NVIDIA A100" in hardware
    assert "Kept in autoresearch/nov21-h100, missing from origin/autoresearch/nov21-a100 (1):" in out
    assert "lower the learning rate" in out and "final diff against the common base" in out


def test_compare_unknown_ref_and_unpublished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _, (a,) = origin_with_clones(tmp_path, ["a"])
    night(a, "local", NIGHT_A)
    assert cli(monkeypatch, a, "compare", "autoresearch/local", "origin/autoresearch/nope") == 2
    err = capsys.readouterr().err
    assert (
        "unknown ref 'origin/autoresearch/nope'" in err and "autoresearch/local" in err and "git fetch" in err
    )

    # A branch without a ledger anywhere still compares (code only) and says why results are missing.
    night(a, "bare", NIGHT_B)
    (a / "results" / "bare.tsv").unlink()
    assert cli(monkeypatch, a, "compare", "autoresearch/local", "autoresearch/bare", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["refs"][0]["best"] == 0.85
    assert "publish" in data["refs"][1]["results_source"] and "best" not in data["refs"][1]


@pytest.mark.usefixtures("clean_env")
def test_two_real_nights_publish_fetch_compare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real loop (replay agent, toy experiment) on two clones; publish; fetch; compare."""
    _, (m1, m2) = toy_origin(tmp_path)
    nights = {
        m1: ("n-a", [reply("lower to 0.9", "VAL_BPB = 1.000000", "VAL_BPB = 0.900000"),
                     reply("raise to 0.95", "VAL_BPB = 0.900000", "VAL_BPB = 0.950000")]),
        m2: ("n-b", [reply("more steps", "STEPS = 4", "STEPS = 6"),
                     reply("lower to 0.8", "VAL_BPB = 1.000000", "VAL_BPB = 0.800000")]),
    }  # fmt: skip
    for clone, (tag, replies) in nights.items():
        replay = tmp_path / f"{tag}.jsonl"
        replay.write_text("".join(json.dumps({"reply": r}) + "\n" for r in replies))
        assert (
            cli(monkeypatch, clone, "run", "--device", "cpu", "--tag", tag, "--agent", f"replay:{replay}")
            == 0
        )
        assert cli(monkeypatch, clone, "publish", "--tag", tag) == 0
    git(m1, "fetch", "-q")
    capsys.readouterr()

    assert (
        cli(monkeypatch, m1, "compare", "origin/autoresearch/n-a", "origin/autoresearch/n-b", "--json") == 0
    )
    data = json.loads(capsys.readouterr().out)
    a, b = data["refs"]
    assert (a["experiments"], a["best"], a["baseline"]) == (3, 0.9, 1.0)
    assert (b["experiments"], b["best"]) == (3, 0.8)
    assert [c["subject"] for c in a["kept_commits"]] == ["lower to 0.9"]
    assert "lower to 0.8" in [c["subject"] for c in b["kept_commits"]]
    assert [c["subject"] for c in data["lacks"]["origin/autoresearch/n-a"]["origin/autoresearch/n-b"]] == [
        "lower to 0.9"
    ]
    assert "+VAL_BPB = 0.800000" in b["diff"]
    # m1's publish added the attempts' fetch refspec, so its fetch brought both nights' attempts
    # (baseline + 2 each); compare says where they are.
    assert (a["attempt_refs"], b["attempt_refs"]) == (3, 3)
    assert b["attempt_refs_source"] == "refs/autoresearch-fetched/origin/n-b/attempts/"
    assert cli(monkeypatch, m1, "compare", "origin/autoresearch/n-b", "autoresearch/n-a") == 0
    text = capsys.readouterr().out
    assert (
        "origin/autoresearch/n-b: attempts' code under refs/autoresearch-fetched/origin/n-b/attempts/" in text
    )
    assert "autoresearch/n-a: attempts' code under refs/autoresearch/n-a/attempts/" in text

    # A clone without the refspec is told how to get them.
    m3 = tmp_path / "m3"
    git(tmp_path, "clone", "-q", git(m1, "remote", "get-url", "origin"), str(m3))
    assert cli(monkeypatch, m3, "compare", "origin/autoresearch/n-b", "--json") == 0
    (c,) = json.loads(capsys.readouterr().out)["refs"]
    assert c["attempt_refs"] == 0
    assert (
        "git config --add remote.origin.fetch '+refs/autoresearch/*:refs/autoresearch-fetched/origin/*'"
        in (c["attempt_refs_source"])
    )

    # The morning report of the fetched night works from the published ledger too.
    tsv = tmp_path / "n-b.tsv"
    tsv.write_text(git(m1, "show", "origin/autoresearch-results/n-b:results/n-b.tsv") + "\n")
    assert cli(monkeypatch, m1, "report", "--tsv", str(tsv), "--json") == 0
    assert json.loads(capsys.readouterr().out)["best"] == 0.8
