#pragma once
// Shared by the libFuzzer harnesses: our own errors (UserError and its base Error) are the expected
// answer to bad input; anything else escaping (std::out_of_range, nlohmann or yaml-cpp exceptions,
// a crash, a sanitizer report, a hang, a huge allocation) is a finding.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "core/error.h"

namespace fuzz {

// A per-process scratch folder for harnesses whose parser reads files.
inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    auto d =
        std::filesystem::temp_directory_path() / ("upcycle-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline void writeFile(const std::filesystem::path& p, const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(p.c_str(), "wb");
  if (!f) std::abort();
  if (size) std::fwrite(data, 1, size, f);
  std::fclose(f);
}

// Runs fn; UserError/Error are fine, every other exception aborts (libFuzzer reports it).
template <class F>
void expectOurErrorsOnly(F&& fn) {
  try {
    fn();
  } catch (const upcycle::Error&) {
  }
}

}  // namespace fuzz
