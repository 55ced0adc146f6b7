#!/usr/bin/env bash
# The engine, the CLI and every non-GUI test under AddressSanitizer + UndefinedBehaviorSanitizer
# (CMake preset `sanitize`, build/sanitize; LibTorch, Qt and the system libraries stay uninstrumented).
# Run before a submission where time allows (a cold build takes about 40 minutes on 2 cores, the tests
# about 15). Any ASan report, UBSan report (-fno-sanitize-recover) or leak fails its test.
# usage: bash scripts/sanitize.sh [ctest arguments, e.g. -R Trainer]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset sanitize
cmake --build --preset sanitize
ctest --preset sanitize -j "$(nproc)" --timeout 900 "$@"
