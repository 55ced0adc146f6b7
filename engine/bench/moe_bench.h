#pragma once
// The naive MoE algorithm, kept as the benchmark's baseline (internal: includes torch).
#include "model/decoder.h"

namespace upcycle {

// Hugging Face Mixtral's experts: a separate (gate, up, down) weight set per expert, as in its
// nn.ModuleList, so that each expert's gradient is its own tensor.
struct SeparateExperts {
  std::vector<torch::Tensor> gate, up, down;  // (F, D), (F, D), (D, F) each
};
// Leaf copies of the block's experts (requiring grad when the block's weights do).
SeparateExperts separateExperts(const MoeBlockImpl& block);

// Hugging Face Mixtral's block: route, then for each expert select its tokens with a mask, compute,
// and index_add the weighted result back. x (N, D) -> (N, D). The block's router, `experts`' weights.
torch::Tensor naiveMoeForward(const MoeBlockImpl& block, const SeparateExperts& experts, const torch::Tensor& x);

}  // namespace upcycle
