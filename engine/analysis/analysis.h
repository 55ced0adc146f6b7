#pragma once
// Analysis on in-memory models (internal: includes torch). api/analysis.h wraps it for files.
#include <vector>

#include "api/analysis.h"
#include "data/token_records.h"
#include "model/decoder.h"

namespace upcycle {

// Cosine similarity matrix of the rows of `x` (n, m) as a Matrix.
Matrix cosineMatrix(const torch::Tensor& x);
// The same over the concatenated columns of `parts` (each (n, ...)), minus `refs` (one per part, the
// shape of one row; empty: none) when given. Never materializes the concatenation.
Matrix cosineMatrix(const std::vector<torch::Tensor>& parts, const std::vector<torch::Tensor>& refs);
// Linear CKA between two (N, D) activations (centered over N): ||A^T B||_F^2 / (||A^T A||_F ||B^T B||_F).
double linearCka(const torch::Tensor& a, const torch::Tensor& b);

// `base` may be null (no delta similarity); `probe` may be empty (no routing, no CKA).
AnalysisReport analyzeDecoder(DecoderLMImpl& moe, DecoderLMImpl* base, const std::vector<TokenRecord>& probe);

}  // namespace upcycle
