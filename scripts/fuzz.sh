#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ (clang, ASan + UBSan) in build/fuzz and runs each for SECONDS
# (default 60) on its seed corpus (fuzz/corpus/NAME, committed; new inputs go to build/fuzz/corpus/NAME),
# with a per-input timeout of 10 s and an RSS limit of 2048 MB. A crash, a sanitizer report, a timeout
# or an allocation over the limit stops that harness and is reported (the input is kept in
# build/fuzz/findings/NAME). Exit status: 0 when every harness ran clean.
#
#   bash scripts/fuzz.sh [SECONDS] [NAME...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
names=${*:-"safetensors index hf_config trainer_state records experiment tokenizer_json chat_template adapter_config"}
command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ is needed (apt-get install clang)" >&2; exit 1; }
CC=clang CXX=clang++ cmake -S fuzz -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build/fuzz >/dev/null
mkdir -p build/fuzz/findings
status=0
printf "%-16s %10s %12s %8s  %s\n" harness seconds executions "corpus" result
for n in $names; do
  mkdir -p "build/fuzz/corpus/$n" "build/fuzz/findings/$n"
  log="build/fuzz/$n.log"
  set +e
  ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "build/fuzz/fuzz_$n" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="build/fuzz/findings/$n/" \
    "build/fuzz/corpus/$n" "fuzz/corpus/$n" > "$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  size=$(ls "build/fuzz/corpus/$n" | wc -l)
  if [ $rc -eq 0 ]; then result=clean; else result="FINDING (see $log)"; status=1; fi
  printf "%-16s %10s %12s %8s  %s\n" "$n" "$seconds" "${execs:-?}" "$size" "$result"
done
exit $status
