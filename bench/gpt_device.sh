#!/usr/bin/env bash
# The GPU-machine side of bench/bench_gpt.py, shaped for a lease of <= 10-minute calls.
#
#   bash bench/gpt_device.sh start [VARIANTS|none] [UNTIL_S] [N_RUNS] synthetic throughput variants, then a `text:` corpus made
#                                               from the machine's own installed Python sources, then
#                                               3 full train.py runs started in the background
#   bash bench/gpt_device.sh wait SECONDS       wait for the background runs (at most SECONDS), then
#                                               pack everything under $OUT
#
# The machine has no network: rustbpe (for prepare's tokenizer) travels as a wheel in .whl/.
# Results: $OUT/gpt_bench.tar.gz (all JSON, logs, profiles) and $OUT/summary.txt.
set -u
OUTD=${OUT:-/tmp/gpt_out}
WORK=/tmp/gpt_bench
CORPUS=/tmp/gpt_corpus
export PYTHONUNBUFFERED=1 AUTORESEARCH_CACHE=/tmp/gpt_cache
mkdir -p "$WORK" "$OUTD"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi

pack() {
  tar -czf "$OUTD/gpt_bench.tar.gz" -C "$WORK" . 2>/dev/null
  { cat "$WORK"/pytest_gpu.txt 2>/dev/null; cat "$WORK"/synthetic.txt 2>/dev/null; cat "$WORK"/prepare.txt 2>/dev/null; cat "$WORK"/runs.out 2>/dev/null; } > "$OUTD/summary.txt"
  cat "$OUTD/summary.txt"
}

case "${1:-}" in
start)
  nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$WORK/gpu.txt"
  python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' | tee -a "$WORK/gpu.txt"
  if [ "${2:-}" != "none" ]; then
    python3 bench/bench_gpt.py synthetic --out "$WORK/syn" --variants "${2:-default,default-warm,whole}" \
      --steps 15 --profile --timeout 200 | tee "$WORK/synthetic.txt"
  fi

  # a text: corpus from the installed packages' Python sources (.txt files, since text:PATH reads
  # .txt/.md/.jsonl/.parquet), about 250 MB: enough that a 300 s run sees it a few times at most
  t0=$(date +%s)
  python3 bench/gpu_night.py corpus --out "$CORPUS"
  python3 -m prepare --dataset "text:$CORPUS" --max-chars 50000000 --no-progress
  echo "corpus + prepare: $(( $(date +%s) - t0 )) s" | tee "$WORK/prepare.txt"
  du -sh "$CORPUS" "$AUTORESEARCH_CACHE" | tee -a "$WORK/prepare.txt"

  setsid nohup python3 bench/bench_gpt.py runs --out "$WORK/runs" --n "${4:-3}" --dataset "text:$CORPUS" --budget 300 \
    > "$WORK/runs.out" 2>&1 < /dev/null &
  echo "runs started"
  while [ "$SECONDS" -lt "${3:-540}" ]; do sleep 5; done  # keep the call (and the lease) busy until then
  pack
  ;;
wait)
  end=$(( $(date +%s) + ${2:-500} ))
  while [ "$(date +%s)" -lt "$end" ] && ! grep -q "^val_bpb:" "$WORK/runs.out" 2>/dev/null; do sleep 5; done
  tail -3 "$WORK"/runs/run*.log 2>/dev/null
  [ -f bench/bench_evaluate.py ] && grep -q "^val_bpb:" "$WORK/runs.out" && \
    timeout 120 python3 bench/bench_evaluate.py > "$WORK/bench_evaluate.txt" 2>&1
  pack
  ;;
*)
  echo "usage: $0 start [VARIANTS] [SLEEP] | wait SECONDS" >&2
  exit 2
  ;;
esac
