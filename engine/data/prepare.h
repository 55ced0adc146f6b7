#pragma once
// From a data file to training records for a model: read (any FORMATS.md kind), tokenize with the
// model's tokenizer and prompt template, optionally pack, split train/validation. Torch-free.
// Thread-safety: free function.
#include <filesystem>
#include <string>
#include <vector>

#include "data/token_records.h"

namespace upcycle {

struct DataOptions {
  std::filesystem::path path;
  std::string promptTemplate;  // ""/auto: the model's chat template, else its stored template, else alpaca; chat; alpaca|compact|raw
  int64_t maxLength = 0;       // > 0: truncate
  int64_t packBlock = 0;       // > 0: pack into blocks of this many tokens (pretraining)
  bool trainOnPrompt = false;
  double valFraction = 0;      // held out for validation
  uint64_t splitSeed = 0;
};

struct PreparedData {
  std::vector<TokenRecord> train, val;
  int64_t dropped = 0;         // records left with nothing to learn after truncation
  std::string promptTemplate;  // the template used
};

PreparedData prepareData(const std::filesystem::path& modelDir, const DataOptions& o);

}  // namespace upcycle
