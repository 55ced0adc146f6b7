#pragma once
// `upcycle inspect`: what a checkpoint folder or a Trainer output folder holds. Torch-free: reads
// config.json and safetensors headers only. Thread-safety: free functions.
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <optional>

#include "formats/hf_config.h"
#include "formats/peft_adapter.h"
#include "formats/trainer_outputs.h"

namespace upcycle {

struct CheckpointSummary {
  std::filesystem::path path;
  ModelConfig config;
  // "dense", "mixtral-hub", "mixtral-fused", "qwen2-moe", "qwen3-moe" (these two: "-fused" if so)
  std::string layout;
  int64_t totalParams = 0;     // every weight tensor (Qwen3's q_norm/k_norm included)
  int64_t activeParams = 0;    // per token: total less the (E - k) unchosen experts of MoE layers
  std::vector<std::string> fileDtypes;  // distinct tensor dtypes in the files
  uint64_t fileBytes = 0;
  int64_t numFiles = 0;
  int64_t numTensors = 0;
  // What the data pipeline will tokenize with: "tokenizer.json (BPE), 151,669 tokens", "byte, 264
  // tokens", "sentencepiece, 32,000 tokens"; "none"; or "unreadable: <the error>" (a broken
  // tokenizer does not stop the inspection).
  std::string tokenizer;
  bool chatTemplate = false;  // tokenizer_config.json's chat_template or chat_template.jinja
};

// A PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors).
struct AdapterSummary {
  std::filesystem::path path;
  LoraOptions lora;
  std::string baseName;            // base_model_name_or_path as written
  std::filesystem::path basePath;  // resolved; empty when it is not a folder here
  std::optional<CheckpointSummary> base;  // when the base was found
  int64_t adapterParams = 0;       // every lora_A and lora_B value
  std::vector<std::string> fileDtypes;
  uint64_t fileBytes = 0;
  int64_t numTensors = 0;
};

struct InspectReport {
  enum class Kind { Checkpoint, TrainerOutput, Adapter } kind = Kind::Checkpoint;
  AdapterSummary adapter;                       // Kind::Adapter
  CheckpointSummary checkpoint;                 // Kind::Checkpoint
  std::vector<TrainerCheckpoint> checkpoints;   // Kind::TrainerOutput
};

// Validates every safetensors header on the way; throws UserError naming the bad file or field.
CheckpointSummary summarizeCheckpoint(const std::filesystem::path& folder);
InspectReport inspectPath(const std::filesystem::path& path);
std::string inspectJson(const InspectReport& r);
std::string inspectText(const InspectReport& r);

}  // namespace upcycle
