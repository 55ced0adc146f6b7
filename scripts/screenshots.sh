#!/usr/bin/env bash
# Takes the documentation's screenshots: upcycle-studio's main window under Xvfb, driven through a
# real run of the built-in demo, one PNG per panel in docs/screenshots/ at 1280 x 800 (the smallest
# size the workbench is made for); the same at 1920 x 1080 go to build/release/screenshots-1920x1080/
# to be looked at (not committed).
#   scripts/screenshots.sh [--quick]      (the full demo takes a few minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release >/dev/null
cmake --build build/release --target ui_screenshots
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
xvfb-run -a -s "-screen 0 1920x1080x24" build/release/tests/ui_screenshots docs/screenshots "$work" "$@" \
  --sizes 1280x800,1920x1080
rm -rf build/release/screenshots-1920x1080
mv docs/screenshots/1920x1080 build/release/screenshots-1920x1080
ls -l docs/screenshots build/release/screenshots-1920x1080
