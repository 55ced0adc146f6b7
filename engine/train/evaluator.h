#pragma once
// Evaluation and generation on an in-memory model (internal: includes torch). The API wraps these
// for files; the pipeline calls them directly. Thread-safety: calling thread only.
#include <optional>

#include "api/models.h"
#include "data/token_records.h"
#include "data/tokenizer.h"
#include "model/decoder.h"

namespace upcycle {

struct GenerateOptions {
  int64_t maxNewTokens = 32;
  double temperature = 0;          // 0: greedy; > 0: sample from softmax(logits / temperature)
  std::optional<int64_t> eos;      // stop after producing it (not included in the result)
};

// Decodes with a KV cache: one forward over the prompt, then one position per new token.
std::vector<int64_t> generateTokens(DecoderLMImpl& model, const std::vector<int64_t>& prompt,
                                    const GenerateOptions& o, torch::Generator* gen = nullptr);

// Token-weighted loss and perplexity, overall and per domain. With o.accuracy and a tokenizer, also
// exact-match accuracy of greedy answers for records that carry one (promptLength > 0).
EvalReport evaluateRecords(DecoderLMImpl& model, const std::vector<TokenRecord>& records,
                           const EvalOptions& o, const Tokenizer* tok);

// Per record: the summed next-token cross-entropy and the number of predicted tokens, in record order.
struct RecordLoss {
  double sum = 0;
  int64_t tokens = 0;
  double mean() const { return tokens ? sum / tokens : 0.0; }
};
std::vector<RecordLoss> recordLosses(DecoderLMImpl& model, const std::vector<TokenRecord>& records,
                                     int64_t batchSize);

// Whitespace-trimmed equality, the exact-match rule.
bool exactMatch(const std::string& generated, const std::string& answer);

}  // namespace upcycle
