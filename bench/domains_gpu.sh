#!/usr/bin/env bash
# One full run of each new experiment on the GPU machine, through the harness as a night runs it
# (sandbox, guard, evaluator), one function per experiment, each runnable alone in one <= 10-minute
# device call:
#
#   bash bench/domains_gpu.sh conv_lm      the conv-lm baseline at the 300 s budget on a `text:`
#                                          corpus built like bench/gpt_device.sh's (~7 min)
#   bash bench/domains_gpu.sh gpt_same     the gpt baseline on the same corpus and machine (~7 min),
#                                          for an equal-budget comparison with conv_lm
#   bash bench/domains_gpu.sh kernel       the kernel experiment: the gpu tests, a replay night
#                                          (baseline, a look-ahead kernel, a zeros kernel, a wider
#                                          tile), then a search night while time is left (~8 min)
#   bash bench/domains_gpu.sh arith_cot    arith-cot: one baseline run (BUDGET, default 300 s) on 1 GPU
#   bash bench/domains_gpu.sh finetune     finetune: build the pretrained checkpoint (prepare --base-model),
#                                          then one baseline run (BUDGET, default 240 s) under torchrun on
#                                          every visible GPU (2 on the x2 machine)
#
# The machine has no network: carry .whl/ (the harness's pure-Python dependencies, as for
# bench/gpt_device.sh) and .dev/ (bubblewrap and libcap2 .deb files: the sandbox); torch and
# triton are the machine's own. Results go under $OUT/<function>/ (TSV, run logs, summary.txt).
set -u
ROOT=$(pwd)
OUTD=${OUT:-/tmp/domains_out}
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/domains_cache
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@localhost GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@localhost
CORPUS=/tmp/gpt_corpus
REPO=/tmp/domains_repo

setup() {  # wheels, bubblewrap, and a git repository holding this tree (the harness needs one)
  if [ -d .whl ] && [ ! -d /tmp/site ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  fi
  export PYTHONPATH=/tmp/site
  if ls .dev/bubblewrap_*.deb >/dev/null 2>&1 && ! command -v bwrap >/dev/null; then
    mkdir -p /tmp/bw && for deb in .dev/bubblewrap_*.deb .dev/libcap2_*.deb; do dpkg -x "$deb" /tmp/bw; done
    export PATH=/tmp/bw/usr/bin:$PATH
    export LD_LIBRARY_PATH=/tmp/bw/lib/x86_64-linux-gnu:/tmp/bw/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  fi
  rm -rf "$REPO" && mkdir -p "$REPO"
  cp -r constants.py program.md pyproject.toml prepare harness experiments "$REPO"/
  if command -v git >/dev/null; then
    (cd "$REPO" && git init -q -b main && printf '/results/\n/.autoresearch/\n__pycache__/\n' > .gitignore \
      && git add -A && git commit -qm "bench tree")
  else
    echo "no git on this machine: the runs are started by hand (no harness, no sandbox, no TSV)"
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'
  echo "bwrap: $(command -v bwrap || echo missing) | date: $(date -u +%FT%TZ)"
}

corpus() {  # the gpt bench's `text:` corpus: the machine's own installed Python sources
  python3 bench/gpu_night.py corpus --out "$CORPUS"
  (cd "$REPO" && python3 -m prepare --dataset "text:$CORPUS" --max-chars 50000000 --no-progress)
}

collect() {  # $1: function name, $2: tag
  local dest="$OUTD/$1"
  mkdir -p "$dest"
  cp "$REPO/results/$2.tsv" "$dest/" 2>/dev/null
  cp -r "$REPO/results/$2/runs" "$dest/runs" 2>/dev/null
  python3 - "$REPO/results/$2.tsv" <<'EOF' | tee -a "$dest/summary.txt"
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
metric = list(rows[0])[1] if rows else "?"
for r in rows:
    s = json.loads(r["summary"]) if r.get("summary") else {}
    print(f"#{r['n']} {r['status']:7s} {metric}={r[metric]} steps={r['num_steps']} tok/s={r['tokens_per_s']} "
          f"training_s={r['training_s']} wall_s={r['wall_s']} probes={s.get('causal_probes', '-')} "
          f"max_diff={s.get('causal_max_diff', '-')} | {r['description']} | {r['reason']}")
EOF
}

by_hand() {  # no git (the harness needs a repository): $1 experiment; the train file, its evaluator right after
  (cd "$REPO/experiments/$1" && PYTHONPATH="/tmp/site:$REPO" AUTORESEARCH_DEVICE=cuda \
    AUTORESEARCH_DATASET="text:$CORPUS" timeout 560 python3 train.py) > "$OUTD/$1.by_hand.out" 2>&1
  echo "$1 by hand: exit $? after ${SECONDS}s"
  grep -E "^(val_bpb|training_seconds|total_seconds|num_steps|tokens_per_sec|causal_probes|eval_seconds):" \
    "$OUTD/$1.by_hand.out"
}

night() {  # $1: tag, then the run flags
  local tag=$1
  shift
  (cd "$REPO" && PYTHONPATH="/tmp/site:$REPO" python3 -m harness run --tag "$tag" --device cuda --sandbox auto "$@") \
    > "$OUTD/$tag.out" 2>&1
  echo "night $tag: exit $? after ${SECONDS}s"
  tail -5 "$OUTD/$tag.out"
}

conv_lm() {
  mkdir -p "$OUTD/conv_lm"
  { setup; corpus; } > "$OUTD/conv_lm/summary.txt" 2>&1  # not in a pipe: setup's exports must stay
  cat "$OUTD/conv_lm/summary.txt"
  command -v git >/dev/null || { by_hand conv-lm | tee -a "$OUTD/conv_lm/summary.txt"; return; }
  night conv --experiment conv-lm --dataset "text:$CORPUS" --agent search --max-experiments 0 \
    --judge strict --warmup off --budget "${BUDGET:-300}" | tee -a "$OUTD/conv_lm/summary.txt"
  collect conv_lm conv
}

gpt_same() {
  mkdir -p "$OUTD/gpt_same"
  { setup; corpus; } > "$OUTD/gpt_same/summary.txt" 2>&1
  cat "$OUTD/gpt_same/summary.txt"
  command -v git >/dev/null || { by_hand gpt | tee -a "$OUTD/gpt_same/summary.txt"; return; }
  night gpt --experiment gpt --dataset "text:$CORPUS" --agent search --max-experiments 0 \
    --judge strict --warmup off --budget "${BUDGET:-300}" | tee -a "$OUTD/gpt_same/summary.txt"
  collect gpt_same gpt
}

kernel() {
  mkdir -p "$OUTD/kernel"
  setup > "$OUTD/kernel/summary.txt" 2>&1
  cat "$OUTD/kernel/summary.txt"
  if python3 -c "import pytest" 2>/dev/null; then
    PYTHONPATH="/tmp/site:$ROOT" timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu \
      tests/experiments/test_kernel_experiment.py tests/experiments/test_conv_lm_experiment.py 2>&1 | tail -5 \
      | tee -a "$OUTD/kernel/summary.txt"
  fi
  local k=experiments/kernel/kernel.py
  python3 - "$OUTD/kernel/replies.jsonl" "$REPO/$k" "$k" <<'EOF'
import json, sys
out, path, rel = sys.argv[1], sys.argv[2], sys.argv[3]
src = open(path).read()
def reply(desc, old, new):
    assert old in src, old
    return {"reply": f"Description: {desc}\n{rel}\n<<<<<<< SEARCH\n{old}\n=======\n{new}\n>>>>>>> REPLACE\n"}
replies = [
    reply("read one token ahead (wrong)", "src = t - (K - 1 - k)", "src = t - (K - 1 - k) + 1"),
    reply("skip the work (wrong, fast)", "    B, T, C = x.shape\n    y = torch.empty_like(x)",
          "    return torch.zeros_like(x)\n    B, T, C = x.shape\n    y = torch.empty_like(x)"),
    reply("wider channel tile", "BLOCK_C = 64  # channels per tile", "BLOCK_C = 128  # channels per tile"),
]
open(out, "w").write("".join(json.dumps(r) + "\n" for r in replies))
EOF
  if ! command -v git >/dev/null; then  # by hand: the benchmark on the shipped kernel and each reply's
    python3 - "$OUTD/kernel/replies.jsonl" "$REPO" "$OUTD/kernel" <<'EOF' | tee -a "$OUTD/kernel/summary.txt"
import json, os, subprocess, sys
replies, repo, out = sys.argv[1:]
src = open(os.path.join(repo, "experiments/kernel/kernel.py")).read()
variants = [("shipped", src)]
for line in open(replies):
    text = json.loads(line)["reply"]
    old = text.split("<<<<<<< SEARCH\n")[1].split("\n=======\n")[0]
    new = text.split("\n=======\n")[1].split("\n>>>>>>> REPLACE")[0]
    variants.append((text.splitlines()[0][len("Description: "):], src.replace(old, new, 1)))
env = {**os.environ, "PYTHONPATH": "/tmp/site:" + repo}
for i, (name, code) in enumerate(variants):
    path = os.path.join(out, f"kernel_{i}.py")
    open(path, "w").write(code)
    cmd = [sys.executable, "-m", "prepare.kernel_bench", path]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150)
    keep = [ln for ln in p.stdout.splitlines() if ln.startswith(("gbps:", "@@autoresearch incorrect", "gate:"))]
    print(f"{name}: exit {p.returncode} | " + " | ".join(keep))
EOF
    return
  fi
  night kreplay --experiment kernel --agent "replay:$OUTD/kernel/replies.jsonl" --judge strict --warmup off \
    | tee -a "$OUTD/kernel/summary.txt"
  collect kernel kreplay
  if [ "$SECONDS" -lt 300 ]; then
    timeout $((560 - SECONDS)) bash -c "$(declare -f night); REPO=$REPO OUTD=$OUTD night ksearch --experiment kernel \
      --agent search --max-experiments 3 --judge strict --warmup off" | tee -a "$OUTD/kernel/summary.txt"
    collect kernel ksearch
  fi
}

# arith_cot and finetune: the harness from a throw-away git copy of this tree, an empty replay
# file (the baseline only); /tmp/site holds the carried wheels once setup has run
machine() {  # what ran it
  nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "gpus", torch.cuda.device_count())'
  python3 -c 'import peft, transformers; print("peft", peft.__version__, "transformers", transformers.__version__)' 2>&1 | tail -1
  date -u +"%Y-%m-%d %H:%M UTC"
}

# one_run NAME EXPERIMENT BUDGET: the baseline of EXPERIMENT through the harness (or by hand)
one_run() {
  local name=$1 exp=$2 budget=$3 dest="$OUTD/$1" t0
  mkdir -p "$dest"
  t0=$(date +%s)
  if [ "${MODE:-harness}" = harness ] && command -v git > /dev/null; then
    local repo=/tmp/domains_repo_$name
    rm -rf "$repo" && mkdir -p "$repo"
    cp -r constants.py prepare experiments program.md pyproject.toml "$repo"/
    (cd "$repo" && git init -q -b main && git add -A && git -c user.name=bench -c user.email=bench@localhost commit -qm bench)
    : > /tmp/empty_replies.jsonl
    (cd "$repo" && PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" python3 -m harness run --tag "$name" --experiment "$exp" \
      --device cuda --agent replay:/tmp/empty_replies.jsonl --baseline-runs 1 --warmup off --budget "$budget") \
      > "$dest/night.out" 2>&1
    echo "night exit code $?" >> "$dest/night.out"
    cp "$repo/results/$name.tsv" "$dest/" 2>/dev/null
    cp "$repo/results/$name/runs/"*.log "$dest/" 2>/dev/null
  else
    rm -rf /tmp/domains_hand_off && mkdir -p /tmp/domains_hand_off
    local cmd="python3 train.py"
    [ "$exp" = finetune ] && cmd="python3 -m prepare.launch train.py"
    (cd "experiments/$exp" && AUTORESEARCH_DEVICE=cuda AUTORESEARCH_DATASET=arithmetic AUTORESEARCH_TIME_BUDGET="$budget" \
      AUTORESEARCH_HAND_OFF=/tmp/domains_hand_off $cmd) > "$dest/run.log" 2>&1
    echo "run exit code $?" >> "$dest/run.log"
    AUTORESEARCH_DEVICE=cuda AUTORESEARCH_DATASET=arithmetic python3 -m prepare.evaluate_arith /tmp/domains_hand_off \
      > "$dest/evaluator.log" 2>&1
  fi
  echo "$name: $(( $(date +%s) - t0 )) s for the run and its evaluation (budget $budget s)" | tee -a "$dest/timing.txt"
  tail -25 "$dest"/night.out "$dest"/*.tsv "$dest"/evaluator.log 2>/dev/null
}

arith_cot() {
  mkdir -p "$OUTD/arith_cot"
  machine | tee "$OUTD/arith_cot/machine.txt"
  local t0; t0=$(date +%s)
  python3 -m prepare --dataset arithmetic --no-progress
  echo "prepare arithmetic: $(( $(date +%s) - t0 )) s" | tee "$OUTD/arith_cot/timing.txt"
  one_run arith_cot arith-cot "${BUDGET:-300}"
}

finetune() {
  mkdir -p "$OUTD/finetune"
  machine | tee "$OUTD/finetune/machine.txt"
  local t0; t0=$(date +%s)
  AUTORESEARCH_DEVICE=cuda python3 -m prepare --dataset arithmetic --base-model --no-progress
  echo "prepare arithmetic + base model: $(( $(date +%s) - t0 )) s" | tee "$OUTD/finetune/timing.txt"
  CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1} one_run finetune finetune "${BUDGET:-240}"
}

case "${1:-}" in
conv_lm | gpt_same | kernel) "$1" ;;
arith_cot | finetune) setup > /dev/null 2>&1; export PYTHONPATH="/tmp/site:$ROOT"; "$1" ;;
*)
  echo "usage: $0 conv_lm | gpt_same | kernel | arith_cot | finetune" >&2
  exit 2
  ;;
esac
