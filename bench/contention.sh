#!/usr/bin/env bash
# peel's training step when the cores are shared (docs/performance.md, "On a busy machine"):
# per round, one `--threads 2` step alone; two `--threads 1` steps side by side; one `--threads 2`
# step beside a CPU-bound shell loop. small_cnn, batch 128; prints images/s.
#   bench/contention.sh [ROUNDS]   (default 3; PEEL_BIN: peel binary, default build/peel)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
peel="${PEEL_BIN:-build/peel}"
step() { "$peel" bench train-step --model small_cnn --batch 128 --warmup 2 --repetitions 5 --steps 5 "$@" | tail -1; }
ips() { python3 -c 'import json,sys; print(round(json.loads(sys.stdin.read())["images_per_sec"], 1))'; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for ((r = 1; r <= rounds; r++)); do
  echo "round $r"
  echo "  alone, --threads 2:            $(step --threads 2 | ips)"
  step --threads 1 >"$tmp/a" & a=$!
  step --threads 1 >"$tmp/b" & b=$!
  wait "$a" "$b"
  echo "  two side by side, --threads 1: $(ips <"$tmp/a") $(ips <"$tmp/b")"
  (while :; do :; done) & hog=$!
  echo "  beside a busy loop, --threads 2: $(step --threads 2 | ips)"
  kill "$hog"; wait "$hog" 2>/dev/null || true
done
