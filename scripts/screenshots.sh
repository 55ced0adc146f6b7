#!/usr/bin/env bash
# Takes the documentation's screenshots: upcycle-studio's main window under Xvfb, driven through a
# real run of the built-in demo, one PNG per panel in docs/screenshots/.
#   scripts/screenshots.sh [--quick]      (the full demo takes about 3 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release >/dev/null
cmake --build build/release --target ui_screenshots
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
xvfb-run -a -s "-screen 0 1600x1000x24" build/release/tests/ui_screenshots docs/screenshots "$work" "$@"
ls -l docs/screenshots
