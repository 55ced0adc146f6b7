#!/usr/bin/env bash
# The README's first command: install what is needed, build, and run the built-in demo experiment:
# in the workbench window when there is a display, headless otherwise (or with --headless).
#   bash scripts/demo.sh [--quick] [--headless]
set -euo pipefail
cd "$(dirname "$0")/.."
quick=() ; headless=0
for a in "$@"; do
  case "$a" in
    --quick) quick=(--quick);;
    --headless) headless=1;;
    *) echo "demo.sh: unknown option $a (use --quick, --headless)" >&2; exit 2;;
  esac
done
bash scripts/setup.sh
cmake --preset release
# Only what the demo runs: the command line and, when Qt is there, the workbench. The tests (a third
# of the objects) are scripts/test.sh's to build.
gui=0
if grep -q '^UPCYCLE_BUILD_GUI:BOOL=ON' build/release/CMakeCache.txt; then gui=1; fi
if [ "$headless" = 0 ] && { [ -n "${DISPLAY:-}" ] || [ -n "${WAYLAND_DISPLAY:-}" ]; } && [ "$gui" = 1 ]; then
  cmake --build --preset release --target upcycle upcycle-studio
  echo "A display is available: running the demo in upcycle-studio (close the window to finish)."
  exec ./build/release/app/upcycle-studio --demo "${quick[@]}"
fi
# Headless: the command line first, so that the demo's table comes as early as possible; the
# workbench (a quarter of the objects) is built after it, ready for when there is a display.
cmake --build --preset release --target upcycle
./build/release/app/upcycle demo --out out/demo "${quick[@]}"
if [ "$gui" = 1 ]; then
  echo "Building the workbench (build/release/app/upcycle-studio) for later use with a display."
  cmake --build --preset release --target upcycle-studio
fi
