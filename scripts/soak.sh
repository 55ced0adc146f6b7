#!/usr/bin/env bash
# The workspace soak test for longer than CTest runs it: the workbench's connection pattern and two
# CLI-like writers on one run store, SIGKILLed at random moments (seeded) and restarted, then
# integrity_check, foreign_key_check and every committed row verified (tests/store/test_soak.cpp).
# Prints the test's summary line (kills, committed transactions, rows verified). Exit status 0: clean.
#
#   bash scripts/soak.sh [SECONDS] [SEED]       (defaults: 300 s, seed 19)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
seed=${2:-19}
build=${UPCYCLE_BUILD_DIR:-build/release}
cmake --build "$build" --target test_store_soak soak_worker >/dev/null
UPCYCLE_SOAK_SECONDS=$seconds UPCYCLE_SOAK_SEED=$seed \
  "$build/tests/test_store_soak" --gtest_filter='WorkspaceSoak.KilledWriters*' --gtest_brief=1
