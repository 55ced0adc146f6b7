#!/usr/bin/env bash
# Installs every Debian package Upcycle Workbench needs to build, test and run.
# Safe to run twice: apt-get skips what is already installed.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build ccache pkg-config git
  libtorch-dev libopenblas0-openmp
  libgloo-dev   # c10d: ProcessGroupGloo.hpp includes the Gloo headers (the library is inside libtorch_cpu)
  qt6-base-dev libqt6sql6-sqlite libqt6svg6 qt6-qpa-plugins
  libqcustomplot-dev libqcustomplot2.1-qt6
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev libyaml-cpp-dev libsentencepiece-dev
  libpcre2-dev libutf8proc-dev   # tokenizer.json: Unicode regexes, NFC/NFKC
  libsqlite3-dev sqlite3
  python3 python3-torch python3-numpy python3-sentencepiece python3-jinja2
  xvfb xauth
  clang libclang-rt-14-dev   # scripts/fuzz.sh: libFuzzer harnesses under ASan and UBSan
  file librsvg2-bin   # scripts/package.sh (CPack finds libraries with `file`); icon renders
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
