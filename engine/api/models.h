#pragma once
// Model-level engine entry points shared by the CLI and the GUI: evaluate, convert, create.
// Torch-free header; the work runs on the calling thread.
// Thread-safety: each call is independent; do not write the same folder from two calls.
#include <cstdint>
#include <filesystem>
#include <map>
#include <string>

#include "data/token_records.h"
#include "formats/hf_config.h"
#include "pipeline/experiment.h"

namespace upcycle {

struct EvalOptions {
  int64_t batchSize = 8;
  std::string device = "auto";
  bool accuracy = false;        // exact match of greedy answers (records with a prompt and answer)
  int64_t maxNewTokens = 32;    // for accuracy
  std::string promptTemplate;   // text records: empty = the model's stored template, else alpaca
  int64_t maxLength = 0;        // > 0: truncate records
  // Parameter dtype: "float32" (the default), "bfloat16" (half the memory; matmuls in bf16, RMSNorm,
  // attention softmax, router softmax and the loss in float32), or "auto" (bfloat16 when the
  // checkpoint stores bfloat16).
  std::string dtype = "float32";
  // Mixed precision of the forward passes: auto | fp32 | bf16 (api/runtime.h: resolvePrecision).
  std::string precision = "auto";
};

struct EvalFigures {
  double loss = 0;        // token-weighted mean next-token cross-entropy (nats)
  double perplexity = 0;  // exp(loss)
  int64_t tokens = 0;     // predicted tokens
  int64_t records = 0;
  double accuracy = 0;    // NaN when no record was answered
  int64_t answered = 0;   // records decoded for accuracy
};

struct EvalReport {
  EvalFigures overall;
  std::map<std::string, EvalFigures> domains;  // empty when no record has a domain
};

// Reads any data kind of FORMATS.md; text records are tokenized with the model's tokenizer.
EvalReport evaluateModel(const std::filesystem::path& model, const std::filesystem::path& data,
                         const EvalOptions& opts = {});
// Evaluates already-tokenized records (e.g. a validation split) on the model at `model`; accuracy
// uses the model's tokenizer.
EvalReport evaluateModelOnRecords(const std::filesystem::path& model, const std::vector<TokenRecord>& records,
                                  const EvalOptions& opts = {});
std::string evalJson(const EvalReport& r);
std::string evalText(const EvalReport& r);

struct GenerateRequest {
  std::filesystem::path model;
  std::string prompt;
  bool raw = false;             // false: wrap the prompt in the prompt template
  std::string promptTemplate;   // empty = the model's stored template, else alpaca
  int64_t maxNewTokens = 64;
  double temperature = 0;       // 0 = greedy
  uint64_t seed = 0;
  std::string device = "auto";
  std::string precision = "auto";  // auto | fp32 | bf16
};

std::string generateText(const GenerateRequest& r);

struct ConvertOptions {
  RunSpec run;                      // method (sparse|drop|noise|scratch|btx|upit|upit_lora) and its settings
  std::filesystem::path base;       // the dense model (UpIT: the base the checkpoints were tuned from)
  std::filesystem::path out;
  std::vector<std::filesystem::path> checkpoints;  // UpIT: checkpoint folders or Trainer output folders
  std::filesystem::path data;       // UpIT: training data for the seed set (none: no router pre-optimization)
  std::string promptTemplate;       // for `data` (empty: the base's stored template, else alpaca)
  std::string layout = "mixtral-hub";  // mixtral-hub | mixtral-fused (ignored for qwen2_moe/qwen3_moe outputs)
  std::string device = "auto";
  // upit_lora: write the LoRA-expert MoE in its native form (base FFN + per-expert factors, FORMATS.md)
  // instead of the standard MoE whose expert e is the base FFN plus expert e's update.
  bool keepFactors = false;
};

struct ConvertReport {
  std::filesystem::path out;
  ModelConfig config;
  std::vector<int64_t> checkpointsUsed;
  size_t lineage = 0;
  std::vector<int64_t> seedBuckets;
};

// Refuses bad settings before any work starts, naming the field (top-k > experts, r outside [0, 1], ...).
void validateConvertOptions(const ConvertOptions& o);
ConvertReport convertModel(const ConvertOptions& o);

// Trainable parameters, gradients and AdamW state (two float32 moments per trainable parameter) of
// post-training an MoE of config `moe`: with LoRA experts (upit_lora, loramoe) the experts' factors and
// the routers; otherwise every parameter (full-FFN UpIT, sparse, drop). Arithmetic on the config alone.
struct TrainableMemory {
  int64_t trainable = 0;       // parameters in the optimizer
  int64_t total = 0;           // parameters of the model
  int64_t optimizerBytes = 0;  // 2 x 4 bytes per trainable parameter
  int64_t gradientBytes = 0;   // 4 bytes per trainable parameter (float32 gradients)
};
TrainableMemory trainableMemory(const ModelConfig& moe);
// The MoE config that `method` (upit or upit_lora) builds from a dense config: E experts, top-k, and
// for upit_lora LoRA experts of `lora` (its FFN targets).
ModelConfig upitMoeConfig(const ModelConfig& dense, int64_t experts, int64_t topK, const LoraOptions* lora);

struct CreateOptions {
  std::string modelType = "llama";  // llama | mistral | qwen2 | qwen3 | mixtral | qwen2_moe | qwen3_moe
  int64_t vocabSize = 264;          // >= 264: the built-in byte tokenizer is attached
  int64_t hiddenSize = 64;
  int64_t intermediateSize = 172;
  int64_t numLayers = 2;
  int64_t numHeads = 4;
  int64_t numKvHeads = 2;
  int64_t experts = 0;  // MoE types only
  int64_t topK = 2;
  bool tieWordEmbeddings = false;
  std::string dtype = "float32";    // storage dtype: float32 | bfloat16 (bf16) | float16
  double ropeTheta = 10000.0;
  double rmsNormEps = 1e-5;
  int64_t maxPositionEmbeddings = 2048;
  uint64_t seed = 0;
  std::string promptTemplate;       // stored with the byte tokenizer (empty: none)
  // A folder whose tokenizer files (tokenizer.json / tokenizer.model, tokenizer_config.json, ...) are
  // copied into the model, and whose bos/eos/pad ids go into config.json, instead of the byte tokenizer.
  // Its vocabulary must fit in vocabSize.
  std::filesystem::path tokenizer;
  std::filesystem::path out;
};

// The demo's tiny byte-level Llama: d_model 128, 4 layers, 4 heads (2 KV), d_ff 344, compact template.
CreateOptions tinyBase();
// The config createRandomModel writes for `o` (before a --tokenizer sets its special ids and the MoE
// fields are filled); throws UserError naming the option.
ModelConfig createConfig(const CreateOptions& o);

// Writes a randomly initialized model (HF init, normal(0, 0.02)) as a HF checkpoint folder.
ModelConfig createRandomModel(const CreateOptions& o);

}  // namespace upcycle
