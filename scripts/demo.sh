#!/usr/bin/env bash
# The README's first command: install what is needed, build, and run the built-in demo experiment:
# in the workbench window when there is a display, headless otherwise (or with --headless).
#   bash scripts/demo.sh [--quick] [--headless]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake --preset release
# Only what the demo runs: the command line and, when Qt is there, the workbench. The tests (a third
# of the objects) are scripts/test.sh's to build.
targets=(upcycle)
if grep -q '^UPCYCLE_BUILD_GUI:BOOL=ON' build/release/CMakeCache.txt; then targets+=(upcycle-studio); fi
cmake --build --preset release --target "${targets[@]}"
quick=() ; headless=0
for a in "$@"; do
  case "$a" in
    --quick) quick=(--quick);;
    --headless) headless=1;;
    *) echo "demo.sh: unknown option $a (use --quick, --headless)" >&2; exit 2;;
  esac
done
if [ "$headless" = 0 ] && { [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; } && [ -x build/release/app/upcycle-studio ]; then
  echo "A display is available: running the demo in upcycle-studio (close the window to finish)."
  exec ./build/release/app/upcycle-studio --demo "${quick[@]}"
fi
./build/release/app/upcycle demo --out out/demo "${quick[@]}"
