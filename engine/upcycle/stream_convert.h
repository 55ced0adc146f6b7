#pragma once
// Sparse and Drop-Upcycling written straight to disk, layer by layer (issue: conversion at the speed of
// a file copy, with memory bounded by about twice one layer's tensors). The dense checkpoint is
// memory-mapped; every output tensor is produced right before it is written, so at most one dense
// layer's FFN and one expert are alive at a time (in the checkpoint's dtype when the output keeps it:
// a bf16 model is never widened, and its copied tensors are its own bytes). The random draws happen in the same
// order as the in-memory methods (routers first, then per layer and expert), so the tensors are
// identical to `dropUpcycle`/`sparseUpcycle` + `saveModel` for the same seed. Internal (torch).
#include <filesystem>
#include <string>

#include "formats/hf_config.h"
#include "upcycle/moe_builder.h"

namespace upcycle {

struct StreamConvertOptions {
  std::filesystem::path base, out;
  std::string method = "sparse";  // sparse | drop
  MoeShape shape;
  std::string routerInit = "uniform_std002";
  double ratio = 0.5;
  bool sharedIndices = false;
  uint64_t seed = 0;
  uint64_t maxShardBytes = 5ull << 30;
};

// True when the streaming path produces this conversion: a llama or mistral base, every layer MoE,
// written in the Mixtral Hub layout; or a qwen2 / qwen3 base, any layer frequency, written as
// Qwen2-MoE / Qwen3-MoE (their own layout, whatever `layout` says).
bool canStreamConvert(const ModelConfig& dense, const std::string& method, const MoeShape& shape, const std::string& layout);
// Writes config.json, the weights and the tokenizer files into o.out; returns the MoE config.
ModelConfig streamConvert(const StreamConvertOptions& o);

}  // namespace upcycle
