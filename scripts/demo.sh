#!/usr/bin/env bash
# The README's first command: install what is needed, build, and run the built-in demo experiment
# (headless; the GUI is `build/release/app/upcycle-studio`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release
cmake --build --preset release
./build/release/app/upcycle demo --out out/demo "$@"
