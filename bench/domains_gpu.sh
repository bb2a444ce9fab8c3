#!/usr/bin/env bash
# The GPU-machine runs of the other research domains, one full run per call (each <= 10 minutes).
#
#   bash bench/domains_gpu.sh arith_cot     arith-cot: one baseline run at the default budget (300 s) on 1 GPU
#   bash bench/domains_gpu.sh finetune      finetune: build the pretrained checkpoint (prepare --base-model),
#                                           then one baseline run (budget 240 s) under torchrun on 2 GPUs
#
# Each run goes through the harness as a person would start it (`autoresearch run` with an empty
# replay file: the baseline runs, in the sandbox when bubblewrap works, the metric from prepare's
# arith evaluator, and the night ends), in a throw-away git copy of this tree. Without git on the
# machine (or with MODE=direct) the train file and the evaluator are started by hand instead.
# BUDGET=<seconds> overrides the training budget. No network: wheels come from .whl/ when present
# (the harness's own dependencies; peft and transformers must be installed or in .whl/).
# Results under $OUT/<name>/: the TSV, the run's log (with the evaluator's output), timings.
set -u
OUTD=${OUT:-/tmp/domains_out}
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/domains_cache
mkdir -p "$OUTD"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

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
arith_cot) arith_cot ;;
finetune) finetune ;;
*)
  echo "usage: $0 arith_cot | finetune   (the other domains' functions live in the same file on their branch)" >&2
  exit 2
  ;;
esac
