#!/usr/bin/env bash
# Data-parallel training on this machine's CPU (c10d, Gloo over loopback), in one run:
#  1. all-reduce: `upcycle bench allreduce --nproc 2` against torch.distributed's all_reduce from
#     Python (bench/allreduce_torch.py: the collective DDP issues), same sizes, same protocol, in
#     alternating rounds; per size the median time of each and the ratio torch / ours (> 1: ours faster);
#  2. step-time scaling: `upcycle bench train` of the same global batch at 1 process x 1 thread,
#     1 process x all cores, and N processes x (cores / N) threads, dense and 8-expert top-2 MoE;
#     tokens/s, and the scaling efficiency of N processes against N x the 1-thread process.
#
#   bash bench/dist_scaling.sh [--upcycle BIN] [--nproc N] [--rounds R] [--d-model D] [--d-ff F]
#
# Needs Debian's python3-torch for the peer (scripts/setup.sh installs it).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
upcycle= nproc=2 rounds=3 d=256 ff=688
while [ $# -gt 0 ]; do
  case "$1" in
    --upcycle) upcycle=$2; shift 2 ;;
    --nproc) nproc=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --d-model) d=$2; shift 2 ;;
    --d-ff) ff=$2; shift 2 ;;
    *) echo "dist_scaling.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
if [ -z "$upcycle" ]; then
  for c in "$root/build/bench/app/upcycle" "$root/build/release/app/upcycle"; do
    [ -x "$c" ] && upcycle=$c && break
  done
fi
[ -x "$upcycle" ] || { echo "dist_scaling.sh: build the CLI first (cmake --build --preset release)" >&2; exit 1; }
cores=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sizes=0.25,1,4,16,64

echo "== machine: $(lscpu | sed -n 's/^Model name: *//p'), $cores cores; $("$upcycle" version | tr '\n' ' ')"
echo "== 1. all-reduce over $nproc ranks (Gloo, sum, float32), median of 20 per round, $rounds rounds"
for r in $(seq 1 "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then
    "$upcycle" bench allreduce --nproc "$nproc" --sizes-mb $sizes --json > "$tmp/ours-$r.json"
    /usr/bin/python3 "$here/allreduce_torch.py" --nproc "$nproc" --sizes-mb $sizes --json > "$tmp/torch-$r.json"
  else
    /usr/bin/python3 "$here/allreduce_torch.py" --nproc "$nproc" --sizes-mb $sizes --json > "$tmp/torch-$r.json"
    "$upcycle" bench allreduce --nproc "$nproc" --sizes-mb $sizes --json > "$tmp/ours-$r.json"
  fi
done
/usr/bin/python3 - "$tmp" "$rounds" <<'PY'
import json, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
ours = [json.load(open(f"{tmp}/ours-{r}.json")) for r in range(1, rounds + 1)]
peer = [json.load(open(f"{tmp}/torch-{r}.json")) for r in range(1, rounds + 1)]
print(f"{'MB':>8} {'ours ms':>10} {'torch ms':>10} {'torch/ours':>11} {'ours bus GB/s':>14}")
for i, row in enumerate(ours[0]["rows"]):
    o = statistics.median(x["rows"][i]["seconds"] for x in ours)
    p = statistics.median(x["rows"][i]["seconds"] for x in peer)
    ratio = statistics.median(peer[k]["rows"][i]["seconds"] / ours[k]["rows"][i]["seconds"] for k in range(rounds))
    bus = statistics.median(x["rows"][i]["bus_gb_per_s"] for x in ours)
    print(f"{row['mb']:8.2f} {1e3 * o:10.3f} {1e3 * p:10.3f} {ratio:11.2f} {bus:14.2f}")
PY

echo "== 2. training steps, global batch 8 x 256 tokens, d $d, d_ff $ff, 4 layers (tokens/s, median of 6 steps)"
train() {  # label, args...
  local label=$1; shift
  "$upcycle" bench train --d-model "$d" --d-ff "$ff" --batch 8 --seq-len 256 --steps 6 --json "$@" > "$tmp/train.json"
  /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(f\"{sys.argv[2]:<34} {j['tokens_per_s']:10.0f} tok/s  MFU {100*j['mfu']:5.1f}% (world {j['world']}, {j['threads']} threads/rank)\")" "$tmp/train.json" "$label"
  /usr/bin/python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['tokens_per_s'])" "$tmp/train.json" > "$tmp/last"
}
per=$((cores / nproc)); [ "$per" -ge 1 ] || per=1
for model in "--experts 0:dense" "--experts 8 --top-k 2:moe E8 top-2"; do
  args=${model%%:*}; name=${model#*:}
  train "$name, 1 process x 1 thread" $args --threads 1; one=$(cat "$tmp/last")
  train "$name, 1 process x $cores threads" $args --threads "$cores"; all=$(cat "$tmp/last")
  train "$name, $nproc processes x $per threads" $args --nproc "$nproc" --threads "$per"; dp=$(cat "$tmp/last")
  /usr/bin/python3 -c "import sys; one,all_,dp,n=map(float,sys.argv[1:]); print(f'  {int(n)} processes vs 1 process x all cores: {dp/all_:.2f}x; scaling efficiency vs {int(n)} x the 1-thread process: {100*dp/(n*one):.0f}%')" "$one" "$all" "$dp" "$nproc"
done
