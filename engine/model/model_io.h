#pragma once
// Loading and saving decoders as Hugging Face checkpoint folders. Internal (includes torch).
// Reads every layout of FORMATS.md (dense llama/mistral/qwen2/qwen3, Mixtral hub and fused,
// Qwen2-MoE, Qwen3-MoE; the fused experts of transformers v5 for the MoE types); writes dense
// models in their own layout, Mixtral as hub by default and Qwen2-MoE / Qwen3-MoE in their Hub
// layout. Thread-safety: free functions; a model must not be used by another thread while saved or
// loaded.
#include <filesystem>

#include "formats/checkpoint_files.h"
#include "model/decoder.h"

namespace upcycle {

struct LoadOptions {
  torch::Device device = torch::kCPU;
  torch::Dtype dtype = torch::kFloat;  // compute/parameter dtype; weights are converted on load
};

// The model is built in `opts.dtype` from the start (a bf16 load never holds a float32 copy), each
// tensor is copied from the mapped file straight into its parameter, and the file's pages are
// released as it goes, so the peak is about the model in `opts.dtype` plus one tensor.
DecoderLM loadModel(const std::filesystem::path& folder, const LoadOptions& opts = {});

// The parameter dtype for a `--dtype` value: "float32" (or "fp32"), "bfloat16" (or "bf16"), or "auto":
// bfloat16 when the checkpoint stores bfloat16 (`stored`), else float32. Throws UserError naming
// `option` and the value.
torch::Dtype loadDtype(const std::string& name, DType stored, const std::string& option);

struct SaveOptions {
  std::optional<DType> dtype;          // storage dtype; default: the config's torch_dtype
  std::optional<MoeLayout> layout;     // default: MixtralHub for mixtral, Qwen2Moe for qwen*_moe
  uint64_t maxShardBytes = 5ull << 30;
};

// Writes config.json and the weights into `folder` (created if needed), each file atomically.
void saveModel(DecoderLM& model, const std::filesystem::path& folder, const SaveOptions& opts = {});

// Copies a checkpoint's tensor into a new CPU tensor of its own dtype (handles unaligned data).
torch::Tensor tensorFromView(const TensorView& v);

// The tensors a dense checkpoint of `c` holds (HF names and shapes, in DecoderLM's parameter order),
// from the config's arithmetic alone, so a checkpoint can be checked before anything is allocated.
std::vector<std::pair<std::string, std::vector<int64_t>>> denseCheckpointTensors(const ModelConfig& c);
// Every tensor of denseCheckpointTensors(c) is in `files` with that shape and a floating dtype, and
// nothing else is (rotary caches and a tied head aside); throws UserError naming the folder and tensor.
void checkDenseCheckpoint(const CheckpointFiles& files, const ModelConfig& c, const std::string& where);
torch::Dtype torchDtype(DType t);
DType storageDtype(torch::Dtype t);

}  // namespace upcycle

namespace upcycle {
// "auto" (CUDA when available), "cpu", "cuda", "cuda:N". Throws UserError naming the value.
torch::Device resolveDevice(const std::string& name);
}  // namespace upcycle
