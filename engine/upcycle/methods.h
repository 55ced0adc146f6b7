#pragma once
// The conversions of SPEC §2-3 (UpIT: upit.h). Each takes the dense model(s) and one seeded generator
// and returns a new MoE decoder; the dense inputs are not modified. Internal (includes torch).
// Draw order (Drop-Upcycling's official code): all routers first, layer by layer; then per layer,
// per expert, the method's own draws.
#include <functional>
#include <tuple>
#include <string>
#include <vector>

#include "upcycle/moe_builder.h"

namespace upcycle {

// Drop-Upcycling (SPEC §3): per layer and expert, permute the d_ff neurons (rows of gate/up, columns
// of down), keep the first expertFf of them, then in gate, down, up (in that order) re-draw
// floor(ratio * expertFf) neurons from N(mean, std^2) of the values they replace. sharedIndices: one
// subset for the three matrices (the paper) instead of one per matrix (the official code).
DecoderLM dropUpcycle(DecoderLMImpl& dense, const MoeShape& shape, const std::string& routerInit, double ratio,
                      bool sharedIndices, torch::Generator& gen);

// Noise upcycling: after the permutation, add N(0, std^2) to floor(fraction * d_ff) neurons of each
// matrix.
DecoderLM noiseUpcycle(DecoderLMImpl& dense, const MoeShape& shape, const std::string& routerInit,
                       double noiseStd, double fraction, torch::Generator& gen);

// From scratch: every weight of the MoE drawn anew (normal(0, initializer_range), norms 1).
DecoderLM scratchMoe(const ModelConfig& dense, const MoeShape& shape, const std::string& routerInit,
                     torch::Generator& gen);

// Branch-Train-MiX: expert e's FFN comes from source e / (E / n_sources); every other tensor is the
// element-wise mean of the sources.
DecoderLM btxUpcycle(const std::vector<DecoderLMImpl*>& sources, const MoeShape& shape,
                     const std::string& routerInit, torch::Generator& gen);

// The skeleton Drop-Upcycling and noise upcycling share: the MoE with the dense model's shared
// tensors, routers drawn first, then per MoE layer and expert a permutation of the dense d_ff neurons
// (the first expertFf of them kept) handed to `edit` as gate (Fe, D), down (D, Fe), up (Fe, D).
using ExpertEdit = std::function<void(torch::Tensor& gate, torch::Tensor& down, torch::Tensor& up, int64_t expertFf)>;
DecoderLM permutedUpcycle(DecoderLMImpl& dense, const MoeShape& shape, const std::string& routerInit,
                          torch::Generator& gen, const ExpertEdit& edit);

// One expert of permutedUpcycle from the dense layer's f32 gate (F, D), up (F, D), down (D, F):
// permute (one randperm draw), keep the first Fe, apply `edit`. Returns gate, up, down.
std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> permutedExpert(const torch::Tensor& denseGate, const torch::Tensor& denseUp,
                                                                      const torch::Tensor& denseDown, int64_t F, int64_t Fe,
                                                                      torch::Generator& gen, const ExpertEdit& edit);
// Drop-Upcycling's edit (the re-draws), drawing from `gen`.
ExpertEdit dropEdit(double ratio, bool sharedIndices, torch::Generator& gen);

// Helpers shared by the methods.
std::shared_ptr<DecoderLayerImpl> layerAt(DecoderLMImpl& m, size_t l);
void initAllRouters(DecoderLMImpl& moe, const std::string& routerInit, torch::Generator& gen);
// Element-wise mean of the named parameters of `sources` into `target`, for every name they share.
void averageSharedWeights(const std::vector<DecoderLMImpl*>& sources, DecoderLMImpl& target);

}  // namespace upcycle
