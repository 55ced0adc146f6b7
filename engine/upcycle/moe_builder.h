#pragma once
// Building an MoE decoder from a dense one (SPEC.md §2, §4). Internal (includes torch).
// The methods of SPEC §3 and §5 start from these pieces. Thread-safety: free functions.
#include <string>

#include "model/decoder.h"

namespace upcycle {

struct MoeShape {
  int64_t experts = 8;
  int64_t topK = 2;
  int64_t layerFreq = 1;   // layer l is MoE when (l + 1) % layerFreq == 0
  int64_t expertFf = 0;    // 0 = the dense d_ff
};

// The MoE config for a dense config: qwen3_moe for qwen3 bases (keeping q/k norms and head_dim);
// otherwise mixtral for llama/mistral bases (every layer MoE), qwen2_moe for qwen2 bases or when
// layerFreq > 1. top-k weights are renormalized in all of them, so that identical experts reproduce
// the dense function (SPEC §1 invariant).
ModelConfig moeConfigFromDense(const ModelConfig& dense, const MoeShape& shape);

// Fills a router weight (E, D) in place: uniform_std002 (zero-mean uniform with std 0.02:
// (U[0,1) - 0.5) * 0.02 * sqrt(12)), normal_002 (N(0, 0.02^2)) or uniform (U[0,1)).
void initRouter(torch::Tensor& weight, const std::string& kind, torch::Generator& gen);
void checkRouterInit(const std::string& kind);  // throws UserError naming the value (incl. "hidden")

// The hidden-state router inits, named as mergekit-moe names its gate modes: in every MoE layer,
// expert e's router row is the L2-normalised mean over promptsPerExpert[e] of each prompt's router
// input (the hidden state entering that layer's MoE block) at its last token (`hidden`, also
// `hidden_last`) or averaged over its tokens (`hidden_avg`). Experts without prompts keep their
// current row. Prompts are token id sequences.
enum class HiddenPooling { LastToken, Mean };
void initRoutersFromHidden(DecoderLMImpl& moe, const std::vector<std::vector<std::vector<int64_t>>>& promptsPerExpert,
                           HiddenPooling pooling = HiddenPooling::LastToken);
// Whether router_init names one of the hidden-state inits, and which pooling it asks for.
bool isHiddenRouterInit(const std::string& kind);
HiddenPooling hiddenPooling(const std::string& kind);

// Throws UserError naming both models' differing field when two dense configs cannot be combined
// (type, dimensions, heads, head_dim, biases, q/k norms, tied embeddings).
void checkSameArchitecture(const ModelConfig& a, const ModelConfig& b, const std::string& what);

// Copies every tensor the dense and MoE models share by name (attention, norms, embeddings,
// dense FFNs of non-MoE layers). Expert and router weights are left to the caller.
void copySharedWeights(DecoderLMImpl& dense, DecoderLMImpl& moe);

// Sparse upcycling (SPEC §2): every expert a copy of the dense FFN, routers drawn layer by layer
// from `gen`.
DecoderLM sparseUpcycle(DecoderLMImpl& dense, const MoeShape& shape, const std::string& routerInit,
                        torch::Generator& gen);

}  // namespace upcycle
