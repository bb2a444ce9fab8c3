#!/usr/bin/env bash
# The kill -9 campaign and the 1,000-experiment soak (bench/kill_campaign.py, bench/soak.py) on
# the GPU machine's CPUs (no GPU is used), in device calls of <= 10 minutes:
#
#   bash bench/harden_session.sh start [S]    installs, starts both in sessions of their own,
#                                             returns a snapshot after S seconds (default 540)
#   bash bench/harden_session.sh collect [S]  waits until both ended (at most S seconds, default
#                                             540) and returns their outputs
set -u
ROOT=$(pwd)
S=/tmp/harden
OUTD=${OUT:-/tmp/harden_out}
T0=$(date +%s)
mkdir -p "$S" "$OUTD"
export PYTHONUNBUFFERED=1
. "$ROOT/bench/device_env.sh"

snapshot() {
  { echo "== elapsed $(( $(date +%s) - T0 )) s"; cat "$S/machine.txt"
    for f in "$S"/kill.out "$S"/soak.out; do [ -f "$f" ] && { echo "== $f"; tail -40 "$f"; }; done
  } > "$OUTD/summary.txt"
  cp "$S"/kill.out "$S"/soak.out "$OUTD/" 2>/dev/null
  cat "$OUTD/summary.txt"
}

running() { pgrep -f "bench/(kill_campaign|soak).py" >/dev/null; }

case "${1:-}" in
start)
  environment
  install_wheels
  { date -u; nproc; git -C "$ROOT" log -1 --format='%h %s' 2>/dev/null; python3 --version
    command -v bwrap; } > "$S/machine.txt" 2>&1
  setsid python3 bench/kill_campaign.py --trials 100 --seed 18 --jobs 8 > "$S/kill.out" 2>&1 < /dev/null &
  setsid python3 bench/soak.py --experiments 1000 > "$S/soak.out" 2>&1 < /dev/null &
  while running && [ $(( $(date +%s) - T0 )) -lt "${2:-540}" ]; do sleep 5; done
  snapshot
  ;;
collect)
  environment
  while running && [ $(( $(date +%s) - T0 )) -lt "${2:-540}" ]; do sleep 5; done
  snapshot
  ;;
*) echo "usage: $0 start|collect [SECONDS]" >&2; exit 2 ;;
esac
