#pragma once
// LoRA adapters on a decoder's linear layers, and PEFT adapter folders (FORMATS.md, "PEFT LoRA adapters").
// Internal (includes torch).
//
// An adapted projection computes W x + scale * B (A dropout(x)); A and B live in the projection's
// module as `<proj>_lora.lora_A` / `.lora_B` (DecoderLM parameter names such as
// model.layers.0.self_attn.q_proj_lora.lora_A), and in a PEFT folder as
// base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.
#include <filesystem>
#include <optional>

#include "api/lora.h"
#include "formats/peft_adapter.h"
#include "model/decoder.h"

namespace upcycle {

// LoraImpl (the module) is in model/decoder.h, beside the projections it adapts.

// Adds adapters to every target projection of every layer, PEFT-initialized from `gen` (A uniform in
// +-1 / sqrt(in), B zero). An FFN target on an MoE layer is refused (LoRA experts are upit_lora's).
void addLora(DecoderLM& model, const LoraOptions& o, torch::Generator& gen);
// The adapter settings of a model that has them (rank 0 when it has none).
LoraOptions loraOf(DecoderLM& model);
// (name, A, B) of every adapter, with the PEFT tensor name prefix
// base_model.model.model.layers.N.<module>.<proj>.
struct LoraTensors {
  std::string peftPrefix;
  torch::Tensor A, B;
  int64_t layer = 0;
  std::string target;  // q_proj, ..., down_proj
  double scale = 0;    // the adapter's alpha / rank (or alpha / sqrt(rank))
};
std::vector<LoraTensors> loraTensors(DecoderLM& model);
// W += scale * B A in every adapted projection, then the adapters are removed: a plain model that
// computes what the adapted one did (up to rounding).
void mergeLora(DecoderLM& model);
// Seeds the adapters' dropout masks.
void setLoraGenerator(DecoderLM& model, const torch::Generator& gen);

// Loads an adapter's base (base_model_name_or_path) and the adapter on it, every tensor checked against
// the base's shapes before it is copied.
DecoderLM loadPeftAdapter(const std::filesystem::path& folder, torch::Dtype dtype, torch::Device device);
// Writes adapter_config.json and adapter_model.safetensors (float32) into `folder`, atomically each.
// `baseName` goes to base_model_name_or_path.
void savePeftAdapter(DecoderLM& model, const std::filesystem::path& folder, const std::string& baseName);

}  // namespace upcycle
