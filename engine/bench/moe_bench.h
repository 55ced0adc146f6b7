#pragma once
// The naive MoE algorithm, kept as the benchmark's baseline (internal: includes torch).
#include "model/decoder.h"

namespace upcycle {

// Hugging Face Mixtral's block: route, then for each expert select its tokens with a mask, compute,
// and index_add the weighted result back. x (N, D) -> (N, D). Same router and experts as `block`.
torch::Tensor naiveMoeForward(MoeBlockImpl& block, const torch::Tensor& x);

}  // namespace upcycle
