#!/usr/bin/env bash
# Reproduces the "demo data is learnable" figures of docs/RESULTS.md: pretrain a tiny byte-level
# Llama on the built-in corpus, instruction-tune it on the built-in data, and score exact-match
# accuracy per domain on held-out data. About 5 minutes on 2 cores.
set -euo pipefail
U=${UPCYCLE:-build/release/app/upcycle}
OUT=${1:-out/learnability}
mkdir -p "$OUT"
$U data generate --out "$OUT/sft.jsonl" --per-domain 300 --seed 1
$U data generate --out "$OUT/test.jsonl" --per-domain 40 --seed 999
$U pretrain --out "$OUT/pt" --max-steps 600 --documents 6000 --seed 0 --lr 3e-3 | tail -2
$U train --model "$OUT/pt/checkpoint-600" --data "$OUT/sft.jsonl" --out "$OUT/sft" --epochs 6 --batch-size 32 \
  --lr 2e-3 --save-every 0.25 | tail -2
echo "base model (pretrained only):"
$U eval --model "$OUT/pt/checkpoint-600" --data "$OUT/test.jsonl" --accuracy
echo "instruction-tuned:"
$U eval --model "$OUT/sft/checkpoint-396" --data "$OUT/test.jsonl" --accuracy
