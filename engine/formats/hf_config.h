#pragma once
// The model description read from, and written to, a Hugging Face config.json. Torch-free.
// Supported model_type: llama, mistral, qwen2, qwen3 (dense); mixtral, qwen2_moe, qwen3_moe (MoE).
// Any other model_type (gemma, phi3, deepseek_v3, ...) and unsupported values (an unknown
// rope_scaling type, a non-silu activation, mlp_bias, qwen3's attention_bias or sliding window) are
// refused naming the key. Thread-safety: plain value type.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "api/lora.h"
#include "formats/dtype.h"

namespace upcycle {

// How an MoE checkpoint names its tensors (FORMATS.md).
enum class MoeLayout {
  MixtralHub,    // block_sparse_moe.experts.E.w1/w2/w3 (default when writing Mixtral)
  MixtralFused,  // transformers v5: mlp.experts.gate_up_proj [E, 2F, D], mlp.experts.down_proj
  Qwen2Moe,      // mlp.experts.E.{gate,up,down}_proj, optional shared expert; also qwen3_moe
};

// The model types parseHfConfig accepts, for error messages: "llama, mistral, ..., qwen3_moe".
const char* supportedModelTypes();

struct ModelConfig {
  std::string modelType = "llama";  // llama|mistral|qwen2|qwen3|mixtral|qwen2_moe|qwen3_moe
  int64_t vocabSize = 0;
  int64_t hiddenSize = 0;
  int64_t intermediateSize = 0;  // dense FFN width (per expert for mixtral)
  int64_t numLayers = 0;
  int64_t numHeads = 0;
  int64_t numKvHeads = 0;
  int64_t headDim = 0;  // qwen3: explicit (absent = 128, transformers' default), not hidden / heads
  double rmsNormEps = 1e-6;
  double ropeTheta = 10000.0;
  double ropeLinearFactor = 1.0;  // rope_scaling {"type": "linear", "factor": f}; 1 = none
  int64_t maxPositionEmbeddings = 2048;
  int64_t slidingWindow = 0;  // 0 = full causal attention
  bool tieWordEmbeddings = false;
  bool attentionBias = false;  // q/k/v bias (qwen2, qwen2_moe)
  bool qkNorm = false;         // RMSNorm of each q/k head before the rotary (qwen3, qwen3_moe)
  DType dtype = DType::F32;    // torch_dtype: the storage type of the weights
  std::optional<int64_t> bosTokenId, eosTokenId, padTokenId;
  double initializerRange = 0.02;

  // MoE (numExperts == 0: dense model).
  int64_t numExperts = 0;
  int64_t topK = 0;
  int64_t expertIntermediateSize = 0;  // mixtral: intermediate_size; qwen*: moe_intermediate_size
  int64_t sharedExpertIntermediateSize = 0;  // qwen2_moe; 0 = none (always so for qwen3_moe)
  bool normTopkProb = true;                  // mixtral: always; qwen*_moe: norm_topk_prob
  double routerAuxLossCoef = 0.01;
  double routerZLossCoef = 0.0;
  double routerJitterNoise = 0.0;
  // Per layer: MoE or dense FFN (size numLayers when numExperts > 0). qwen*_moe: layer i is MoE iff
  // i is not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0 (transformers' rule).
  std::vector<bool> moeLayers;
  MoeLayout moeLayout = MoeLayout::MixtralHub;
  // upit_lora's LoRA-expert MoE (FORMATS.md, "LoRA-expert MoE"): each MoE layer keeps one frozen base FFN
  // and per expert LoRA factors on loraExperts.targets (gate_proj, up_proj, down_proj); expert e
  // computes the base FFN with W + scale * B_e A_e in each target. Rank 0: ordinary experts.
  // config.json key "upcycle_lora_experts": {"r", "lora_alpha", "use_rslora", "target_modules"}.
  LoraOptions loraExperts{0, 16, 0, false, {}};

  bool isMoe() const { return numExperts > 0; }
  bool isMoeLayer(int64_t layer) const {
    return isMoe() && layer < static_cast<int64_t>(moeLayers.size()) && moeLayers[layer];
  }
  bool isQwenMoe() const { return modelType == "qwen2_moe" || modelType == "qwen3_moe"; }
  std::string architecture() const;  // "LlamaForCausalLM", "MixtralForCausalLM", ...
  // Checks internal consistency; throws UserError naming the field (e.g. top-k > experts).
  void validate(const std::string& context) const;
};

// Parses config.json text; `context` (usually the path) prefixes every error message.
ModelConfig parseHfConfig(const std::string& jsonText, const std::string& context);
ModelConfig loadHfConfig(const std::filesystem::path& folder);  // FOLDER/config.json
// Serializes in the HF spelling of cfg.modelType. Mixtral requires every layer to be MoE.
std::string hfConfigJson(const ModelConfig& cfg);

}  // namespace upcycle
