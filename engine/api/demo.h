#pragma once
// The built-in demo experiment, shared by `upcycle demo` and the GUI's first-start button.
// Foundation stage: builds a tiny random Llama, sparse-upcycles it to an 8-expert Mixtral and shows
// that both compute the same loss (SPEC §1 invariant). The training issue replaces it with the
// full pipeline. Torch-free header. Thread-safety: runs on the calling thread.
#include <filesystem>
#include <functional>
#include <string>

#include "api/models.h"

namespace upcycle {

struct DemoReport {
  std::filesystem::path denseDir, moeDir, dataFile;
  EvalReport dense, moe;
};

DemoReport runDemo(const std::filesystem::path& outDir, uint64_t seed,
                   const std::function<void(const std::string&)>& log);

}  // namespace upcycle
