#pragma once
// LoRA settings (torch-free): the trainer's low-rank adapters and PEFT adapter folders.
// An adapter on a linear layer y = W x adds (alpha / rank) * B A x, with A (rank, in) and B (out, rank);
// PEFT's initialization: A Kaiming-uniform (bound 1 / sqrt(in)), B zero, so training starts at the base.
#include <cstdint>
#include <string>
#include <vector>

namespace upcycle {

struct LoraOptions {
  int64_t rank = 0;      // 0: no LoRA (every parameter trains)
  double alpha = 16;     // scale = alpha / rank (alpha / sqrt(rank) with rslora)
  double dropout = 0;    // on the adapter's input, training only
  bool rslora = false;   // PEFT's use_rslora
  // HF module names: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj. Short forms (q, gate, ...)
  // are accepted by parseLoraTargets.
  std::vector<std::string> targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  bool enabled() const { return rank > 0; }
  double scale() const;
};

// Every projection LoRA can adapt, in this order: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj.
const std::vector<std::string>& loraTargetNames();
// "q,k,v,o,gate,up,down" or HF names, comma-separated; throws UserError naming `field` and the bad item.
std::vector<std::string> parseLoraTargets(const std::string& list, const std::string& field = "--lora-targets");
// Rank in [1, 4096], alpha finite and > 0, dropout in [0, 1), targets known and not repeated.
void validateLoraOptions(const LoraOptions& o, const std::string& where = "lora");

}  // namespace upcycle
