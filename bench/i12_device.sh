#!/usr/bin/env bash
# Issue 12's GPU measurements (trust by isolation), shaped for a lease of <= 10-minute calls.
#
#   bash bench/i12_device.sh quick          ~8 min: the sandbox on this machine, the gpu tests of
#                                           the evaluator, the sandbox's and the hand-off's cost
#   bash bench/i12_device.sh sigma-start    starts, in the background, the night that measures the
#                                           default file's sigma at 300 s: one discarded warm-up
#                                           run, then 6 baseline runs (~45 min in all); returns at
#                                           ~9 min
#   bash bench/i12_device.sh sigma-wait S   waits at most S seconds more, then packs what exists
#                                           and, once the night is done, the judge table for its sigma
#
# Everything lands in $OUT (summary.txt, i12.tar.gz). The machine has no network: rustbpe (for
# prepare's tokenizer) travels as a wheel in .whl/, and bubblewrap, where the machine lacks it,
# as the binary .tools/bwrap (copied from a Debian/Ubuntu host's /usr/bin/bwrap).
set -u
OUTD=${OUT:-/tmp/i12_out}
WORK=/tmp/i12
CORPUS=/tmp/i12_corpus
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/i12_cache PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
mkdir -p "$WORK" "$OUTD"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
if ! command -v bwrap >/dev/null 2>&1 && [ -x .tools/bwrap ]; then
  export PATH=$PWD/.tools:$PATH
fi

pack() {
  tar -czf "$OUTD/i12.tar.gz" -C "$WORK" . 2>/dev/null
  for f in gpu.txt sandbox.txt pytest_gpu.txt bench_sandbox.txt bench_handoff.txt night.out sigma.txt; do
    [ -f "$WORK/$f" ] && { echo "== $f"; tail -n 60 "$WORK/$f"; }
  done > "$OUTD/summary.txt"
  cat "$OUTD/summary.txt"
}

case "${1:-}" in
quick)
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$WORK/gpu.txt"
  python3 -c 'from harness.integrity.sandbox import probe; print("sandbox:", probe())' | tee "$WORK/sandbox.txt"
  timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/prepare/test_evaluator.py \
    tests/experiments/test_gpt_experiment.py 2>&1 | tail -n 30 > "$WORK/pytest_gpu.txt"
  timeout 120 python3 bench/bench_sandbox.py --gpu --repeat 10 \
    --command "python -c 'import torch; print(torch.ones(1).cuda().sum().item())'" > "$WORK/bench_sandbox.txt" 2>&1
  timeout 150 python3 bench/bench_handoff.py --device cuda > "$WORK/bench_handoff.txt" 2>&1
  pack
  ;;
sigma-start)
  # a text: corpus from the installed packages' Python sources (offline), as bench/gpt_device.sh does
  python3 bench/gpu_night.py corpus --out "$CORPUS"
  python3 -m prepare --dataset "text:$CORPUS" --max-chars 50000000 --no-progress > "$WORK/prepare.txt" 2>&1
  # a repository of its own (a copy of this tree, one commit), so the night never touches this one
  rm -rf "$WORK/repo" && mkdir -p "$WORK/repo" && : > "$WORK/empty.jsonl"
  tar --exclude=./.git --exclude=./.whl --exclude=./.tools -cf - . | tar -xf - -C "$WORK/repo"
  export GIT_AUTHOR_NAME=lead GIT_AUTHOR_EMAIL=lead@localhost GIT_COMMITTER_NAME=lead GIT_COMMITTER_EMAIL=lead@localhost
  (cd "$WORK/repo" && git init -q && git add -A && git commit -qm "the tree under test")
  cd "$WORK/repo"
  setsid nohup python3 -m harness run --tag gpu-sigma --device cuda --budget 300 --dataset "text:$CORPUS" \
    --baseline-runs 6 --warmup on --sandbox on --agent "replay:$WORK/empty.jsonl" \
    > "$WORK/night.out" 2>&1 < /dev/null &
  echo $! > "$WORK/night.pid"
  cd - >/dev/null
  echo "night started"
  while [ "$SECONDS" -lt 540 ]; do sleep 5; done  # keep the call (and the lease) busy until then
  pack
  ;;
sigma-wait)
  end=$(( $(date +%s) + ${2:-540} ))
  tsv=$WORK/repo/results/gpu-sigma.tsv
  while [ "$(date +%s)" -lt "$end" ] && kill -0 "$(cat "$WORK/night.pid")" 2>/dev/null; do sleep 5; done
  if [ -f "$tsv" ] && grep -q "baseline" "$tsv"; then
    python3 - "$tsv" > "$WORK/sigma.txt" 2>&1 <<'EOF'
import csv, sys
for row in csv.DictReader(open(sys.argv[1]), delimiter="\t"):
    print({k: row.get(k) for k in ("n", "val_bpb", "status", "reason", "runs", "spread", "training_s",
                                   "num_steps", "startup_s", "tokens_per_s", "hardware")})
EOF
    grep -h "val_bpb\|num_steps\|training_seconds" "$WORK/repo/results/gpu-sigma/runs/0.warmup.log" >> "$WORK/sigma.txt" 2>/dev/null
    python3 bench/bench_noise.py --sigma-from "$tsv" --trials 10000 >> "$WORK/sigma.txt" 2>&1
  fi
  cp -r "$WORK/repo/results" "$WORK/results" 2>/dev/null
  pack
  ;;
*)
  echo "usage: $0 quick | sigma-start | sigma-wait SECONDS" >&2
  exit 2
  ;;
esac
