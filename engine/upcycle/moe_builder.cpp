#include "upcycle/moe_builder.h"

#include <cmath>

#include "core/error.h"

namespace upcycle {

ModelConfig moeConfigFromDense(const ModelConfig& dense, const MoeShape& s) {
  UPCYCLE_CHECK(!dense.isMoe(), "the base model is already an MoE (", dense.modelType, ")");
  UPCYCLE_CHECK(s.experts >= 1, "experts must be at least 1, got ", s.experts);
  UPCYCLE_CHECK(s.topK >= 1 && s.topK <= s.experts, "top-k (", s.topK,
                ") must be between 1 and the number of experts (", s.experts, ")");
  UPCYCLE_CHECK(s.layerFreq >= 1, "moe_layer_freq must be at least 1, got ", s.layerFreq);
  UPCYCLE_CHECK(s.expertFf >= 0 && s.expertFf <= dense.intermediateSize, "expert d_ff (", s.expertFf,
                ") must be between 1 and the dense d_ff (", dense.intermediateSize, ")");
  ModelConfig c = dense;
  // Qwen3 keeps its family (q/k norms); a Mixtral file makes every layer MoE, so other bases with
  // layerFreq > 1 go to the Qwen2-MoE format, whose mlp_only_layers say which layers stay dense.
  const bool qwen3 = dense.modelType == "qwen3";
  const bool qwen2 = !qwen3 && (dense.modelType == "qwen2" || s.layerFreq > 1);
  c.modelType = qwen3 ? "qwen3_moe" : qwen2 ? "qwen2_moe" : "mixtral";
  c.moeLayout = qwen3 || qwen2 ? MoeLayout::Qwen2Moe : MoeLayout::MixtralHub;
  c.numExperts = s.experts;
  c.topK = s.topK;
  c.expertIntermediateSize = s.expertFf > 0 ? s.expertFf : dense.intermediateSize;
  c.sharedExpertIntermediateSize = 0;
  c.normTopkProb = true;
  c.moeLayers.assign(dense.numLayers, false);
  for (int64_t l = 0; l < dense.numLayers; ++l) c.moeLayers[l] = ((l + 1) % s.layerFreq == 0);
  if (c.modelType == "mixtral") c.intermediateSize = c.expertIntermediateSize;
  return c;
}

void checkSameArchitecture(const ModelConfig& a, const ModelConfig& b, const std::string& what) {
  auto field = [&](const char* name, auto x, auto y) {
    UPCYCLE_CHECK(x == y, what, ": architectures do not match (", name, " ", x, " vs ", y, ")");
  };
  field("model_type", a.modelType, b.modelType);
  field("hidden_size", a.hiddenSize, b.hiddenSize);
  field("intermediate_size", a.intermediateSize, b.intermediateSize);
  field("num_hidden_layers", a.numLayers, b.numLayers);
  field("num_attention_heads", a.numHeads, b.numHeads);
  field("num_key_value_heads", a.numKvHeads, b.numKvHeads);
  field("head_dim", a.headDim, b.headDim);
  field("vocab_size", a.vocabSize, b.vocabSize);
  field("attention_bias", a.attentionBias, b.attentionBias);
  field("q/k norm", a.qkNorm, b.qkNorm);
  field("tie_word_embeddings", a.tieWordEmbeddings, b.tieWordEmbeddings);
  field("num_experts", a.numExperts, b.numExperts);
}

bool isHiddenRouterInit(const std::string& kind) {
  return kind == "hidden" || kind == "hidden_last" || kind == "hidden_avg";
}

HiddenPooling hiddenPooling(const std::string& kind) {
  return kind == "hidden_avg" ? HiddenPooling::Mean : HiddenPooling::LastToken;
}

void checkRouterInit(const std::string& kind) {
  UPCYCLE_CHECK(kind == "uniform_std002" || kind == "normal_002" || kind == "uniform" || isHiddenRouterInit(kind),
                "router_init \"", kind,
                "\" is not one of uniform_std002, normal_002, uniform, hidden, hidden_last, hidden_avg");
}

void initRoutersFromHidden(DecoderLMImpl& moe, const std::vector<std::vector<std::vector<int64_t>>>& prompts,
                           HiddenPooling pooling) {
  const int64_t E = moe.config().numExperts;
  UPCYCLE_CHECK(static_cast<int64_t>(prompts.size()) == E, "hidden router init: ", prompts.size(),
                " prompt sets for ", E, " experts");
  torch::NoGradGuard ng;
  const bool wasTraining = moe.is_training();
  moe.eval();
  moe.captureRouterInputs(true);
  const auto dev = moe.lmHeadWeight().device();
  std::vector<std::shared_ptr<MoeBlockImpl>> blocks;
  for (const auto& m : moe.model->layers->children())
    if (auto layer = std::dynamic_pointer_cast<DecoderLayerImpl>(m); layer->moe) blocks.push_back(layer->moe.ptr());
  for (int64_t e = 0; e < E; ++e) {
    if (prompts[e].empty()) continue;
    std::vector<torch::Tensor> sums(blocks.size());
    int64_t count = 0;
    for (const auto& p : prompts[e]) {
      if (p.empty()) continue;
      auto out = moe.forward(torch::tensor(p, torch::kLong).view({1, -1}).to(dev));
      for (size_t l = 0; l < blocks.size(); ++l) {
        const auto in = out.routing[l].inputs.to(torch::kFloat);  // (T, D)
        auto s = pooling == HiddenPooling::LastToken ? in[in.size(0) - 1] : in.mean(0);  // (D)
        sums[l] = sums[l].defined() ? sums[l] + s : s;
      }
      ++count;
    }
    if (count == 0) continue;
    for (size_t l = 0; l < blocks.size(); ++l) {
      auto mean = sums[l] / static_cast<double>(count);
      blocks[l]->router->weight[e].copy_(mean / mean.norm().clamp_min(1e-12));
    }
  }
  moe.captureRouterInputs(false);
  if (wasTraining) moe.train();
}

void initRouter(torch::Tensor& w, const std::string& kind, torch::Generator& gen) {
  checkRouterInit(kind);
  // The hidden-state inits start from uniform_std002; initRoutersFromHidden then overwrites the rows
  // it has prompts for.
  torch::NoGradGuard noGrad;
  // Draw on the CPU in float32 so a seed gives the same router on every device.
  auto t = torch::empty(w.sizes(), torch::kFloat);
  if (kind == "normal_002") t.normal_(0.0, 0.02, gen);
  else {
    t.uniform_(0.0, 1.0, gen);
    // The official code's torch_rand_002 centres on the sample mean of the drawn matrix, not on 0.5
    // (conversions/drop_upcycling.py), so every router starts with mean exactly 0.
    if (kind != "uniform") t = (t - t.mean()) * (0.02 * std::sqrt(12.0));
  }
  w.copy_(t);
}

void copySharedWeights(DecoderLMImpl& dense, DecoderLMImpl& moe) {
  torch::NoGradGuard noGrad;
  auto src = dense.named_parameters();
  for (auto& p : moe.named_parameters()) {
    if (const torch::Tensor* s = src.find(p.key())) {
      UPCYCLE_ASSERT(s->sizes() == p.value().sizes(), "shape mismatch for ", p.key());
      p.value().copy_(*s);
    }
  }
}

DecoderLM sparseUpcycle(DecoderLMImpl& dense, const MoeShape& shape, const std::string& routerInit,
                        torch::Generator& gen) {
  checkRouterInit(routerInit);
  const ModelConfig mc = moeConfigFromDense(dense.config(), shape);
  UPCYCLE_CHECK(mc.expertIntermediateSize == dense.config().intermediateSize,
                "sparse upcycling copies the whole FFN: expert d_ff must equal the dense d_ff");
  DecoderLM moe(mc);
  copySharedWeights(dense, *moe);
  torch::NoGradGuard noGrad;
  auto layers = moe->model->layers->children();
  auto denseLayers = dense.model->layers->children();
  // Routers first, layer by layer (the draw order of the Drop-Upcycling code).
  for (auto& m : layers) {
    auto layer = std::dynamic_pointer_cast<DecoderLayerImpl>(m);
    if (layer->moe) initRouter(layer->moe->router->weight, routerInit, gen);
  }
  for (size_t l = 0; l < layers.size(); ++l) {
    auto layer = std::dynamic_pointer_cast<DecoderLayerImpl>(layers[l]);
    if (!layer->moe) continue;
    auto d = std::dynamic_pointer_cast<DecoderLayerImpl>(denseLayers[l])->mlp;
    for (int64_t e = 0; e < mc.numExperts; ++e) {
      layer->moe->w_gate[e].copy_(d->gate_proj->weight);
      layer->moe->w_up[e].copy_(d->up_proj->weight);
      layer->moe->w_down[e].copy_(d->down_proj->weight);
    }
  }
  return moe;
}

}  // namespace upcycle
