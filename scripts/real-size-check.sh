#!/usr/bin/env bash
# Real sizes: a model with Qwen2.5-0.5B's exact shape (vocabulary 151,936, d 896, 24 layers, 14 heads
# with 2 KV heads, d_ff 4864, tied embeddings, q/k/v biases, bf16 on disk, rope_theta 1e6, RMS eps 1e-6)
# with random weights and a real tokenizer, then every step a user runs on it, each under
# /usr/bin/time -v: inspect, convert (sparse and drop, 8 experts, top-2), analyze (weights; with a few
# probe records and the base), eval of the dense model and of the MoE (float32 and bf16), and one
# training step of the dense model. Writes WORK/results.md: wall time, peak RSS and output size per step.
#
# usage: scripts/real-size-check.sh [WORK]   (default /work/realsize; needs ~20 GB of disk and ~14 GB
#        of free memory; run nothing else heavy meanwhile: the steps run one at a time)
# env:   UPCYCLE (default build/realsize/app/upcycle), TOKENIZER (a folder with tokenizer.json and
#        tokenizer_config.json; default build/realsize/tests/hf_tokenizers/qwen3, Qwen2.5's vocabulary),
#        KEEP=1 keeps the outputs (default: each is removed once no later step needs it).
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-/work/realsize}
UPCYCLE=${UPCYCLE:-build/realsize/app/upcycle}
TOKENIZER=${TOKENIZER:-build/realsize/tests/hf_tokenizers/qwen3}
KEEP=${KEEP:-0}
[ -x "$UPCYCLE" ] || { echo "no upcycle binary at $UPCYCLE (build first, or set UPCYCLE)" >&2; exit 1; }
[ -f "$TOKENIZER/tokenizer.json" ] || { echo "no tokenizer.json in $TOKENIZER (set TOKENIZER)" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
mkdir -p "$WORK"
rm -rf "$WORK/dense" "$WORK/moe-sparse" "$WORK/moe-drop" "$WORK/train" "$WORK/logs"
mkdir -p "$WORK/logs"
RESULTS="$WORK/results.md"

# A few instruction records in `messages` form: the model's chat template (Qwen's) renders them.
DATA="$WORK/few.jsonl"
cat > "$DATA" <<'EOF'
{"messages": [{"role": "user", "content": "What is 12 + 30?"}, {"role": "assistant", "content": "42"}], "domain": "arithmetic"}
{"messages": [{"role": "user", "content": "Sort the letters: d b a c"}, {"role": "assistant", "content": "a b c d"}], "domain": "sorting"}
{"messages": [{"role": "system", "content": "You answer briefly."}, {"role": "user", "content": "Reverse the word 'upcycle'."}, {"role": "assistant", "content": "elcycpu"}], "domain": "reversing"}
{"messages": [{"role": "user", "content": "How many vowels are in 'mixture of experts'?"}, {"role": "assistant", "content": "6"}], "domain": "counting"}
{"messages": [{"role": "user", "content": "Convert 3 km to metres."}, {"role": "assistant", "content": "3000 m"}], "domain": "units"}
{"messages": [{"role": "user", "content": "Are the brackets balanced: (()[])?"}, {"role": "assistant", "content": "yes"}], "domain": "brackets"}
{"messages": [{"role": "user", "content": "Shift each letter of 'abc' by one."}, {"role": "assistant", "content": "bcd"}], "domain": "cipher"}
{"messages": [{"role": "user", "content": "What is 7 times 8?"}, {"role": "assistant", "content": "56"}], "domain": "arithmetic"}
EOF

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
flags=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -cx 'avx512_bf16' || true)
{
  echo "# Real-size check ($(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  echo "CPU: $cpu, $(nproc) cores, avx512_bf16: $([ "$flags" -gt 0 ] && echo yes || echo no);" \
       "memory $(free -g | awk '/^Mem:/ {print $2}') GB; $("$UPCYCLE" version 2>/dev/null | head -1)"
  echo
  echo "| step | command | wall | max RSS | output |"
  echo "| --- | --- | --- | --- | --- |"
} > "$RESULTS"

# step NAME OUTPUT -- upcycle ARGS...: runs under /usr/bin/time -v, appends a row.
step() {
  local name=$1 out=$2
  shift 3
  local log="$WORK/logs/$name.log"
  echo "== $name: upcycle $*"
  if ! /usr/bin/time -v "$UPCYCLE" "$@" > "$log.out" 2> "$log"; then
    echo "   FAILED (see $log, $log.out)"; tail -5 "$log"
    echo "| $name | \`upcycle $*\` | failed | | |" >> "$RESULTS"
    return 1
  fi
  local wall rss size="-"
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$log")
  rss=$(awk -F': ' '/Maximum resident set size/ {printf "%.2f GB", $2 / 1048576}' "$log")
  [ "$out" != "-" ] && [ -e "$out" ] && size=$(du -sh --apparent-size "$out" | cut -f1)
  echo "   wall $wall, max RSS $rss, output $size"
  tail -3 "$log.out" | sed 's/^/   | /'
  echo "| $name | \`upcycle ${*//$WORK/\$W}\` | $wall | $rss | $size |" >> "$RESULTS"
}

step create "$WORK/dense" -- create --out "$WORK/dense" --arch qwen2 --vocab 151936 --hidden 896 --ff 4864 \
  --layers 24 --heads 14 --kv-heads 2 --tie --dtype bf16 --rope-theta 1000000 --rms-eps 1e-6 \
  --max-positions 32768 --tokenizer "$TOKENIZER" --seed 0
step inspect-dense - -- inspect "$WORK/dense"
step convert-sparse "$WORK/moe-sparse" -- convert --method sparse --base "$WORK/dense" --experts 8 --top-k 2 \
  --out "$WORK/moe-sparse"
step inspect-moe - -- inspect "$WORK/moe-sparse"
[ "$KEEP" = 1 ] || rm -rf "$WORK/moe-sparse"
step convert-drop "$WORK/moe-drop" -- convert --method drop --ratio 0.5 --base "$WORK/dense" --experts 8 --top-k 2 \
  --out "$WORK/moe-drop"
step analyze - -- analyze --model "$WORK/moe-drop"
step analyze-data-base - -- analyze --model "$WORK/moe-drop" --base "$WORK/dense" --data "$DATA" --max-records 8
step eval-dense - -- eval --model "$WORK/dense" --data "$DATA"
step eval-dense-bf16 - -- eval --model "$WORK/dense" --data "$DATA" --dtype bf16
step eval-moe-bf16 - -- eval --model "$WORK/moe-drop" --data "$DATA" --dtype bf16
step eval-moe - -- eval --model "$WORK/moe-drop" --data "$DATA"
[ "$KEEP" = 1 ] || rm -rf "$WORK/moe-drop"
step train-dense "$WORK/train" -- train --model "$WORK/dense" --data "$DATA" --out "$WORK/train" --max-steps 1 \
  --batch-size 1 --max-length 128 --warmup 0
[ "$KEEP" = 1 ] || rm -rf "$WORK/train" "$WORK/dense"
echo
cat "$RESULTS"
