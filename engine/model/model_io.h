#pragma once
// Loading and saving decoders as Hugging Face checkpoint folders. Internal (includes torch).
// Reads every layout of FORMATS.md (dense llama/mistral/qwen2, Mixtral hub and fused, Qwen2-MoE);
// writes dense models in their own layout and MoE models as Mixtral hub by default.
// Thread-safety: free functions; a model must not be used by another thread while saved or loaded.
#include <filesystem>

#include "formats/checkpoint_files.h"
#include "model/decoder.h"

namespace upcycle {

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat;  // compute/parameter dtype; weights are converted on load
};

DecoderLM loadModel(const std::filesystem::path& folder, const LoadOptions& opts = {});

struct SaveOptions {
  std::optional<DType> dtype;          // storage dtype; default: the config's torch_dtype
  std::optional<MoeLayout> layout;     // MoE layout; default: MixtralHub for mixtral configs
  uint64_t maxShardBytes = 5ull << 30;
};

// Writes config.json and the weights into `folder` (created if needed), each file atomically.
void saveModel(DecoderLM& model, const std::filesystem::path& folder, const SaveOptions& opts = {});

// Copies a checkpoint's tensor into a new CPU tensor of its own dtype (handles unaligned data).
torch::Tensor tensorFromView(const TensorView& v);
torch::Dtype torchDtype(DType t);
DType storageDtype(torch::Dtype t);

}  // namespace upcycle

namespace upcycle {
// "auto" (CUDA when available), "cpu", "cuda", "cuda:N". Throws UserError naming the value.
torch::Device resolveDevice(const std::string& name);
}  // namespace upcycle
