#!/usr/bin/env bash
# Run ON THE GPU MACHINE (see ../shared/docs/GPU.md): unpacks the carried Debian development packages
# (.deps/gpu, made by scripts/gpu-deps.sh) into a private prefix, builds the engine, the CLI, the tests
# and the benchmarks against PyTorch's LibTorch with the GUI off, runs the tests, then the benchmarks on
# CUDA. Logs and JSON go to $OUT (or out/gpu); a short table is printed last.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-out/gpu}
mkdir -p "$out"
prefix=$PWD/.deps/gpu-prefix
rm -rf "$prefix" && mkdir -p "$prefix"
for d in .deps/gpu/*.deb; do dpkg -x "$d" "$prefix"; done
torch_cmake=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
export PKG_CONFIG_PATH=$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig
export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
# The .pc files name /usr as their prefix: point them at ours.
for pc in sentencepiece libpcre2-8 libutf8proc; do
  sed -i "s|^prefix=.*|prefix=$prefix/usr|" "$prefix"/usr/lib/x86_64-linux-gnu/pkgconfig/$pc.pc
done
cmake -S . -B build/gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DUPCYCLE_BUILD_GUI=OFF -DUPCYCLE_ASAN_TESTS=OFF \
  -DCMAKE_PREFIX_PATH="$torch_cmake;$prefix/usr" -DCMAKE_CUDA_ARCHITECTURES=90 > "$out/configure.log" 2>&1 \
  || { tail -40 "$out/configure.log"; exit 1; }
cmake --build build/gpu -j "$(nproc)" > "$out/build.log" 2>&1 || { grep -m20 -B2 -A8 "error" "$out/build.log"; exit 1; }
(cd build/gpu && ctest -j 8 --output-on-failure > "$out/ctest.log" 2>&1) || true
tail -3 "$out/ctest.log"
cli=build/gpu/app/upcycle
$cli version | tee "$out/version.txt"
for shape in "256 688 2048" "1024 2816 4096" "2048 5632 8192"; do
  set -- $shape
  $cli bench moe --device cuda --d-model "$1" --d-ff "$2" --tokens "$3" --json > "$out/bench-moe-d$1.json"
done
$cli bench train --device cuda --d-model 2048 --d-ff 5632 --layers 4 --heads 16 --kv-heads 8 --seq-len 1024 --batch 8 --json \
  > "$out/bench-train-d2048.json"
python3 - "$out" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
print(f"{'benchmark':28} {'tokens/s':>12} {'GFLOP/s':>10} {'peak':>10} {'ratio':>8}")
for f in sorted(glob.glob(os.path.join(out, "bench-*.json"))):
    j = json.load(open(f))
    ratio = j.get("speedup_vs_naive", j.get("mfu"))
    print(f"{os.path.basename(f):28} {j['tokens_per_s']:12.0f} {j['achieved_gflops']:10.1f} {j['matmul_peak_gflops']:10.1f} {ratio:8.3f}")
PY
