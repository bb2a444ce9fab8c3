#!/usr/bin/env bash
# The lead's GPU session on one 4-GPU machine, in two device calls of <= 10 minutes (2026-11-28).
# Device time counts per machine, not per GPU, so independent measurements share one host:
#
#   GPU 0      bench/gpu_night.py: a one-GPU night (search agent, default noise judge, 60 s budget)
#   GPU 2,3    bench/gpu_night.py --gpus 2,3: the same night on two GPUs (the scaling figure), then
#              bench/domains_gpu.sh finetune under torchrun on those two GPUs, then the kernel
#              experiment on GPU 2 beside arith-cot on GPU 3
#   GPU 1      the chain: `pytest -m gpu`, bench/bench_kernels.py all, then conv-lm
#
#   bash bench/h200_session.sh one        installs, starts everything, returns a snapshot at ~560 s
#   bash bench/h200_session.sh two        stops the two-GPU night at ~250 s, starts the domains on
#                                         GPUs 2,3, returns a snapshot at ~560 s
#   bash bench/h200_session.sh three [S]  stops the one-GPU night after S seconds (default 360) and
#                                         packs everything
#
# The machine has no network: bench/device_env.sh installs what .whl/ and .dev/ carry.
# Every process that must outlive a call is started in a
# session of its own (setsid): the device tool keeps those until the machine goes back.
set -u
ROOT=$(pwd)
S=/tmp/sess
OUTD=${OUT:-/tmp/sess_out}
T0=$(date +%s)
mkdir -p "$S" "$OUTD"
export PYTHONUNBUFFERED=1

. "$ROOT/bench/device_env.sh"

pack() {  # everything so far: one tarball and one summary (the tool brings back <= 8 files)
  tar -czf "$OUTD/session.tar.gz" -C "$S" --exclude='*.bin' --exclude='*.pt' --exclude='*.pt2' \
    --exclude='site' --exclude='corpus' --exclude='*.parquet' . 2>/dev/null
  {
    echo "== elapsed $(( $(date +%s) - T0 )) s"; cat "$S"/machine.txt 2>/dev/null
    for f in "$S"/chain.out "$S"/gpus23.out "$S"/night1/report.txt "$S"/night2/report.txt; do
      [ -f "$f" ] && { echo "== $f"; tail -60 "$f"; }
    done
  } > "$OUTD/summary.txt"
  cp "$S"/night1/report.txt "$OUTD/night1_report.txt" 2>/dev/null
  cp "$S"/night2/report.txt "$OUTD/night2_report.txt" 2>/dev/null
  cp "$S"/kernels/kernels.json "$OUTD/kernels.json" 2>/dev/null
  ls -la "$OUTD"
}

chain() {  # GPU 1, one step after the other; each bounded so the chain ends inside the session
  export CUDA_VISIBLE_DEVICES=1
  echo "== pytest -m gpu $(date -u +%T)"
  timeout 180 python3 -m pytest -q -p no:cacheprovider -m gpu --continue-on-collection-errors \
    -o addopts="" tests 2>&1 | tail -40
  echo "== bench_kernels $(date -u +%T)"
  timeout 420 python3 bench/bench_kernels.py all --out "$S/kernels" 2>&1 | tail -60
  domains_tree
  echo "== domains conv_lm $(date -u +%T)"
  OUT="$S/domains" BUDGET=60 timeout 420 bash bench/domains_gpu.sh conv_lm 2>&1 | tail -30
  echo "== chain done $(date -u +%T)"
}

domains_tree() {  # the domains' script runs from a copy without .whl/: it installs nothing over the nights'
  if [ ! -d /tmp/dom_tree ]; then
    mkdir -p /tmp/dom_tree.part
    cp -r "$ROOT"/{constants.py,program.md,pyproject.toml,prepare,harness,experiments,bench,tests} /tmp/dom_tree.part/
    mv /tmp/dom_tree.part /tmp/dom_tree 2>/dev/null
  fi
  cd /tmp/dom_tree || exit 1
}

gpus23() {  # GPUs 2,3 once the two-GPU night is stopped: finetune on both, then one experiment each
  domains_tree
  echo "== domains finetune $(date -u +%T)"
  CUDA_VISIBLE_DEVICES=2,3 OUT="$S/domains" BUDGET=60 timeout 330 bash bench/domains_gpu.sh finetune 2>&1 | tail -30
  echo "== domains kernel + arith_cot $(date -u +%T)"
  CUDA_VISIBLE_DEVICES=2 OUT="$S/domains" timeout 420 bash bench/domains_gpu.sh kernel > "$S/kernel.out" 2>&1 &
  CUDA_VISIBLE_DEVICES=3 OUT="$S/domains" BUDGET=60 timeout 330 bash bench/domains_gpu.sh arith_cot > "$S/arith.out" 2>&1
  wait
  tail -30 "$S/kernel.out" "$S/arith.out"
  echo "== gpus23 done $(date -u +%T)"
}

case "${1:-}" in
one)
  environment
  { nvidia-smi --query-gpu=index,name,memory.total,clocks.max.sm --format=csv; date -u; nproc; } > "$S/machine.txt"
  install_wheels
  python3 -c 'import optuna, git, rustbpe, tenacity, pydantic, torch, triton; print("torch", torch.__version__, "triton", triton.__version__)' | tee -a "$S/machine.txt"
  # the default train file uses prepare.kernels: if they fail on this GPU, the nights measure the
  # plain file instead of crashing at their baseline (said in machine.txt)
  if CUDA_VISIBLE_DEVICES=0 timeout 150 python3 -m pytest -q -p no:cacheprovider -o addopts="" -m gpu \
      tests/prepare/test_kernels.py > "$S/kernels_precheck.txt" 2>&1; then
    echo "fused kernels: pass on this GPU" | tee -a "$S/machine.txt"
  else
    sed -i 's/^FUSED_KERNELS = True/FUSED_KERNELS = False/' "$ROOT/experiments/gpt/train.py"
    echo "fused kernels: FAILED the precheck; nights run FUSED_KERNELS = False" | tee -a "$S/machine.txt"
  fi
  setsid bash "$ROOT/bench/h200_session.sh" chain > "$S/chain.out" 2>&1 < /dev/null &
  # both nights build their corpus and prepare it at the same time (32+ cores); each returns once
  # its night runs in a session of its own
  CUDA_VISIBLE_DEVICES=0 python3 bench/gpu_night.py start --work /tmp/gn1 --out "$S/night1" --tag night1 \
    --budget 60 --experiments 40 > "$S/start1.out" 2>&1 &
  p1=$!
  python3 bench/gpu_night.py start --work /tmp/gn2 --out "$S/night2" --tag night2 \
    --budget 60 --experiments 40 --gpus 2,3 > "$S/start2.out" 2>&1 &
  wait "$p1" $!
  cat "$S/start1.out" "$S/start2.out"
  while [ $(( $(date +%s) - T0 )) -lt 555 ]; do sleep 5; done
  CUDA_VISIBLE_DEVICES=0 python3 bench/gpu_night.py collect --work /tmp/gn1 --out "$S/night1" > /dev/null 2>&1
  python3 bench/gpu_night.py collect --work /tmp/gn2 --out "$S/night2" > /dev/null 2>&1
  pack
  ;;
two)
  environment
  while [ $(( $(date +%s) - T0 )) -lt 250 ]; do sleep 5; done
  python3 bench/gpu_night.py stop --work /tmp/gn2 --out "$S/night2" 2>&1 | tail -40
  setsid bash "$ROOT/bench/h200_session.sh" gpus23 > "$S/gpus23.out" 2>&1 < /dev/null &
  while [ $(( $(date +%s) - T0 )) -lt 555 ]; do sleep 5; done
  CUDA_VISIBLE_DEVICES=0 python3 bench/gpu_night.py collect --work /tmp/gn1 --out "$S/night1" > /dev/null 2>&1
  pack
  ;;
three)
  environment
  while [ $(( $(date +%s) - T0 )) -lt "${2:-360}" ]; do sleep 5; done
  python3 bench/gpu_night.py stop --work /tmp/gn1 --out "$S/night1" 2>&1 | tail -40
  pack
  ;;
chain) environment; chain ;;
gpus23) environment; gpus23 ;;
*) echo "usage: $0 one|two|three [SECONDS]" >&2; exit 2 ;;
esac
