#!/usr/bin/env bash
# Builds the Debian package: build/release/upcycle-workbench_<version>_amd64.deb
#   scripts/package.sh            (after scripts/setup.sh; installs nothing itself)
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release >/dev/null
cmake --build build/release --target upcycle upcycle-studio upcycle_spm
(cd build/release && cpack -G DEB >/dev/null)
ls build/release/upcycle-workbench_*.deb
