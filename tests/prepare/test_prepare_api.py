"""prepare's public surface: the lazy API, the profiles, the cache checks, arithmetic, text:PATH, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.fakes.shard_server import make_shard

import constants
import prepare
from prepare import arithmetic, datasets, env
from prepare.errors import DataError

PROJECT = Path(__file__).resolve().parents[2]


def run_py(code: str, **env_vars: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    e.update(env_vars, PYTHONPATH=str(PROJECT))
    return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=120)


def test_import_prepare_is_light() -> None:
    res = run_py(
        "import sys, prepare, prepare.datasets, prepare.cli; print('torch' in sys.modules, 'mlx' in sys.modules)"
    )
    assert res.stdout.split() == ["False", "False"], res.stderr


def test_active_profile_and_budget_override() -> None:
    code = "from prepare import MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, VOCAB_SIZE, DEVICE; print(MAX_SEQ_LEN, TIME_BUDGET, EVAL_TOKENS, VOCAB_SIZE, DEVICE)"
    assert run_py(code, AUTORESEARCH_DEVICE="cuda").stdout.split() == [
        "2048",
        "300",
        str(40 * 524288),
        "8192",
        "cuda",
    ]
    assert run_py(code, AUTORESEARCH_DEVICE="mlx").stdout.split()[0] == "2048"
    assert run_py(code, AUTORESEARCH_DEVICE="cpu", AUTORESEARCH_TIME_BUDGET="5").stdout.split()[:2] == [
        "256",
        "5.0",
    ]
    res = run_py(code, AUTORESEARCH_DEVICE="tpu")
    assert res.returncode != 0 and "AUTORESEARCH_DEVICE='tpu'" in res.stderr
    res = run_py(code, AUTORESEARCH_DEVICE="cpu", AUTORESEARCH_TIME_BUDGET="-3")
    assert res.returncode != 0 and "positive number" in res.stderr


def test_device_is_detected_when_unset() -> None:
    res = run_py(
        "import prepare, torch; print(prepare.DEVICE, 'cuda' if torch.cuda.is_available() else 'cpu')"
    )
    a, b = res.stdout.split()
    assert a == b


def test_constants_are_immutable_values() -> None:
    assert constants.TIME_BUDGET == 300 and constants.TIMEOUT == 600
    assert isinstance(constants.PROFILES, tuple) and all(isinstance(p, tuple) for p in constants.PROFILES)
    p = constants.profile("cpu")
    p["EVAL_TOKENS"] = 1
    assert constants.profile("cpu")["EVAL_TOKENS"] != 1
    with pytest.raises(KeyError):
        constants.profile("tpu")
    with pytest.raises(AttributeError):
        prepare.NOT_A_THING  # noqa: B018


def test_arithmetic_problems_and_pinned_split() -> None:
    assert arithmetic.problem(658, 189) == "658+189=<think>8+9=17 5+8+1=14 6+1+1=8</think>847"
    assert arithmetic.problem(999, 1) == "999+1=<think>9+1=10 9+0+1=10 9+0+1=10</think>1000"
    train = arithmetic.train_problems(20_000)
    val = arithmetic.val_problems(2_000)
    assert not set(train) & set(val)
    assert len(set(val)) == len(val)
    for text in val[:200]:
        a, b = map(int, text.split("=", 1)[0].split("+"))
        assert arithmetic.is_validation(a, b) and arithmetic.is_validation(b, a)
        assert text.endswith(f"</think>{a + b}")
    digits = {len(t.split("+", 1)[0]) for t in train}
    assert digits == set(range(1, arithmetic.MAX_DIGITS + 1))
    assert train == arithmetic.train_problems(20_000)  # deterministic


def test_check_ready_messages_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=f"not prepared.*autoresearch prepare --dataset arithmetic --cache-dir {tmp_path}"
    ):
        datasets.check_ready("arithmetic", tmp_path)
    with pytest.raises(DataError, match="unknown dataset"):
        datasets.check_ready("imagenet", tmp_path)
    info = datasets.prepare_dataset("arithmetic", tmp_path)
    assert datasets.check_ready("arithmetic", tmp_path).manifest == info.manifest

    shard = info.train_files[0]
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(DataError, match="truncated"):
        datasets.check_ready("arithmetic", tmp_path)
    shard.write_bytes(data)

    pkl = info.tokenizer_dir / "tokenizer.pkl"
    good = pkl.read_bytes()
    pkl.write_bytes(good + b"\0")
    with pytest.raises(DataError, match="does not match the manifest"):
        datasets.check_ready("arithmetic", tmp_path)
    pkl.write_bytes(good)

    manifest = json.loads((info.root / "manifest.json").read_text())
    (info.root / "manifest.json").write_text(
        json.dumps({**manifest, "source": {**manifest["source"], "version": 0}})
    )
    with pytest.raises(DataError, match="another generator version"):
        datasets.check_ready("arithmetic", tmp_path)
    # an explicit prepare replaces the stale cache
    assert datasets.prepare_dataset("arithmetic", tmp_path).manifest["source"] == arithmetic.params()
    (info.root / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="corrupt"):
        datasets.check_ready("arithmetic", tmp_path)


def test_concurrent_first_builds_do_not_collide(tmp_path: Path) -> None:
    code = "from prepare import Tokenizer; print(Tokenizer.load().vocab_size)"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            env={
                **os.environ,
                "PYTHONPATH": str(PROJECT),
                "AUTORESEARCH_CACHE": str(tmp_path),
                "AUTORESEARCH_DATASET": "arithmetic",
            },
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [o[0].strip() for o in outs] == ["260", "260"], outs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arithmetic"]  # no temporary folders left


def test_text_dataset_from_a_folder(tmp_path: Path) -> None:
    import io

    import pyarrow.parquet as pq

    src = tmp_path / "corpus"
    (src / "sub").mkdir(parents=True)
    texts = [
        t
        for i in (1, 2, 3)
        for t in pq.read_table(io.BytesIO(make_shard(i, docs=150))).column("text").to_pylist()
    ]
    (src / "a.txt").write_text("\n\n".join(texts[:150]))
    (src / "sub" / "b.md").write_text("\n\n".join(texts[150:250]))
    (src / "c.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts[250:]))
    (src / "ignored.bin").write_bytes(b"\0\1")
    cache = tmp_path / "cache"
    info = datasets.prepare_dataset(f"text:{src}", cache, max_chars=10_000_000, progress=False)
    assert info.root.name.startswith("text-corpus-") and info.manifest["tokenizer"]["vocab_size"] == 8192
    first = {p.name: p.read_bytes() for p in (info.root / "data").glob("*.parquet")}
    again = datasets.prepare_dataset(f"text:{src}", cache, max_chars=10_000_000, progress=False)
    assert again.manifest["tokenizer"]["sha256"] == info.manifest["tokenizer"]["sha256"]
    assert {p.name: p.read_bytes() for p in (info.root / "data").glob("*.parquet")} == first
    val = set(pq.read_table(info.val_file).column("text").to_pylist())
    train = {t for f in info.train_files for t in pq.read_table(f).column("text").to_pylist()}
    assert val and not val & train
    with pytest.raises(DataError, match="does not exist"):
        datasets.prepare_dataset(f"text:{tmp_path / 'nope'}", cache)
    (tmp_path / "bad.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1.*\"text\""):
        datasets.prepare_dataset(f"text:{tmp_path / 'bad.jsonl'}", cache)


def test_cli_prepares_and_reports_bad_input(tmp_path: Path) -> None:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AUTORESEARCH_")}
    base["PYTHONPATH"] = str(PROJECT)
    ok = subprocess.run(
        [sys.executable, "-m", "prepare", "--cache-dir", str(tmp_path)],
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0 and "arithmetic is ready" in ok.stdout, ok.stderr
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "prepare",
            "--dataset",
            "climbmix",
            "--num-shards",
            "0",
            "--cache-dir",
            str(tmp_path),
        ],
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2 and "--num-shards must be between 1 and 6542" in bad.stderr
    assert env.DEFAULT_DATASET == "arithmetic"


def test_a_hand_off_by_hand_is_evaluated_at_once_and_its_folder_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prepare.handoff import hand_off_folder

    (tmp_path / "fake_evaluator.py").write_text(
        "import sys, pathlib\nprint('evaluated:', sorted(p.name for p in pathlib.Path(sys.argv[1]).iterdir()))\n"
    )
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.delenv("AUTORESEARCH_HAND_OFF", raising=False)
    run = subprocess.run
    seen: list[str] = []
    monkeypatch.setattr(
        subprocess, "run", lambda *a, **k: seen.append(run(*a, **k, capture_output=True, text=True).stdout)
    )
    with hand_off_folder("fake_evaluator") as folder:
        (folder / "program.json").write_text("{}")
    assert seen == ["evaluated: ['program.json']\n"] and not folder.exists()
    # an export that fails is not evaluated, and leaves nothing behind
    with pytest.raises(RuntimeError), hand_off_folder("fake_evaluator") as failed:
        raise RuntimeError("cannot export")
    assert len(seen) == 1 and not failed.exists()
    # the harness named the folder: nothing is run and the folder stays for the harness's evaluator
    named = tmp_path / "handoff"
    named.mkdir()
    monkeypatch.setenv("AUTORESEARCH_HAND_OFF", str(named))
    with hand_off_folder("fake_evaluator") as folder:
        (folder / "program.json").write_text("{}")
    assert folder == named and (named / "program.json").exists() and len(seen) == 1
