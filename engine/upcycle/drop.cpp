// Drop-Upcycling (Nakamura et al., ICLR 2025), SPEC §3.
#include "core/error.h"
#include "upcycle/methods.h"

namespace upcycle {

std::shared_ptr<DecoderLayerImpl> layerAt(DecoderLMImpl& m, size_t l) {
  return std::static_pointer_cast<DecoderLayerImpl>(m.model->layers->children().at(l));
}

void initAllRouters(DecoderLMImpl& moe, const std::string& routerInit, torch::Generator& gen) {
  for (size_t l = 0; l < moe.model->layers->size(); ++l) {
    auto layer = layerAt(moe, l);
    if (layer->moe) initRouter(layer->moe->router->weight, routerInit, gen);
  }
}

namespace {

// Re-draws `k` neurons of w along `dim` (0: rows of gate/up, 1: columns of down) from the normal
// distribution of the values they replace. `subset` given: use it; else draw one.
void redraw(torch::Tensor& w, int64_t dim, int64_t k, const torch::Tensor& subset, torch::Generator& gen) {
  const int64_t F = w.size(dim);
  auto S = subset.defined() ? subset : torch::randperm(F, gen, torch::kLong).narrow(0, 0, k);
  if (k == 0) return;
  // The statistics in float32 whatever w's dtype: a bf16 w (the streaming path keeps bf16 checkpoints
  // bf16) gives the same mean, std and draws as its float32 widening.
  auto slice = w.index_select(dim, S).to(torch::kFloat);
  const double mu = slice.mean().item<double>();
  const double sigma = k * slice.size(1 - dim) > 1 ? slice.std(/*unbiased=*/true).item<double>() : 0.0;
  auto fresh = torch::empty(slice.sizes(), torch::kFloat);
  fresh.normal_(mu, sigma, gen);
  w.index_copy_(dim, S, fresh.to(w.dtype()));
}

}  // namespace

std::tuple<torch::Tensor, torch::Tensor, torch::Tensor> permutedExpert(const torch::Tensor& dg, const torch::Tensor& du,
                                                                      const torch::Tensor& dd, int64_t F, int64_t Fe,
                                                                      torch::Generator& gen, const ExpertEdit& edit) {
  auto idx = torch::randperm(F, gen, torch::kLong).narrow(0, 0, Fe);  // perm; fine-grained: first Fe
  auto g = dg.index_select(0, idx), u = du.index_select(0, idx), dn = dd.index_select(1, idx);
  edit(g, dn, u, Fe);
  return {g, u, dn};
}

ExpertEdit dropEdit(double ratio, bool sharedIndices, torch::Generator& gen) {
  return [ratio, sharedIndices, &gen](torch::Tensor& g, torch::Tensor& dn, torch::Tensor& u, int64_t Fe) {
    const int64_t k = static_cast<int64_t>(std::floor(ratio * Fe + 1e-9));
    torch::Tensor shared;
    if (sharedIndices) shared = torch::randperm(Fe, gen, torch::kLong).narrow(0, 0, k);
    redraw(g, 0, k, shared, gen);  // the official order: gate, down, up
    redraw(dn, 1, k, shared, gen);
    redraw(u, 0, k, shared, gen);
  };
}

DecoderLM permutedUpcycle(DecoderLMImpl& dense, const MoeShape& shape, const std::string& routerInit,
                          torch::Generator& gen, const ExpertEdit& edit) {
  checkRouterInit(routerInit);
  const ModelConfig mc = moeConfigFromDense(dense.config(), shape);
  DecoderLM moe(mc);
  copySharedWeights(dense, *moe);
  torch::NoGradGuard ng;
  initAllRouters(*moe, routerInit, gen);
  const int64_t F = dense.config().intermediateSize, Fe = mc.expertIntermediateSize;
  for (size_t l = 0; l < moe->model->layers->size(); ++l) {
    auto layer = layerAt(*moe, l);
    if (!layer->moe) continue;
    auto d = layerAt(dense, l)->mlp;
    auto dg = d->gate_proj->weight.to(torch::kFloat), du = d->up_proj->weight.to(torch::kFloat),
         dd = d->down_proj->weight.to(torch::kFloat);
    for (int64_t e = 0; e < mc.numExperts; ++e) {
      auto [g, u, dn] = permutedExpert(dg, du, dd, F, Fe, gen, edit);
      layer->moe->w_gate[e].copy_(g);
      layer->moe->w_up[e].copy_(u);
      layer->moe->w_down[e].copy_(dn);
    }
  }
  return moe;
}

DecoderLM dropUpcycle(DecoderLMImpl& dense, const MoeShape& shape, const std::string& routerInit, double ratio,
                      bool sharedIndices, torch::Generator& gen) {
  UPCYCLE_CHECK(ratio >= 0 && ratio <= 1, "drop ratio r must be in [0, 1], got ", ratio);
  return permutedUpcycle(dense, shape, routerInit, gen, dropEdit(ratio, sharedIndices, gen));
}

}  // namespace upcycle
