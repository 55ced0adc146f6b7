#pragma once
// UpIT with LoRA experts (SPEC §5, the paper's main setting) and the LoRAMoE baseline. Internal
// (includes torch).
//
// The MoE keeps one frozen base FFN per layer; expert e is that FFN with W + s B_e A_e in each target
// projection (model/decoder.h, MoeBlockImpl's LoRA experts). An expert comes from an intermediate
// PEFT adapter of a LoRA instruction tuning; the genetic expansion merges two experts' updates
// s B A; the child is stored back as rank-r factors (makeLoraChild says how and why).
#include <array>
#include <vector>

#include "api/lora.h"
#include "upcycle/upit.h"

namespace upcycle {

// One LoRA expert: per layer, the factors of gate_proj, up_proj and down_proj (in that order),
// float32 on the CPU; undefined for a projection the expert does not adapt.
struct LoraExpert {
  std::vector<std::array<torch::Tensor, 3>> A, B;  // [layer][proj]: A (r, in), B (out, r)
};
// The FFN projections a LoRA expert can adapt, in LoraExpert's order.
const std::array<const char*, 3>& loraExpertProjections();

// The FFN factors of a model carrying PEFT adapters (loadPeftAdapter); `scale` receives the adapter's
// scale and `opts` its rank and FFN targets. Refused when the adapter adapts no FFN projection.
LoraExpert loraExpertOf(DecoderLM& adapted, LoraOptions& opts);

// The update s B A of one projection (out, in), float64.
torch::Tensor loraUpdate(const LoraExpert& x, size_t layer, size_t proj, double scale);

// Mean over layers of the GA distance between two LoRA experts, from their factors alone (no (out, in)
// matrix is formed): cosine_delta = 1 - cos(updates), l2 = ||update_a - update_b||, cosine = 1 -
// cos(W + update_a, W + update_b) with W the base FFN (`base`).
double loraExpertDistance(const LoraExpert& a, const LoraExpert& b, const ExpertFfn& base, double scale,
                          const std::string& metric);

// The child of a and b: their updates merged with ga.mergeOp (weight alpha for a; the base of the
// delta-based operators is zero: the updates are deltas already), DARE on the merged update (drop p,
// rescale), then back to rank r by truncated SVD, the singular values split evenly between B and A.
// Why the product and not A and B separately: the factors of two adapters live in unrelated bases
// (B A = (B M)(M^-1 A) for any invertible M), so averaging A with A' and B with B' mixes coordinates
// that mean nothing to each other and creates cross terms B A' that belong to neither parent. The
// product is what the FFN setting merges (W is shared, so merging W + update is merging the update),
// and the rank-r SVD is its best rank-r approximation (Eckart-Young). `truncation` (optional) gets
// ||merged - s B' A'|| / ||merged||, summed over projections and layers as squares.
LoraExpert makeLoraChild(const LoraExpert& a, const LoraExpert& b, double alpha, const GaConfig& ga,
                         uint64_t maskSeed, double scale, int64_t rank, double* truncation = nullptr);

// 5.2 on LoRA experts: growPool with loraExpertDistance and makeLoraChild.
std::vector<LineageEntry> expandLoraPool(std::vector<LoraExpert>& pool, const ExpertFfn& base, int64_t target,
                                         const GaConfig& ga, double scale, int64_t rank, torch::Generator& gen);

// 5.4: the LoRA-expert MoE: non-FFN tensors (and dense layers' FFNs) averaged from `nonFfn` (with
// their adapters merged), each MoE layer's base FFN from `base`, the experts' factors from `pool`,
// routers drawn from `gen`. `lora` gives rank, alpha (scale) and the FFN targets.
DecoderLM assembleLoraMoe(const std::vector<DecoderLMImpl*>& nonFfn, DecoderLMImpl& base,
                          const std::vector<LoraExpert>& pool, const LoraOptions& lora, const MoeShape& shape,
                          const std::string& routerInit, torch::Generator& gen);

// LoRAMoE: the same architecture on `dense`, with fresh experts (PEFT's init: A uniform in
// +-1/sqrt(in), B zero, so every expert starts at the base FFN) and fresh routers, drawn from `gen`
// (routers first, then per MoE layer, expert and target: A).
DecoderLM freshLoraMoe(DecoderLMImpl& dense, const LoraOptions& lora, const MoeShape& shape,
                       const std::string& routerInit, torch::Generator& gen);

// For assignSeedsWith: writes pool[e]'s FFN (base's FFN + s B A where adapted) into a dense layer.
InstallExpert installLoraExpert(DecoderLMImpl& base, const std::vector<LoraExpert>& pool, double scale);

// A standard MoE (Mixtral / Qwen2-MoE / Qwen3-MoE, every expert a full FFN) computing what the
// LoRA-expert MoE computes: expert e = base FFN + s B_e A_e. The input is unchanged.
DecoderLM mergeLoraExperts(DecoderLMImpl& loraMoe);

// trainableMemory (api/models.h) counts what post-training holds for a LoRA-expert or full MoE.

}  // namespace upcycle
