#pragma once
// Building one run's model from its RunSpec: shared by the experiment runner and `upcycle convert`.
// Internal (includes torch). Thread-safety: calling thread only.
#include <atomic>
#include <filesystem>
#include <vector>

#include "api/pipeline.h"
#include "model/decoder.h"

namespace upcycle {

struct BuildInputs {
  std::filesystem::path base;    // the dense base (UpIT: the reference for expert deltas)
  std::filesystem::path start;   // the dense model sparse/drop/noise/dense start from
  std::vector<std::filesystem::path> checkpoints;  // UpIT candidates, in step order
  std::vector<TokenRecord> train;  // UpIT seed data comes from these (empty: no pre-optimization)
  std::string device = "auto";
  std::string precision = "auto";  // mixed precision of router pre-optimization
  int64_t batchSize = 32;
  LoraOptions lora{0};             // the experiment's lora: (loramoe's experts)
  PipelineObserver* observer = nullptr;
  const std::atomic<bool>* cancel = nullptr;
};

// Every random draw comes from `gen` (seeded with the run's seed). Fills the UpIT fields of `summary`.
DecoderLM buildRunModel(const RunSpec& r, const BuildInputs& in, torch::Generator& gen, RunSummary& summary);

}  // namespace upcycle
