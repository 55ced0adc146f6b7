#pragma once
// Model-level engine entry points shared by the CLI and the GUI: evaluate, convert, create.
// Torch-free header; the work runs on the calling thread.
// Thread-safety: each call is independent; do not write the same folder from two calls.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "formats/hf_config.h"

namespace upcycle {

struct EvalOptions {
  int64_t batchSize = 8;
  std::string device = "auto";
};

struct EvalFigures {
  double loss = 0;        // token-weighted mean next-token cross-entropy (nats)
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // predicted tokens
  int64_t records = 0;
};

struct EvalReport {
  EvalFigures overall;
  std::map<std::string, EvalFigures> domains;  // empty when no record has a domain
};

EvalReport evaluateModel(const std::filesystem::path& model, const std::filesystem::path& data,
                         const EvalOptions& opts = {});
std::string evalJson(const EvalReport& r);
std::string evalText(const EvalReport& r);

struct ConvertOptions {
  std::string method = "sparse";  // sparse (more methods: upcycling issue)
  std::filesystem::path base;
  std::filesystem::path out;
  int64_t experts = 8;
  int64_t topK = 2;
  int64_t moeLayerFreq = 1;       // 1 = every layer is MoE
  std::string routerInit = "uniform_std002";  // uniform_std002 | normal_002 | uniform
  std::string layout = "mixtral-hub";          // mixtral-hub | mixtral-fused (ignored for qwen2 bases)
  uint64_t seed = 0;
};

struct ConvertReport {
  std::filesystem::path out;
  ModelConfig config;
};

// Refuses bad settings before any work starts, naming the field (top-k > experts, ...).
void validateConvertOptions(const ConvertOptions& o);
ConvertReport convertModel(const ConvertOptions& o);

struct CreateOptions {
  std::string modelType = "llama";  // llama | mistral | qwen2 | mixtral | qwen2_moe
  int64_t vocabSize = 256;
  int64_t hiddenSize = 64;
  int64_t intermediateSize = 172;
  int64_t numLayers = 2;
  int64_t numHeads = 4;
  int64_t numKvHeads = 2;
  int64_t experts = 0;  // MoE types only
  int64_t topK = 2;
  bool tieWordEmbeddings = false;
  std::string dtype = "float32";
  uint64_t seed = 0;
  std::filesystem::path out;
};

// Writes a randomly initialized model (HF init, normal(0, 0.02)) as a HF checkpoint folder.
ModelConfig createRandomModel(const CreateOptions& o);

}  // namespace upcycle
