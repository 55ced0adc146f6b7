// Baselines from the Drop-Upcycling code base: noise upcycling, from scratch, Branch-Train-MiX.
#include "core/error.h"
#include "upcycle/methods.h"

namespace upcycle {

DecoderLM noiseUpcycle(DecoderLMImpl& dense, const MoeShape& shape, const std::string& routerInit,
                       double noiseStd, double fraction, torch::Generator& gen) {
  UPCYCLE_CHECK(noiseStd >= 0, "noise std must be non-negative, got ", noiseStd);
  UPCYCLE_CHECK(fraction >= 0 && fraction <= 1, "noise fraction must be in [0, 1], got ", fraction);
  return permutedUpcycle(dense, shape, routerInit, gen, [&](torch::Tensor& g, torch::Tensor& dn, torch::Tensor& u, int64_t Fe) {
    const int64_t k = static_cast<int64_t>(std::floor(fraction * Fe + 1e-9));
    for (auto [w, dim] : {std::pair<torch::Tensor*, int64_t>{&g, 0}, {&dn, 1}, {&u, 0}}) {
      auto S = torch::randperm(Fe, gen, torch::kLong).narrow(0, 0, k);
      auto noise = torch::zeros(w->index_select(dim, S).sizes(), torch::kFloat);
      if (k > 0) noise.normal_(0.0, noiseStd, gen);
      w->index_add_(dim, S, noise);
    }
  });
}

DecoderLM scratchMoe(const ModelConfig& dense, const MoeShape& shape, const std::string& routerInit,
                     torch::Generator& gen) {
  checkRouterInit(routerInit);
  DecoderLM moe(moeConfigFromDense(dense, shape));
  torch::NoGradGuard ng;
  moe->initWeights(gen);                  // every tensor, in parameter order
  initAllRouters(*moe, routerInit, gen);  // then the routers by the configured rule
  return moe;
}

void averageSharedWeights(const std::vector<DecoderLMImpl*>& sources, DecoderLMImpl& target) {
  torch::NoGradGuard ng;
  std::vector<torch::OrderedDict<std::string, torch::Tensor>> params;
  for (auto* s : sources) params.push_back(s->named_parameters());
  for (auto& p : target.named_parameters()) {
    if (!params[0].find(p.key())) continue;
    auto sum = torch::zeros_like(p.value(), torch::kFloat);
    for (auto& sp : params) {
      const torch::Tensor* t = sp.find(p.key());
      UPCYCLE_CHECK(t && t->sizes() == p.value().sizes(), "source models differ in tensor ", p.key());
      sum += t->to(torch::kFloat);
    }
    p.value().copy_(sum / static_cast<double>(sources.size()));
  }
}

DecoderLM btxUpcycle(const std::vector<DecoderLMImpl*>& sources, const MoeShape& shape,
                     const std::string& routerInit, torch::Generator& gen) {
  UPCYCLE_CHECK(!sources.empty(), "BTX needs at least one source model");
  const int64_t n = static_cast<int64_t>(sources.size());
  UPCYCLE_CHECK(shape.experts % n == 0, "BTX: experts (", shape.experts, ") must be a multiple of the number of sources (",
                n, ")");
  checkRouterInit(routerInit);
  const ModelConfig mc = moeConfigFromDense(sources[0]->config(), shape);
  for (auto* s : sources) checkSameArchitecture(sources[0]->config(), s->config(), "BTX sources");
  UPCYCLE_CHECK(mc.expertIntermediateSize == sources[0]->config().intermediateSize, "BTX copies whole FFNs");
  DecoderLM moe(mc);
  averageSharedWeights(sources, *moe);
  torch::NoGradGuard ng;
  initAllRouters(*moe, routerInit, gen);
  const int64_t per = shape.experts / n;
  for (size_t l = 0; l < moe->model->layers->size(); ++l) {
    auto layer = layerAt(*moe, l);
    if (!layer->moe) continue;
    for (int64_t e = 0; e < mc.numExperts; ++e) {
      auto d = layerAt(*sources[e / per], l)->mlp;
      layer->moe->w_gate[e].copy_(d->gate_proj->weight);
      layer->moe->w_up[e].copy_(d->up_proj->weight);
      layer->moe->w_down[e].copy_(d->down_proj->weight);
    }
  }
  return moe;
}

}  // namespace upcycle
