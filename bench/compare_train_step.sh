#!/usr/bin/env bash
# peel's standard training step against PyTorch's, measured in the same run, alternating the two.
#
#   bench/compare_train_step.sh [--rounds N] [--threads T] [--batch B] [--norm NORM]
#                               [--bcn-batch-part batch|estimated] [--peel PATH] [MODEL[:WIDTH] ...]
#
# Models default to: small_cnn vgg11:0.25 resnet18:0.25. Each round runs, for each model, one fresh
# process of `peel bench train-step --model M [--width W] --batch B --threads T --norm N` and one of
# bench/pytorch_train_step.py with the same settings (which goes first alternates by round). Both
# print one JSON object as their last stdout line with images_per_sec and peak_rss_mb. The script
# prints the per-round figures, then per model the medians over rounds and the ratios
# peel/PyTorch, and one JSON line per model. Without python3-torch it reports peel alone.
# --norm (default bn): docs/normalization.md; bench/pytorch_train_step.py writes each norm in PyTorch
# from the official code's definitions.
# Environment: PEEL_BIN (peel binary, default build/peel), PEEL_PYTHON (default /usr/bin/python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
rounds=3
threads=2
batch=128
norm=bn
bcn_batch_part=batch
peel="${PEEL_BIN:-$root/build/peel}"
models=()

usage() { sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
while (($#)); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --batch) batch="$2"; shift 2 ;;
    --norm) norm="$2"; shift 2 ;;
    --bcn-batch-part) bcn_batch_part="$2"; shift 2 ;;
    --peel) peel="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "compare_train_step.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *) models+=("$1"); shift ;;
  esac
done
((${#models[@]})) || models=(small_cnn vgg11:0.25 resnet18:0.25)
for n in "$rounds" "$threads" "$batch"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "compare_train_step.sh: '$n' is not a positive integer" >&2; exit 2; }
done
[[ "$norm" =~ ^(bn|gn|ln|gn\+ws|bcn\+ws|frn|wn|none)$ ]] || { echo "compare_train_step.sh: --norm '$norm' is not one of bn gn ln gn+ws bcn+ws frn wn none" >&2; exit 2; }
[[ "$bcn_batch_part" =~ ^(batch|estimated)$ ]] || { echo "compare_train_step.sh: --bcn-batch-part '$bcn_batch_part' is not batch or estimated" >&2; exit 2; }
[[ -x "$peel" ]] || { echo "compare_train_step.sh: peel binary '$peel' not found (build it, or pass --peel / PEEL_BIN)" >&2; exit 2; }

python="${PEEL_PYTHON:-/usr/bin/python3}"  # Debian's python3, which has python3-torch
[[ -x "$python" ]] || python="$(command -v python3 || true)"
have_torch=0
if [[ -n "$python" ]] && "$python" -c 'import torch' 2>/dev/null; then
  have_torch=1
else
  echo "note: python3-torch is not installed; measuring peel only" >&2
fi

# json_field JSON KEY: one value of a flat JSON object (jq when installed, else Python).
json_field() {
  if command -v jq >/dev/null; then
    jq -er --arg k "$2" '.[$k]' <<<"$1"
  elif [[ -n "$python" ]]; then
    "$python" -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"
  else
    echo "compare_train_step.sh: need jq or python3 to read JSON" >&2; return 1
  fi
}

median() { sort -g | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# run NAME CMD...: runs one measurement, prints its last stdout line (the JSON object).
run() {
  local name="$1" out err status=0
  shift
  err="$(mktemp)"
  out="$("$@" 2>"$err")" || status=$?
  if ((status != 0)) || [[ "$(tail -n 1 <<<"$out")" != \{* ]]; then
    echo "compare_train_step.sh: $name failed (exit $status): $*" >&2
    tail -n 20 "$err" >&2
    rm -f "$err"
    exit 1
  fi
  rm -f "$err"
  tail -n 1 <<<"$out"
}

load="$(cut -d ' ' -f 1 /proc/loadavg)"
echo "# $(nproc) cores, load average $load, threads $threads, batch $batch, norm $norm, rounds $rounds"
if awk -v l="$load" 'BEGIN {exit !(l > 0.5)}'; then
  echo "# warning: the machine is busy; with threads competing for the cores the figures drop sharply" >&2
fi

declare -A rate rss
json_lines=""
for ((r = 1; r <= rounds; r++)); do
  for spec in "${models[@]}"; do
    model="${spec%%:*}"
    width_args=()
    [[ "$spec" == *:* ]] && width_args=(--width "${spec#*:}")
    peel_cmd=("$peel" bench train-step --model "$model" "${width_args[@]}" --batch "$batch" --threads "$threads"
              --norm "$norm" --bcn-batch-part "$bcn_batch_part")
    torch_cmd=("$python" "$here/pytorch_train_step.py" --model "$model" "${width_args[@]}" --batch "$batch" --threads "$threads"
               --norm "$norm" --bcn-batch-part "$bcn_batch_part")
    order=(peel torch)
    ((r % 2 == 0)) && order=(torch peel)
    for who in "${order[@]}"; do
      [[ "$who" == torch && $have_torch == 0 ]] && continue
      if [[ "$who" == peel ]]; then json="$(run peel "${peel_cmd[@]}")"; else json="$(run pytorch "${torch_cmd[@]}")"; fi
      ips="$(json_field "$json" images_per_sec)"
      mb="$(json_field "$json" peak_rss_mb)"
      rate["$spec,$who"]+="$ips "
      rss["$spec,$who"]+="$mb "
      printf '# round %d  %-16s %-7s %10.1f images/s  %8.1f MB\n' "$r" "$spec" "$who" "$ips" "$mb"
    done
  done
done

printf '\n%-16s %14s %14s %8s %10s %10s %8s\n' model peel_img/s torch_img/s speedup peel_MB torch_MB mem
for spec in "${models[@]}"; do
  p_rate="$(tr ' ' '\n' <<<"${rate[$spec,peel]}" | grep . | median)"
  p_rss="$(tr ' ' '\n' <<<"${rss[$spec,peel]}" | grep . | median)"
  if ((have_torch)); then
    t_rate="$(tr ' ' '\n' <<<"${rate[$spec,torch]}" | grep . | median)"
    t_rss="$(tr ' ' '\n' <<<"${rss[$spec,torch]}" | grep . | median)"
    speedup="$(awk -v a="$p_rate" -v b="$t_rate" 'BEGIN {printf "%.3f", a / b}')"
    mem="$(awk -v a="$p_rss" -v b="$t_rss" 'BEGIN {printf "%.3f", a / b}')"
  else
    t_rate=null t_rss=null speedup=null mem=null
  fi
  printf '%-16s %14s %14s %8s %10s %10s %8s\n' "$spec" "$p_rate" "$t_rate" "$speedup" "$p_rss" "$t_rss" "$mem"
  json_lines+="{\"model\": \"${spec%%:*}\", \"width\": $([[ "$spec" == *:* ]] && echo "${spec#*:}" || echo null), \"threads\": $threads, \"batch\": $batch, \"norm\": \"$norm\", \"rounds\": $rounds, \"peel_images_per_sec\": $p_rate, \"torch_images_per_sec\": $t_rate, \"speedup\": $speedup, \"peel_peak_rss_mb\": $p_rss, \"torch_peak_rss_mb\": $t_rss, \"rss_ratio\": $mem}"$'\n'
done
printf '\n%s' "$json_lines"
