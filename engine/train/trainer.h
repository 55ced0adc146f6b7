#pragma once
// The training loop (internal: includes torch). api/training.h holds the options and observer.
// Thread-safety: runs on the calling thread; see api/training.h.
#include <functional>

#include "api/training.h"
#include "model/decoder.h"

namespace upcycle {

// One padded micro-batch: ids/labels/mask (B, T); labels -100 where ignored.
struct Batch {
  torch::Tensor ids, labels, mask;
  torch::Tensor tags;          // (B) int64, the records' tags
  int64_t inputTokens = 0;     // real tokens
  int64_t predictedTokens = 0; // labels[:, 1:] != -100
};

Batch makeBatch(const std::vector<TokenRecord>& data, const std::vector<size_t>& rows, int64_t maxLength);

// The real and predicted tokens makeBatch would give these rows (without building the batch): a
// data-parallel rank counts the whole global batch so that its loss is its share of the global one.
struct TokenCounts {
  int64_t input = 0, predicted = 0;
};
TokenCounts countTokens(const std::vector<TokenRecord>& data, const size_t* rows, size_t count, int64_t maxLength);

// The record order of one epoch: a Fisher-Yates shuffle driven by std::mt19937_64(seed + epoch)
// (both fully specified by the C++ standard, so the order is the same on every platform).
std::vector<size_t> epochOrder(size_t n, uint64_t seed, int64_t epoch);

// Extra terms of the objective: L = lmWeight * L_lm + extraWeight * extraLoss(...) + MoE losses.
// UpIT's router pre-optimization uses a * L_lm + (1 - a) * L_cls. extraLoss must be a mean over the
// micro-batch's real tokens (mask == 1): a data-parallel rank weights it by its share of those tokens.
struct TrainHooks {
  double lmWeight = 1.0;
  double extraWeight = 1.0;
  // (forward output, tags (B) and mask (B, T) on the device) -> scalar
  std::function<torch::Tensor(const ForwardOutput&, const torch::Tensor&, const torch::Tensor&)> extraLoss;
};

// Trains `model` in place (moved to the options' device).
TrainResult trainDecoder(DecoderLM& model, const std::vector<TokenRecord>& data, const TrainOptions& o,
                         TrainObserver* observer, const std::atomic<bool>* cancel,
                         const TrainHooks& hooks = {});

}  // namespace upcycle
