#pragma once
// Dense and MoE decoders of the Llama family (SPEC.md §1), as torch modules: Llama, Mistral, Qwen2,
// Qwen3 (per-head q/k RMSNorm), Mixtral, Qwen2-MoE, Qwen3-MoE. Internal header:
// includes torch, so never include it from ui/ or from the public api/ headers.
//
// Parameter names follow the Hugging Face dense layout; an MoE layer holds its experts stacked, so
// that each expert's tokens go through one matmul per weight:
//   model.layers.N.moe.router.weight      (E, D)
//   model.layers.N.moe.w_gate             (E, F, D)   gate_proj / Mixtral w1
//   model.layers.N.moe.w_up               (E, F, D)   up_proj   / Mixtral w3
//   model.layers.N.moe.w_down             (E, D, F)   down_proj / Mixtral w2
//   model.layers.N.moe.shared_expert.{gate,up,down}_proj.weight, moe.shared_expert_gate.weight
//   model.layers.N.self_attn.{q,k}_norm.weight  (hd)  Qwen3 only, the HF names
// model_io.h maps these to and from every on-disk layout.
// Thread-safety: a module is used by one thread at a time.
#include <torch/torch.h>

#include <functional>
#include <optional>
#include <tuple>
#include <vector>

#include "formats/hf_config.h"

namespace upcycle {

// Routing decisions of one MoE layer, for the losses and for analysis.
struct RouterRecord {
  torch::Tensor logits;   // (N, E) float32, N = B*T
  torch::Tensor probs;    // (N, E) float32 softmax over all experts
  torch::Tensor experts;  // (N, K) int64 chosen experts, best first
  torch::Tensor inputs;   // (N, D) the router's input, only when DecoderLM::captureRouterInputs is set
};

// Keys and values of earlier positions, per layer, for incremental decoding. (B, KV, T, hd) each.
struct KVCache {
  std::vector<torch::Tensor> keys, values;
  int64_t length = 0;  // positions already cached
};

struct ForwardOutput {
  torch::Tensor logits;              // (B, T, V) float32
  std::vector<RouterRecord> routing; // one per MoE layer, in layer order
};

struct RmsNormImpl : torch::nn::Module {
  RmsNormImpl(int64_t dim, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor weight;
  double eps;
};
TORCH_MODULE(RmsNorm);

// A LoRA adapter of one projection (model/lora.h): the update scale * B (A dropout(x)) alone.
struct LoraImpl : torch::nn::Module {
  LoraImpl(int64_t in, int64_t out, int64_t rank, double scale, double dropout);
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor lora_A, lora_B;               // (rank, in), (out, rank); float32 master weights
  double scale, dropout;
  std::optional<torch::Generator> generator;  // dropout masks (seeded by the trainer)
};
TORCH_MODULE(Lora);

// proj(x), plus its adapter's update when it has one.
torch::Tensor adapted(torch::nn::Linear& proj, Lora& lora, const torch::Tensor& x);

struct SwiGluImpl : torch::nn::Module {
  SwiGluImpl(int64_t dModel, int64_t dFf);
  torch::Tensor forward(const torch::Tensor& x);  // down(silu(gate(x)) * up(x))
  torch::nn::Linear gate_proj{nullptr}, up_proj{nullptr}, down_proj{nullptr};
  Lora gate_proj_lora{nullptr}, up_proj_lora{nullptr}, down_proj_lora{nullptr};  // LoRA, when added
};
TORCH_MODULE(SwiGlu);

struct AttentionImpl : torch::nn::Module {
  explicit AttentionImpl(const ModelConfig& cfg);
  // x (B, T, D); cos/sin (T, hd); mask (B|1, 1, T, Tpast+T) additive float. With a cache, the new
  // keys/values are appended to (*cacheK, *cacheV) and attention covers every cached position.
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, torch::Tensor* cacheK = nullptr,
                        torch::Tensor* cacheV = nullptr);
  torch::nn::Linear q_proj{nullptr}, k_proj{nullptr}, v_proj{nullptr}, o_proj{nullptr};
  Lora q_proj_lora{nullptr}, k_proj_lora{nullptr}, v_proj_lora{nullptr}, o_proj_lora{nullptr};  // LoRA
  RmsNorm q_norm{nullptr}, k_norm{nullptr};  // (hd) each, over every head, before rotary (Qwen3)
  int64_t numHeads, numKvHeads, headDim;
};
TORCH_MODULE(Attention);

struct MoeBlockImpl : torch::nn::Module {
  explicit MoeBlockImpl(const ModelConfig& cfg, torch::Dtype dtype = torch::kFloat);
  // x (B, T, D) -> (B, T, D); appends this layer's routing to `record`.
  torch::Tensor forward(const torch::Tensor& x, RouterRecord& record);
  // Every expert's (gate (E, F, D), up (E, F, D), down (E, D, F)) weights as plain tensors, without
  // gradient: the stacks themselves, or for LoRA experts base + scale * B_e A_e (float32).
  std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> expertWeights() const;
  bool loraExperts() const { return loraRank > 0; }
  // LoRA experts on rows sorted by expert (cnt[e] rows each): (rows, D).
  torch::Tensor loraExpertRows(const torch::Tensor& xs, const std::vector<int64_t>& cnt,
                               const std::function<torch::Tensor(const torch::Tensor&)>& cast);

  torch::nn::Linear router{nullptr};
  torch::Tensor w_gate, w_up, w_down;  // ordinary experts (undefined with LoRA experts)
  // LoRA experts (ModelConfig::loraExperts): the shared frozen base FFN, and per expert the factors of
  // each target projection (undefined for a projection that is not a target):
  //   base_gate (F, D), base_up (F, D), base_down (D, F)
  //   lora_gate_A (E, r, D), lora_gate_B (E, F, r), lora_up_A/B likewise, lora_down_A (E, r, F), lora_down_B (E, D, r)
  torch::Tensor base_gate, base_up, base_down;
  torch::Tensor lora_gate_A, lora_gate_B, lora_up_A, lora_up_B, lora_down_A, lora_down_B;
  int64_t loraRank = 0;
  double loraScale = 0;
  SwiGlu shared_expert{nullptr};
  torch::nn::Linear shared_expert_gate{nullptr};
  int64_t numExperts, topK;
  bool normTopk;
  double jitter;
  std::optional<torch::Generator> generator;  // for router jitter noise during training
  bool captureInputs = false;
};
TORCH_MODULE(MoeBlock);

struct DecoderLayerImpl : torch::nn::Module {
  DecoderLayerImpl(const ModelConfig& cfg, int64_t layer, torch::Dtype dtype = torch::kFloat);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, std::vector<RouterRecord>& routing,
                        torch::Tensor* cacheK = nullptr, torch::Tensor* cacheV = nullptr);
  RmsNorm input_layernorm{nullptr}, post_attention_layernorm{nullptr};
  Attention self_attn{nullptr};
  SwiGlu mlp{nullptr};   // dense layers
  MoeBlock moe{nullptr}; // MoE layers
};
TORCH_MODULE(DecoderLayer);

struct BackboneImpl : torch::nn::Module {
  explicit BackboneImpl(const ModelConfig& cfg, torch::Dtype dtype = torch::kFloat);
  torch::nn::Embedding embed_tokens{nullptr};
  torch::nn::ModuleList layers;
  RmsNorm norm{nullptr};
};
TORCH_MODULE(Backbone);

class DecoderLMImpl : public torch::nn::Module {
 public:
  // Parameters in `dtype` (float32 for training). A bfloat16 model is built layer by layer in bfloat16,
  // never whole in float32 first (torch's Linear and Embedding start in float32: one layer at a time).
  explicit DecoderLMImpl(ModelConfig cfg, torch::Dtype dtype = torch::kFloat);
  // inputIds (B, T) int64; attentionMask (B, T) with 1 for real tokens (right padding), optional.
  ForwardOutput forward(const torch::Tensor& inputIds, const torch::Tensor& attentionMask = {});
  // Incremental decoding: inputIds (B, T) continue the sequence held in `cache` (no padding).
  ForwardOutput forwardCached(const torch::Tensor& inputIds, KVCache& cache);
  const ModelConfig& config() const { return m_cfg; }
  // HF-style init: normal(0, initializer_range) for matrices, ones for norms, zero biases.
  void initWeights(torch::Generator& gen);
  void setJitterGenerator(const torch::Generator& gen);
  // Keep each MoE layer's router input in RouterRecord::inputs (for the `hidden` router init).
  void captureRouterInputs(bool on);
  torch::Tensor lmHeadWeight() const;  // (V, D): lm_head or the tied embedding

  Backbone model{nullptr};
  torch::nn::Linear lm_head{nullptr};  // null when tie_word_embeddings

 private:
  ForwardOutput run(const torch::Tensor& inputIds, const torch::Tensor& attentionMask, KVCache* cache);
  ModelConfig m_cfg;
};
TORCH_MODULE(DecoderLM);

// Sum of next-token cross-entropy and the number of predicted tokens. logits (B, T, V);
// labels (B, T) int64 aligned with the inputs, -100 = ignored; position t predicts labels[t+1].
struct LossSum {
  torch::Tensor sum;  // scalar float32
  int64_t count = 0;
};
LossSum nextTokenLoss(const torch::Tensor& logits, const torch::Tensor& labels);

// The routing of every layer stacked, real tokens only (tokenMask (N) bool, or undefined for all):
// router probabilities (L*n, E) and chosen experts (L*n, K).
std::pair<torch::Tensor, torch::Tensor> stackedRouting(const std::vector<RouterRecord>& routing,
                                                       const torch::Tensor& tokenMask);
// Load-balancing loss over the tokens of all MoE layers concatenated (SPEC §1):
// E * sum_e f_e * P_e, f_e = share of (token, slot) assignments to e, P_e = mean router prob.
// tokenMask (N,) bool selects real tokens; undefined = all. Returns 0 for dense models.
torch::Tensor loadBalancingLoss(const std::vector<RouterRecord>& routing, int64_t numExperts,
                                const torch::Tensor& tokenMask = {});
// Router z-loss: mean over tokens of all MoE layers of logsumexp(z)^2.
torch::Tensor routerZLoss(const std::vector<RouterRecord>& routing, const torch::Tensor& tokenMask = {});

}  // namespace upcycle
