"""The learning night, measured (BENCHMARKS.md, "A night that learns"): duplicates refused, prompt size
over a 200-attempt history, and what the reflection calls cost.

    python bench/bench_memory.py dups          # a model that repeats itself, real SDKs, depth 3
    python bench/bench_memory.py prompt        # prompt and reflection-prompt size, 1..200 attempts
    python bench/bench_memory.py reflect       # a toy night with reflections through the fake server

`dups` runs the real CLI (`autoresearch run --agent claude|openai`, the real anthropic and openai
SDKs) against the loopback fake servers of tests/support/fakes, with pipeline depth 3 and a
model that answers every request with the same edit; it counts requests, rows, refused repeats
and the runs that were started. `prompt` builds the prompts of a synthetic 200-attempt night
(records with diagnostics on every attempt, 10,000 characters of notes, three near misses, two
proposals in flight, experiments/gpt/train.py as the file) and prints their sizes. Tokens are
estimated as characters / 3.5 (no tokenizer of the providers is available offline); costs use the
built-in price table. `reflect` runs a toy night of 40 attempts with --reflect-every 10 through the
fake Anthropic server, which reports input tokens as characters / 3.5 of what it was sent; with
`--delay D` it takes D seconds to answer each reflection, which shows whether runs wait for one
(compare the night's wall time with `--delay 0`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from support.fakes.llm_servers import FakeLLM, prompt_text, reply, system_text  # noqa: E402

from harness.agents.base import Context, InFlight, NearMiss  # noqa: E402
from harness.agents.claude import DEFAULT_MODEL as CLAUDE_DEFAULT  # noqa: E402
from harness.agents.cost import PriceTable  # noqa: E402
from harness.agents.prompt import build_prompt, build_reflection_prompt  # noqa: E402
from harness.commands.main import main  # noqa: E402
from harness.store.attempts import AttemptRecord, Diagnostics  # noqa: E402
from harness.store.ledger import Row  # noqa: E402

CHARS_PER_TOKEN = 3.5
MODEL = CLAUDE_DEFAULT  # what `--agent claude` uses, so the estimates price what the ledger bills
NOTES_OUT_TOKENS = 1_200  # a reflection's answer: notes of at most 4,000 characters


def toy_repo(where: Path) -> Path:
    repo = where / "repo"
    (repo / "experiments").mkdir(parents=True)
    shutil.copytree(ROOT / "tests" / "toy" / "const", repo / "experiments" / "toy")
    shutil.copy2(ROOT / "program.md", repo / "program.md")
    (repo / ".gitignore").write_text("/results/\n/.autoresearch/\n__pycache__/\n")
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "toy"]):
        subprocess.run(["git", *args], cwd=repo, check=True, env={**os.environ, **IDENTITY})
    return repo


IDENTITY = {
    "GIT_AUTHOR_NAME": "bench", "GIT_AUTHOR_EMAIL": "b@example.com",
    "GIT_COMMITTER_NAME": "bench", "GIT_COMMITTER_EMAIL": "b@example.com",
}  # fmt: skip


def night(repo: Path, fake: FakeLLM, agent: str, *args: str, **env: str) -> list[dict[str, str]]:
    os.chdir(repo)
    for name in [n for n in os.environ if n.startswith(("ANTHROPIC_", "OPENAI_"))]:
        del os.environ[name]
    os.environ.update(IDENTITY)
    os.environ.update(AUTORESEARCH_CACHE=str(repo.parent / "cache"), AUTORESEARCH_RETRY_BASE="0.01", **env)
    if agent == "claude":
        os.environ.update(ANTHROPIC_API_KEY="sk-ant-bench-0123456789", ANTHROPIC_BASE_URL=fake.anthropic_url)
    else:
        os.environ.update(OPENAI_API_KEY="sk-bench-0123456789", OPENAI_BASE_URL=fake.openai_url)
    code = main(["run", "--device", "cpu", "--agent", agent, "--tag", "b", *args])
    assert code == 0, code
    lines = (repo / "results" / "b.tsv").read_text().splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=False)) for line in lines[1:]]


def bench_dups(experiments: int) -> None:
    print(
        "| SDK | attempts | LLM requests | runs started | repeats sent back (no run) | rows `duplicate of #n` |"
    )
    print("|---|---|---|---|---|---|")
    same = (
        "Description: raise the constant\nexperiments/toy/train.py\n<<<<<<< SEARCH\nVAL_BPB = 1.000000\n"
        "=======\nVAL_BPB = 1.100000\n>>>>>>> REPLACE\n"
    )
    for agent in ("claude", "openai"):
        with tempfile.TemporaryDirectory() as tmp:
            repo = toy_repo(Path(tmp))
            with FakeLLM(responder=lambda body: reply(same, delay=0.1)) as fake:
                rows = night(
                    repo, fake, agent, "--max-experiments", str(experiments), AUTORESEARCH_PIPELINE_DEPTH="3"
                )
                requests = len(fake.completion_requests())
                refused = sum(
                    "Your change is the same as" in prompt_text(r.body) for r in fake.completion_requests()
                )
            logs = list((repo / "results" / "b" / "runs").glob("*.log"))
            started = len({p.name.split(".")[0] for p in logs}) - 1  # attempts that ran, baseline excluded
            dups = sum(r["reason"].startswith("duplicate of #") for r in rows)
            print(f"| {agent} | {len(rows) - 1} | {requests} | {started} | {refused} | {dups} |")


def history(n: int) -> tuple[list[Row], dict[int, AttemptRecord]]:
    rows, records = [], {}
    for i in range(n + 1):
        status = "keep" if i == 0 or i % 15 == 0 else ("crash" if i % 8 == 0 else "discard")
        metric = 0.0 if status == "crash" else 1.0 - i / 1e4
        desc = (
            "baseline"
            if i == 0
            else f"attempt {i}: change the schedule and the width of the MLP, try variant {i}"
        )
        extra = {
            "n": str(i),
            "reason": "exception: RuntimeError: CUDA out of memory" if status == "crash" else "",
        }
        rows.append(Row(f"{i:07x}", metric, 44.0, status, desc, extra))
        diag = Diagnostics(953, 1.66e6, 39.8, 44.0, 21.0, 300.1, 25.3, 350.0,
                           [(5.0 * k, 6.0 - 0.12 * k) for k in range(1, 21)])  # fmt: skip
        summary: dict[str, float | str] = {"val_bpb": metric, "training_seconds": 300.1, "total_seconds": 325.9,
                   "peak_vram_mb": 45060.2, "mfu_percent": 39.8, "total_tokens_M": 499.6, "num_steps": 953.0,
                   "num_params_M": 50.3, "depth": 8.0, "tokens_per_sec": 1.66e6}  # fmt: skip
        records[i] = AttemptRecord(i, status, desc, metric=None if status == "crash" else metric,
                                   diagnostics=diag, summary=summary, note="an insight worth a line " * 4)  # fmt: skip
    return rows, records


def context(n: int) -> Context:
    rows, records = history(n)
    train = (ROOT / "experiments" / "gpt" / "train.py").read_text()
    diff = "@@ -40,3 +40,3 @@\n-WARMUP_RATIO = 0.0\n+WARMUP_RATIO = 0.05\n" * 6
    return Context(
        program=(ROOT / "program.md").read_text(), files={"experiments/gpt/train.py": train}, history=rows,
        budget_seconds=300, device="cuda", hardware="1x NVIDIA H100 80GB HBM3", notes="- a note line\n" * 800,
        records=records, near_misses=tuple(NearMiss(k, "discard", 0.999, "warmup", diff) for k in range(3)),
        in_flight=(InFlight("#9 running", "swiglu"), InFlight("queued to run next", "rope 50k")), writing=(2, 3),
    )  # fmt: skip


def bench_prompt() -> None:
    price_in, price_out = PriceTable.load().lookup(MODEL, provider="anthropic") or (2.0, 10.0)
    print(
        f"| attempts | proposal prompt chars | ~tokens | of which history | reflection prompt chars | ~tokens | reflection cost ({MODEL}) |"
    )
    print("|---|---|---|---|---|---|---|")
    for n in (1, 10, 25, 50, 100, 150, 200):
        ctx = context(n)
        p, r = build_prompt(ctx, env={}), build_reflection_prompt(ctx, env={})
        hist = p.user.split("# History of this run")[1].split("# Near misses")[0]
        tokens, rtokens = p.chars / CHARS_PER_TOKEN, r.chars / CHARS_PER_TOKEN
        cost = (rtokens * price_in + NOTES_OUT_TOKENS * price_out) / 1e6
        print(
            f"| {n} | {p.chars:,} | {tokens:,.0f} | {len(hist):,} | {r.chars:,} | {rtokens:,.0f} | ${cost:.4f} |"
        )


def bench_reflect(experiments: int, every: int, delay: float) -> None:
    lock = threading.Lock()
    k = iter(range(10**6))
    calls: list[tuple[str, int, int, int]] = []  # (kind, prompt chars, input tokens, output tokens)

    def respond(body: dict[str, Any]) -> Any:
        text = prompt_text(body)
        size = len(system_text(body)) + len(text)
        tokens = int(size / CHARS_PER_TOKEN)
        with lock:
            i = next(k)
        if "Rewrite the research notes from the history" in text:
            notes = "## Insights\n" + "".join(
                f"- insight {j}: steps {j} helps or not (#{j})\n" for j in range(60)
            )
            calls.append(("reflect", size, tokens, len(notes) // 4))
            return reply(
                f"```markdown\n{notes}```", input_tokens=tokens, output_tokens=len(notes) // 4, delay=delay
            )
        calls.append(("propose", size, tokens, 60))
        edit = (
            f"Description: steps {i}\nNote: attempt {i} tried steps\nexperiments/toy/train.py\n<<<<<<< SEARCH\n"
            f"STEPS = 4\n=======\nSTEPS = {5 + i}\n>>>>>>> REPLACE\n"
        )
        return reply(edit, input_tokens=tokens, output_tokens=60)

    with tempfile.TemporaryDirectory() as tmp:
        repo = toy_repo(Path(tmp))
        started = time.monotonic()
        with FakeLLM(responder=respond) as fake:
            rows = night(
                repo, fake, "claude", "--max-experiments", str(experiments), "--reflect-every", str(every),
                "--judge", "strict", AUTORESEARCH_PIPELINE_DEPTH="0",
            )  # fmt: skip
        wall = time.monotonic() - started
        notes = (repo / "results" / "b" / "notes.md").read_text()
    price_in, price_out = PriceTable.load().lookup(MODEL, provider="anthropic") or (2.0, 10.0)
    reflections = [size for kind, size, _, _ in calls if kind == "reflect"]
    proposals = [size for kind, size, _, _ in calls if kind == "propose"]
    billed = sum((i * price_in + o * price_out) / 1e6 for kind, _, i, o in calls if kind == "reflect")
    cost = sum((s / CHARS_PER_TOKEN * price_in + NOTES_OUT_TOKENS * price_out) / 1e6 for s in reflections)
    spent = sum(float(r["cost_usd"] or 0) for r in rows)
    print(json.dumps({
        "attempts": len(rows) - 1, "reflections": len(reflections),
        "reflection_prompt_chars": reflections, "proposal_prompt_chars_mean": sum(proposals) // max(1, len(proposals)),
        "reflection_cost_usd_billed": round(billed, 4), "ledger_cost_usd": round(spent, 4),
        "reflection_share_of_ledger": round(billed / spent, 3) if spent else None,
        f"reflection_cost_usd_at_{NOTES_OUT_TOKENS}_output_tokens": round(cost, 4),
        "notes_chars": len(notes), "reflection_reply_delay_s": delay, "night_wall_s": round(wall, 1),
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("dups", "prompt", "reflect"))
    parser.add_argument("--experiments", type=int, default=0, help="attempts (dups: 9, reflect: 40)")
    parser.add_argument("--every", type=int, default=10, help="reflect: --reflect-every")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="reflect: seconds the fake takes to answer a reflection"
    )
    args = parser.parse_args()
    if args.what == "dups":
        bench_dups(args.experiments or 9)
    elif args.what == "prompt":
        bench_prompt()
    else:
        bench_reflect(args.experiments or 40, args.every, args.delay)
