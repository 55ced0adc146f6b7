#pragma once
// Training entry points shared by the CLI and the GUI (torch-free header).
// Thread-safety: train() runs on the calling thread (the engine's worker thread); the observer is
// called on that thread; `cancel` may be set from any thread and is honoured at step boundaries.
#include <atomic>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "api/lora.h"
#include "api/models.h"
#include "data/token_records.h"

namespace upcycle {

struct TrainOptions {
  // Optimizer: AdamW. Weight decay applies to matrices only (not norms, biases). fusedAdamW: one pass
  // over each float32 CPU parameter (train/fused_adamw.h); false: LibTorch's AdamW (benchmarks compare).
  bool fusedAdamW = true;
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weightDecay = 0.0;
  // Schedule: linear warmup over warmupSteps, then cosine decay to lr * minLrRatio at the last step.
  int64_t warmupSteps = 0;
  double minLrRatio = 0.1;
  double gradClip = 1.0;        // max global gradient norm; <= 0 disables clipping
  int64_t batchSize = 8;        // records per micro-batch
  int64_t gradAccum = 1;        // micro-batches per optimizer step
  double epochs = 1.0;          // used when maxSteps == 0
  int64_t maxSteps = 0;         // > 0: train exactly this many optimizer steps
  int64_t maxLength = 0;        // > 0: truncate records to this many tokens
  // MoE losses (SPEC §1): L = L_lm + auxLossCoef * L_aux + zLossCoef * L_z.
  double auxLossCoef = 0.01;
  double zLossCoef = 0.0;
  // Parameters whose names contain any of these substrings are trained; empty = all.
  // UpIT's router pre-optimization trains {"moe.router"} alone.
  std::vector<std::string> trainOnly;
  std::vector<std::string> freeze;  // names containing any of these are frozen
  // LoRA (rank > 0): adapters on the base's projections, PEFT-initialized from `seed`; the base is
  // frozen and only the adapters are in the optimizer; checkpoints are PEFT adapter folders
  // (adapter_config.json naming the base, adapter_model.safetensors) with trainer_state.json and
  // optimizer.pt beside them. A model path that is already an adapter folder continues that adapter.
  LoraOptions lora;
  std::filesystem::path loraBase;   // base_model_name_or_path of adapter checkpoints (trainModel sets it)
  // Checkpoints as OUT/checkpoint-STEP/ (HF folder + trainer_state.json + optimizer.pt).
  std::filesystem::path outDir;     // empty: no checkpoints
  int64_t saveSteps = 0;            // every N optimizer steps
  double saveEveryEpochFraction = 0;  // or every fraction of an epoch (UpIT: 0.25)
  bool saveFinal = true;            // a checkpoint at the last step
  bool resume = false;              // continue from the latest checkpoint in outDir
  std::filesystem::path tokenizerFrom;  // tokenizer files copied into every checkpoint
  std::string device = "auto";
  std::string precision = "auto";   // auto | fp32 | bf16 (api/runtime.h: resolvePrecision)
  int threads = 0;
  uint64_t seed = 0;                // shuffling (std::mt19937_64 seeded with seed + epoch) and jitter
  std::string stage = "train";      // reported in metrics
};

struct StepMetrics {
  std::string stage;
  int64_t step = 0;        // 1-based optimizer step just finished
  int64_t totalSteps = 0;
  double epoch = 0;        // fractional epochs done
  double loss = 0;         // total objective
  double lmLoss = 0;       // token-weighted next-token cross-entropy
  double auxLoss = 0;      // load-balancing loss (unscaled); 0 for dense models
  double zLoss = 0;
  double extraLoss = 0;    // a stage's own term (UpIT router pre-optimization: L_cls)
  double lr = 0;
  double gradNorm = 0;     // before clipping
  double tokensPerSec = 0;
  int64_t tokens = 0;      // predicted tokens in this step
};

class TrainObserver {
 public:
  virtual ~TrainObserver() = default;
  virtual void onStep(const StepMetrics&) {}
  virtual void onCheckpoint(const std::filesystem::path& /*folder*/, int64_t /*step*/) {}
  virtual void onEpochEnd(int64_t /*epoch*/, double /*meanLoss*/) {}
  virtual void onLog(const std::string& /*message*/) {}
};

struct TrainResult {
  int64_t steps = 0;
  bool cancelled = false;
  double finalLoss = 0;
  std::vector<StepMetrics> history;
  std::vector<std::filesystem::path> checkpoints;
};

// Linear warmup then cosine decay; `step` is 0-based. Pure arithmetic, exposed for tests and plots.
double learningRateAt(const TrainOptions& o, int64_t step, int64_t totalSteps);

// Loads the model at `modelPath`, trains it on `data`, leaves checkpoints in o.outDir.
// Throws UserError for bad settings (before any work) and when the loss becomes NaN or Inf (the last
// good checkpoint stays). Cancellation returns early with cancelled = true.
TrainResult trainModel(const std::filesystem::path& modelPath, const std::vector<TokenRecord>& data,
                       const TrainOptions& o, TrainObserver* observer = nullptr,
                       const std::atomic<bool>* cancel = nullptr);

void validateTrainOptions(const TrainOptions& o);

// Pretraining a tiny byte-level base on the built-in corpus (or a corpus file): the first stage of
// the demo, and `upcycle pretrain`.
struct PretrainOptions {
  std::filesystem::path out;        // checkpoints in OUT/checkpoint-STEP, the corpus in OUT/corpus.jsonl
  std::filesystem::path corpus;     // empty: generate the built-in corpus
  int64_t documents = 4000;         // built-in corpus size
  CreateOptions model = tinyBase(); // the architecture (its `out` and `seed` are set by pretraining)
  int64_t blockSize = 128;          // packed sequence length
  TrainOptions train;               // outDir is set to `out`
};

// Returns the training result; the pretrained model is the last checkpoint (result.checkpoints.back()).
TrainResult pretrainTinyBase(const PretrainOptions& o, TrainObserver* observer = nullptr,
                             const std::atomic<bool>* cancel = nullptr);

}  // namespace upcycle
