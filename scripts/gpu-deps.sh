#!/usr/bin/env bash
# Run HERE (Debian 12, with network to Debian's mirror): downloads the development files the GPU machine
# lacks (it has LibTorch via PyTorch, CMake, ninja and nvcc, but no apt and no network) into .deps/gpu/,
# which git ignores and the device tool carries:  run(carry=[".deps/gpu"], command="bash scripts/gpu-build.sh")
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .deps/gpu && cd .deps/gpu
pkgs=(libsqlite3-dev libsqlite3-0 nlohmann-json3-dev libyaml-cpp-dev libyaml-cpp0.7 libgtest-dev libgmock-dev googletest
      libsentencepiece-dev libsentencepiece0 libprotobuf-lite32 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
      libutf8proc-dev libutf8proc2)
apt-get download "${pkgs[@]}" >/dev/null
ls -1 *.deb
du -sh .
