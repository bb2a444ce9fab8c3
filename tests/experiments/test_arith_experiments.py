"""arith-cot and finetune: the `arith` evaluator, the pretrained checkpoint, torchrun, and both nights.

The evaluator is shown right and wrong on an exact adder written in ATen operations
(tests/toy/arith/adder.py), exported like a model: always right scores 1.0, off by one 0.0,
right only up to 6 digits scores 1.0 on training-length problems and 0.0 on the longer ones.
The toy arith experiment carries that adder through the loop with a replayed edit, so a
maximize metric is kept by the judge and shown as such by the TSV, report and compare. The
torchrun launcher's ranks are all gone after a timeout, a rank that ignores SIGTERM included.
The two real experiments run through `autoresearch run --agent search --max-experiments 2
--device cpu` (slow).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

torch = pytest.importorskip("torch")

from harness.integrity.evaluation import read_outcome  # noqa: E402
from harness.night.runner import run  # noqa: E402
from prepare import arithmetic, basemodel, evaluate_arith  # noqa: E402
from prepare.datasets import prepare_dataset  # noqa: E402
from prepare.program import write_torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TOY = ROOT / "tests" / "toy" / "arith"
sys.path.insert(0, str(TOY))
from adder import Adder  # noqa: E402


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cache")
    prepare_dataset("arithmetic", root, progress=False)
    return root


@pytest.fixture
def active(cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    monkeypatch.setenv("AUTORESEARCH_DEVICE", "cpu")
    monkeypatch.setenv("AUTORESEARCH_DATASET", "arithmetic")
    return cache


# ---------------------------------------------------------------------------------------------
# the evaluator
# ---------------------------------------------------------------------------------------------


def test_held_out_problems_are_unseen_or_longer_than_training() -> None:
    problems = evaluate_arith.held_out(300, random.Random(3))
    short, long = [p for p in problems if not p[2]], [p for p in problems if p[2]]
    assert len(short) == 200 and len(long) == 100
    assert all(arithmetic.is_validation(a, b) for a, b, _ in short)  # never in the training split
    assert all(
        len(str(a)) <= arithmetic.MAX_DIGITS and len(str(b)) <= arithmetic.MAX_DIGITS for a, b, _ in short
    )
    assert all(
        arithmetic.MAX_DIGITS < len(str(x)) <= arithmetic.MAX_DIGITS + 2 for a, b, _ in long for x in (a, b)
    )
    longest = len(arithmetic.problem(99_999_999, 99_999_999)) + 2  # BOS and the stop token
    assert longest <= evaluate_arith.DECODE_LEN


def test_solved_wants_the_exact_sum_after_the_last_think() -> None:
    assert evaluate_arith.solved("<think>8+9=17</think>17", 8, 9)
    assert evaluate_arith.solved("</think>1</think>17", 8, 9)
    assert not evaluate_arith.solved("<think>8+9=17</think>017", 8, 9)
    assert not evaluate_arith.solved("<think>8+9=17 17", 8, 9)
    assert not evaluate_arith.solved("<think></think>17 ", 8, 9)


@pytest.mark.parametrize(
    ("offset", "max_digits", "want"),
    [(0, 0, (1.0, 1.0, 1.0)), (1, 0, (0.0, 0.0, 0.0)), (0, 6, (2 / 3, 1.0, 0.0))],
)
def test_the_evaluator_scores_exact_answers_by_greedy_decoding(
    active: Path, tmp_path: Path, offset: int, max_digits: int, want: tuple[float, float, float]
) -> None:
    write_torch(Adder(offset, max_digits), 24, evaluate_arith.DECODE_LEN, tmp_path)
    result = evaluate_arith.evaluate(tmp_path, problems=24)
    assert (result["accuracy"], result["accuracy_in"], result["accuracy_long"]) == pytest.approx(want)
    assert result["problems"] == 24


def test_the_evaluator_process_prints_the_result_line_the_harness_reads(active: Path, tmp_path: Path) -> None:
    write_torch(Adder(), 32, evaluate_arith.DECODE_LEN, tmp_path / "program")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-E", "-s", "-B", "-m", "prepare.evaluate_arith", str(tmp_path / "program")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    outcome = read_outcome(done.stdout.splitlines(), 0, None, "accuracy")
    assert outcome.value == 1.0 and outcome.reason is None
    assert outcome.summary["accuracy_long"] == 1.0 and outcome.summary["problems"] == 32
    assert "accuracy" not in outcome.summary  # the metric is the value, not a summary key


def test_a_program_of_another_row_length_is_refused(active: Path, tmp_path: Path) -> None:
    write_torch(Adder(), 4, 64, tmp_path / "program")
    done = subprocess.run(
        [sys.executable, "-m", "prepare.evaluate_arith", str(tmp_path / "program")],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1
    outcome = read_outcome(done.stdout.splitlines(), 1, None, "accuracy")
    assert outcome.value is None and outcome.reason is not None
    assert outcome.reason.startswith("refused program: the program takes rows of 64 tokens")


# ---------------------------------------------------------------------------------------------
# the pretrained checkpoint and torchrun
# ---------------------------------------------------------------------------------------------


def test_a_missing_checkpoint_names_the_command_that_builds_it(tmp_path: Path) -> None:
    from prepare.errors import DataError

    with pytest.raises(DataError, match="autoresearch prepare --base-model"):
        basemodel.load_base(tmp_path, "cpu")


@pytest.mark.slow  # pretraining on a shared 2-core machine
def test_the_checkpoint_is_built_once_and_loads_back(active: Path) -> None:
    where = basemodel.build(active, "cpu", log=lambda _: None)
    stamp = (where / "model.pt").stat().st_mtime_ns
    assert basemodel.build(active, "cpu") == where and (where / "model.pt").stat().st_mtime_ns == stamp
    model, config = basemodel.load_base(active, "cpu")
    assert (
        config["pretrain_digits"] == basemodel.PRETRAIN_DIGITS
        and config["seq_len"] == evaluate_arith.DECODE_LEN
    )
    logits = model(torch.zeros((2, 16), dtype=torch.long))
    assert logits.shape == (2, 16, config["vocab_size"]) and logits.dtype == torch.float32


RANK_SLEEPS = """
    import os, pathlib, signal, time
    rank = os.environ["RANK"]
    if rank == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a rank that will not stop when asked
    pathlib.Path(os.environ["PIDS"], rank).write_text(str(os.getpid()))
    print("rank", rank, "of", os.environ["WORLD_SIZE"], "up", flush=True)
    time.sleep(300)
"""


@pytest.mark.slow  # torchrun starts in seconds on an idle core, far slower on a busy one
def test_a_timeout_kills_every_torchrun_rank(tmp_path: Path) -> None:
    (tmp_path / "ranks.py").write_text(textwrap.dedent(RANK_SLEEPS))
    pids = tmp_path / "pids"
    pids.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "AUTORESEARCH_DEVICE": "cpu", "PIDS": str(pids)}
    result = run(
        "python -m prepare.launch ranks.py", tmp_path, env, tmp_path / "run.log", timeout=40.0, kill_grace=2.0
    )
    log = (tmp_path / "run.log").read_text()
    assert result.kill_reason == "timeout", log[-2000:]
    assert "launch: torchrun --standalone --nproc-per-node 2 ranks.py" in log
    ranks = sorted(pids.iterdir())
    assert [p.name for p in ranks] == ["0", "1"], log[-2000:]
    for p in ranks:  # both ranks, each in a session of its own, are gone: no stray rank survives
        pid = int(p.read_text())
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, p.name


# ---------------------------------------------------------------------------------------------
# through the loop: a maximize metric, and the two real experiments (the CI check)
# ---------------------------------------------------------------------------------------------


def night(repo: Path, *args: str, timeout: float = 1700) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.commands.main", *args], cwd=repo, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip


def tsv(repo: Path, tag: str) -> list[dict[str, str]]:
    lines = (repo / "results" / f"{tag}.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


@pytest.mark.slow  # three runs and three evaluations
@pytest.mark.timeout(1800)  # minutes on a loaded 2-core machine; under 2 on an idle one
def test_a_maximize_metric_is_kept_and_reported_as_maximize(
    project_repo: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    shutil.copytree(
        TOY, project_repo / "experiments" / "toy-arith", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run(["git", "add", "-A"], cwd=project_repo, check=True)
    subprocess.run(["git", "commit", "-qm", "toy arith"], cwd=project_repo, check=True)
    rel = "experiments/toy-arith/train.py"
    replies = [
        f"Description: generalise\n{rel}\n<<<<<<< SEARCH\nMAX_DIGITS = 6\n=======\nMAX_DIGITS = 0\n>>>>>>> REPLACE\n",
        f"Description: off by one\n{rel}\n<<<<<<< SEARCH\nOFFSET = 0\n=======\nOFFSET = 1\n>>>>>>> REPLACE\n",
    ]
    replay = project_repo.parent / "replies.jsonl"
    replay.write_text("".join(json.dumps({"reply": r}) + "\n" for r in replies))
    out = night(project_repo, "run", "--tag", "max", "--experiment", "toy-arith", "--device", "cpu",
                "--agent", f"replay:{replay}", "--judge", "strict")  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    header = (project_repo / "results" / "max.tsv").read_text().splitlines()[0].split("\t")
    assert header[:5] == ["commit", "accuracy", "memory_gb", "status", "description"]
    rows = tsv(project_repo, "max")
    # 32 problems: 21 of training length (right at 6 digits), 11 longer (right only with MAX_DIGITS = 0)
    assert [(r["description"], r["status"], float(r["accuracy"])) for r in rows] == [
        ("baseline", "keep", 0.65625), ("generalise", "keep", 1.0), ("off by one", "discard", 0.0),
    ]  # fmt: skip
    summary = json.loads(rows[1]["summary"])
    assert summary["accuracy"] == 1.0 and summary["accuracy_long"] == 1.0 and summary["problems"] == 32
    assert json.loads(rows[0]["summary"])["accuracy_long"] == 0.0
    report = night(
        project_repo, "report", "--tag", "max", "--json", "--out", str(project_repo.parent / "rep")
    )
    assert report.returncode == 0, report.stderr[-2000:]
    data = json.loads(report.stdout)
    assert (data["metric"], data["direction"], data["baseline"], data["best"]) == (
        "accuracy",
        "maximize",
        0.65625,
        1.0,
    )
    assert data["improvement_pct"] == pytest.approx(100 * (1 - 0.65625) / 0.65625)
    compare = night(project_repo, "compare", "autoresearch/max", "--json", "--no-diff")
    assert compare.returncode == 0, compare.stdout[-2000:] + compare.stderr[-2000:]
    side = json.loads(compare.stdout)["refs"][0]
    assert (side["metric"], side["direction"], side["best"]) == ("accuracy", "maximize", 1.0)


@pytest.mark.slow  # three real trainings and evaluations on the CPU
@pytest.mark.timeout(1800)  # minutes on a loaded 2-core machine; under 2 on an idle one
@pytest.mark.parametrize("experiment", ["arith-cot", "finetune"])
def test_the_experiment_runs_through_the_loop_with_the_search_agent(
    project_repo: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, experiment: str
) -> None:
    monkeypatch.setenv("AUTORESEARCH_CACHE", str(cache))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # CI machines are shared: no spinning thread pools
    if experiment == "finetune":
        basemodel.build(cache, "cpu", log=lambda _: None)
    out = night(project_repo, "run", "--tag", "ci", "--experiment", experiment, "--device", "cpu",
                "--agent", "search", "--judge", "strict", "--max-experiments", "2", "--budget", "8")  # fmt: skip
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = tsv(project_repo, "ci")
    assert len(rows) == 3 and rows[0]["description"] == "baseline"
    assert all(r["description"].startswith("search: ") for r in rows[1:])
    log = (project_repo / "results" / "ci" / "runs" / "0.log").read_text()
    assert rows[0]["status"] == "keep", log[-3000:]
    summary = json.loads(rows[0]["summary"])
    assert 0.0 <= float(rows[0]["accuracy"]) == summary["accuracy"] <= 1.0
    assert {"accuracy_in", "accuracy_long", "problems", "training_seconds"} <= set(summary)
    assert "[autoresearch] evaluator: prepare.evaluate_arith" in log
    if experiment == "finetune":
        assert summary["world_size"] == 2.0 and summary["sft_steps"] >= 1
        assert "launch: torchrun --standalone --nproc-per-node 2 train.py" in log


# ---------------------------------------------------------------------------------------------
# finetune's train file, its parts (imported as a module: the loop runs only under __main__)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finetune():
    pytest.importorskip("peft")
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "finetune_train", ROOT / "experiments" / "finetune" / "train.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_sft_loss_sees_only_completions(finetune) -> None:
    text = [256, *b"12+3=<t>15", 256, *b"4+5=9", 256, *b"7+"]
    mask = finetune.completion_mask(torch.tensor([text]), 256, ord("="))[0].tolist()
    # the target of position t is text[t + 1]: counted from the '=' (its target is the first
    # completion token) up to the BOS that ends the problem, never inside a prompt
    want = [False] * 5 + [True] * 6 + [False] * 4 + [True] * 2 + [False] * 3
    assert mask == want


def test_dpo_steps_raise_the_chosen_over_the_rejected(finetune) -> None:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = {"depth": 1, "dim": 32, "n_heads": 2, "vocab_size": 260, "seq_len": evaluate_arith.DECODE_LEN}
    model = get_peft_model(
        basemodel.make_model(config), LoraConfig(r=4, lora_alpha=8, target_modules=["qkv", "fc"])
    )
    prompt = [256, *b"2+2="]
    chosen, rejected = (
        [prompt + list(b"<think>2+2=4</think>4") + [256]],
        [prompt + list(b"<think>2+2=5</think>5") + [256]],
    )
    starts = [len(prompt)]
    with torch.no_grad():
        ref = finetune.sequence_logprobs(model, chosen, starts, "cpu") - finetune.sequence_logprobs(
            model, rejected, starts, "cpu"
        )
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(5):
        both = finetune.sequence_logprobs(model, chosen + rejected, starts + starts, "cpu")
        loss = -torch.nn.functional.logsigmoid(0.1 * (both[:1] - both[1:] - ref)).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    with torch.no_grad():
        after = finetune.sequence_logprobs(model, chosen, starts, "cpu") - finetune.sequence_logprobs(
            model, rejected, starts, "cpu"
        )
    assert float(after - ref) > 0.5  # the policy moved towards the correct completion
    merged = model.merge_and_unload()  # what rank 0 hands off: a plain module, no adapters
    assert not any("lora" in name for name, _ in merged.named_parameters())
