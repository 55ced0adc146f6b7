#include "upcycle/upit_lora.h"

#include <cmath>

#include "api/models.h"
#include "core/error.h"
#include "model/lora.h"
#include "upcycle/methods.h"

namespace upcycle {

const std::array<const char*, 3>& loraExpertProjections() {
  static const std::array<const char*, 3> names = {"gate_proj", "up_proj", "down_proj"};
  return names;
}

namespace {

int projIndex(const std::string& target) {
  const auto& p = loraExpertProjections();
  for (int i = 0; i < 3; ++i)
    if (target == p[i]) return i;
  return -1;
}

// The MoE block's factor stacks of projection i (gate, up, down): A (E, r, in), B (E, out, r).
std::pair<torch::Tensor*, torch::Tensor*> factorStacks(MoeBlockImpl& b, size_t i) {
  if (i == 0) return {&b.lora_gate_A, &b.lora_gate_B};
  if (i == 1) return {&b.lora_up_A, &b.lora_up_B};
  return {&b.lora_down_A, &b.lora_down_B};
}
// Calls fn(layer, projection, A stack, B stack) for every MoE layer's LoRA-expert projection.
template <typename Fn>
void forEachFactorStack(DecoderLMImpl& moe, Fn&& fn) {
  for (size_t l = 0; l < moe.model->layers->size(); ++l) {
    auto layer = layerAt(moe, l);
    if (!layer->moe) continue;
    for (size_t i = 0; i < 3; ++i) {
      auto [A, B] = factorStacks(*layer->moe, i);
      if (A->defined()) fn(l, i, *A, *B);
    }
  }
}
torch::Tensor& baseWeight(MoeBlockImpl& b, size_t i) { return i == 0 ? b.base_gate : i == 1 ? b.base_up : b.base_down; }
torch::Tensor& denseWeight(SwiGluImpl& m, size_t i) {
  return i == 0 ? m.gate_proj->weight : i == 1 ? m.up_proj->weight : m.down_proj->weight;
}
const torch::Tensor& ffnWeight(const ExpertFfn& f, size_t l, size_t i) { return i == 0 ? f.gate[l] : i == 1 ? f.up[l] : f.down[l]; }

// <s B_a A_a, s B_b A_b>_F = s^2 sum((B_a^T B_b) o (A_a A_b^T)): r x r matrices only.
double updateInner(const torch::Tensor& Aa, const torch::Tensor& Ba, const torch::Tensor& Ab, const torch::Tensor& Bb,
                   double scale) {
  auto bb = torch::matmul(Ba.t().to(torch::kDouble), Bb.to(torch::kDouble));
  auto aa = torch::matmul(Aa.to(torch::kDouble), Ab.t().to(torch::kDouble));
  return scale * scale * (bb * aa).sum().item<double>();
}
// <W, s B A>_F = s sum((B^T W) o A).
double baseInner(const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, double scale) {
  return scale * (torch::matmul(B.t().to(torch::kDouble), W.to(torch::kDouble)) * A.to(torch::kDouble)).sum().item<double>();
}

}  // namespace

LoraExpert loraExpertOf(DecoderLM& adapted, LoraOptions& opts) {
  const int64_t L = adapted->config().numLayers;
  LoraExpert x;
  x.A.resize(L);
  x.B.resize(L);
  std::vector<std::string> targets;
  double scale = 0;
  int64_t rank = 0;
  torch::NoGradGuard ng;
  for (const auto& t : loraTensors(adapted)) {
    const int i = projIndex(t.target);
    if (i < 0) continue;  // attention adapters are merged into the shared weights, not experts
    x.A[t.layer][i] = t.A.detach().to(torch::kCPU, torch::kFloat).clone();
    x.B[t.layer][i] = t.B.detach().to(torch::kCPU, torch::kFloat).clone();
    if (std::find(targets.begin(), targets.end(), t.target) == targets.end()) targets.push_back(t.target);
    scale = t.scale;
    rank = t.A.size(0);
  }
  UPCYCLE_CHECK(!targets.empty(), "the adapter has no LoRA on gate_proj, up_proj or down_proj: upit_lora's experts "
                                  "are FFN adapters (train with lora.targets including gate, up or down)");
  std::vector<std::string> ordered;
  for (const char* p : loraExpertProjections())
    if (std::find(targets.begin(), targets.end(), p) != targets.end()) ordered.push_back(p);
  opts.rank = rank;
  opts.rslora = false;
  opts.alpha = scale * static_cast<double>(rank);  // alpha / r = the adapter's scale (rslora or not)
  opts.targets = ordered;
  return x;
}

torch::Tensor loraUpdate(const LoraExpert& x, size_t l, size_t i, double scale) {
  return torch::matmul(x.B[l][i].to(torch::kDouble), x.A[l][i].to(torch::kDouble)) * scale;
}

double loraExpertDistance(const LoraExpert& a, const LoraExpert& b, const ExpertFfn& base, double scale,
                          const std::string& metric) {
  const size_t L = a.A.size();
  double total = 0;
  for (size_t l = 0; l < L; ++l) {
    double ab = 0, aa = 0, bb = 0;  // inner products of the concatenated gate, up, down vectors
    for (size_t i = 0; i < 3; ++i) {
      const bool ha = a.A[l][i].defined(), hb = b.A[l][i].defined();
      if (ha) aa += updateInner(a.A[l][i], a.B[l][i], a.A[l][i], a.B[l][i], scale);
      if (hb) bb += updateInner(b.A[l][i], b.B[l][i], b.A[l][i], b.B[l][i], scale);
      if (ha && hb) ab += updateInner(a.A[l][i], a.B[l][i], b.A[l][i], b.B[l][i], scale);
      if (metric == "cosine") {  // W + update: add the base's share
        const auto& W = ffnWeight(base, l, i);
        const double ww = W.to(torch::kDouble).pow(2).sum().item<double>();
        const double wa = ha ? baseInner(W, a.A[l][i], a.B[l][i], scale) : 0.0;
        const double wb = hb ? baseInner(W, b.A[l][i], b.B[l][i], scale) : 0.0;
        aa += ww + 2 * wa;
        bb += ww + 2 * wb;
        ab += ww + wa + wb;
      }
    }
    if (metric == "l2") {
      total += std::sqrt(std::max(0.0, aa + bb - 2 * ab));
    } else {
      const double na = std::sqrt(std::max(0.0, aa)), nb = std::sqrt(std::max(0.0, bb));
      total += 1.0 - ((na > 0 && nb > 0) ? ab / (na * nb) : 0.0);
    }
  }
  return total / static_cast<double>(L);
}

LoraExpert makeLoraChild(const LoraExpert& a, const LoraExpert& b, double alpha, const GaConfig& ga, uint64_t maskSeed,
                         double scale, int64_t rank, double* truncation) {
  torch::NoGradGuard ng;
  torch::Generator maskGen = at::detail::createCPUGenerator(maskSeed);
  const DareRescale rescale = ga.dareRescale == "l1" ? DareRescale::L1 : DareRescale::Inverse;
  LoraExpert child;
  const size_t L = a.A.size();
  child.A.resize(L);
  child.B.resize(L);
  double lost = 0, kept = 0;
  for (size_t l = 0; l < L; ++l) {
    for (size_t i = 0; i < 3; ++i) {  // mask draws: gate, up, down, layer by layer (as the FFN setting)
      if (!a.A[l][i].defined() && !b.A[l][i].defined()) continue;
      UPCYCLE_CHECK(a.A[l][i].defined() && b.A[l][i].defined(), "GA parents adapt different projections (layer ", l,
                    ", ", loraExpertProjections()[i], ")");
      const auto da = loraUpdate(a, l, i, scale), db = loraUpdate(b, l, i, scale);
      const auto zero = torch::zeros_like(da);
      const std::vector<torch::Tensor> thetas = {da, db};
      const std::vector<double> w = {alpha, 1.0 - alpha};
      torch::Tensor merged;
      if (ga.mergeOp == "linear" || ga.mergeOp == "task_arithmetic") merged = mergeLinear(thetas, w);
      else if (ga.mergeOp == "ties") merged = mergeTies(zero, thetas, w, ga.tiesDensity);
      else if (ga.mergeOp == "dare_linear") merged = mergeDareLinear(zero, thetas, w, ga.dareP, rescale, maskGen);
      else if (ga.mergeOp == "dare_ties") merged = mergeDareTies(zero, thetas, w, ga.dareP, rescale, maskGen);
      else merged = mergeSlerp(da, db, 1.0 - alpha);
      const auto mutated = dare(merged, ga.dareP, rescale, maskGen);
      // Best rank-r approximation of mutated / s, split as B = U sqrt(S), A = sqrt(S) V^T.
      auto [U, S, Vh] = torch::linalg_svd(mutated / scale, /*full_matrices=*/false);
      const int64_t r = std::min<int64_t>(rank, S.size(0));
      auto root = S.narrow(0, 0, r).sqrt();
      auto B = U.narrow(1, 0, r) * root.unsqueeze(0);
      auto A = root.unsqueeze(1) * Vh.narrow(0, 0, r);
      if (r < rank) {  // a tiny projection: pad with zero directions to keep rank r
        B = torch::cat({B, torch::zeros({B.size(0), rank - r}, B.options())}, 1);
        A = torch::cat({A, torch::zeros({rank - r, A.size(1)}, A.options())}, 0);
      }
      child.B[l][i] = B.to(torch::kFloat).contiguous();
      child.A[l][i] = A.to(torch::kFloat).contiguous();
      lost += (mutated - torch::matmul(B, A) * scale).pow(2).sum().item<double>();
      kept += mutated.pow(2).sum().item<double>();
    }
  }
  if (truncation) *truncation = kept > 0 ? std::sqrt(lost / kept) : 0.0;
  return child;
}

std::vector<LineageEntry> expandLoraPool(std::vector<LoraExpert>& pool, const ExpertFfn& base, int64_t target,
                                         const GaConfig& ga, double scale, int64_t rank, torch::Generator& gen) {
  return growPool(
      static_cast<int64_t>(pool.size()), target, ga, gen,
      [&](int64_t i, int64_t j) { return loraExpertDistance(pool[i], pool[j], base, scale, ga.distance); },
      [&](const LineageEntry& e) {
        pool.push_back(makeLoraChild(pool[e.parentA], pool[e.parentB], e.alpha, ga, e.maskSeed, scale, rank));
      });
}

namespace {

// The LoRA-expert MoE's config for a dense config and the experts' LoRA settings.
ModelConfig loraMoeConfig(const ModelConfig& dense, const LoraOptions& lora, const MoeShape& shape) {
  UPCYCLE_CHECK(shape.expertFf == 0 || shape.expertFf == dense.intermediateSize,
                "LoRA experts share the base FFN: expert_ff must be the dense d_ff");
  ModelConfig mc = moeConfigFromDense(dense, shape);
  mc.loraExperts = lora;
  mc.loraExperts.dropout = 0;
  std::vector<std::string> ffn;
  for (const char* p : loraExpertProjections())
    if (std::find(lora.targets.begin(), lora.targets.end(), p) != lora.targets.end()) ffn.push_back(p);
  UPCYCLE_CHECK(!ffn.empty(), "LoRA experts need at least one of gate_proj, up_proj, down_proj in lora.targets");
  mc.loraExperts.targets = ffn;
  mc.validate("LoRA-expert MoE");
  return mc;
}

// Copies each MoE layer's base FFN from the dense model.
void copyBaseFfn(DecoderLMImpl& dense, DecoderLMImpl& moe) {
  torch::NoGradGuard ng;
  for (size_t l = 0; l < moe.model->layers->size(); ++l) {
    auto layer = layerAt(moe, l);
    if (!layer->moe) continue;
    auto d = layerAt(dense, l)->mlp;
    UPCYCLE_CHECK(d, "the base model's layer ", l, " has no dense FFN");
    for (size_t i = 0; i < 3; ++i) baseWeight(*layer->moe, i).copy_(denseWeight(*d, i));
  }
}

}  // namespace

DecoderLM assembleLoraMoe(const std::vector<DecoderLMImpl*>& nonFfn, DecoderLMImpl& base,
                          const std::vector<LoraExpert>& pool, const LoraOptions& lora, const MoeShape& shape,
                          const std::string& routerInit, torch::Generator& gen) {
  UPCYCLE_CHECK(!nonFfn.empty(), "assembly needs the models that give the non-FFN tensors");
  UPCYCLE_CHECK(static_cast<int64_t>(pool.size()) == shape.experts, "assembly: ", pool.size(), " experts for E = ",
                shape.experts);
  checkRouterInit(routerInit);
  const ModelConfig mc = loraMoeConfig(base.config(), lora, shape);
  DecoderLM moe(mc);
  averageSharedWeights(nonFfn, *moe);
  copyBaseFfn(base, *moe);
  torch::NoGradGuard ng;
  initAllRouters(*moe, routerInit, gen);
  forEachFactorStack(*moe, [&](size_t l, size_t i, torch::Tensor& A, torch::Tensor& B) {
    for (int64_t e = 0; e < mc.numExperts; ++e) {
      UPCYCLE_CHECK(pool[e].A[l][i].defined(), "expert ", e, " has no LoRA on ", loraExpertProjections()[i], " of layer ", l);
      UPCYCLE_CHECK(pool[e].A[l][i].sizes() == A[e].sizes() && pool[e].B[l][i].sizes() == B[e].sizes(), "expert ", e,
                    ": the rank of its ", loraExpertProjections()[i], " factors differs from r = ", lora.rank);
      A[e].copy_(pool[e].A[l][i]);
      B[e].copy_(pool[e].B[l][i]);
    }
  });
  return moe;
}

DecoderLM freshLoraMoe(DecoderLMImpl& dense, const LoraOptions& lora, const MoeShape& shape,
                       const std::string& routerInit, torch::Generator& gen) {
  checkRouterInit(routerInit);
  const ModelConfig mc = loraMoeConfig(dense.config(), lora, shape);
  DecoderLM moe(mc);
  copySharedWeights(dense, *moe);
  copyBaseFfn(dense, *moe);
  torch::NoGradGuard ng;
  initAllRouters(*moe, routerInit, gen);
  forEachFactorStack(*moe, [&](size_t, size_t, torch::Tensor& A, torch::Tensor& B) {
    const double bound = 1.0 / std::sqrt(static_cast<double>(A.size(2)));  // PEFT: 1 / sqrt(in)
    for (int64_t e = 0; e < mc.numExperts; ++e) A[e].uniform_(-bound, bound, gen);
    B.zero_();
  });
  return moe;
}

InstallExpert installLoraExpert(DecoderLMImpl& base, const std::vector<LoraExpert>& pool, double scale) {
  return [&base, &pool, scale](int64_t e, size_t l, torch::Tensor& gate, torch::Tensor& up, torch::Tensor& down) {
    auto d = layerAt(base, l)->mlp;
    UPCYCLE_CHECK(d, "the base model's layer ", l, " has no dense FFN");
    torch::Tensor* out[3] = {&gate, &up, &down};
    for (size_t i = 0; i < 3; ++i) {
      auto w = denseWeight(*d, i).to(torch::kDouble);
      if (pool[e].A[l][i].defined()) w = w + loraUpdate(pool[e], l, i, scale);
      out[i]->copy_(w);
    }
  };
}

DecoderLM mergeLoraExperts(DecoderLMImpl& loraMoe) {
  ModelConfig mc = loraMoe.config();
  UPCYCLE_CHECK(mc.loraExperts.enabled(), "the model has no LoRA experts to merge");
  mc.loraExperts.rank = 0;
  mc.loraExperts.targets.clear();
  DecoderLM out(mc);
  torch::NoGradGuard ng;
  auto src = loraMoe.named_parameters();
  for (auto& p : out->named_parameters())
    if (const torch::Tensor* s = src.find(p.key())) p.value().copy_(*s);
  for (size_t l = 0; l < out->model->layers->size(); ++l) {
    auto layer = layerAt(*out, l);
    if (!layer->moe) continue;
    auto [g, u, d] = layerAt(loraMoe, l)->moe->expertWeights();
    layer->moe->w_gate.copy_(g);
    layer->moe->w_up.copy_(u);
    layer->moe->w_down.copy_(d);
  }
  out->to(loraMoe.lmHeadWeight().device());
  return out;
}

ModelConfig upitMoeConfig(const ModelConfig& dense, int64_t experts, int64_t topK, const LoraOptions* lora) {
  const MoeShape shape{experts, topK, 1, 0};
  return lora ? loraMoeConfig(dense, *lora, shape) : moeConfigFromDense(dense, shape);
}

TrainableMemory trainableMemory(const ModelConfig& c) {
  const int64_t D = c.hiddenSize, V = c.vocabSize, hd = c.headDim, q = c.numHeads * hd, kv = c.numKvHeads * hd;
  TrainableMemory m;
  int64_t shared = V * D + D;  // embeddings, final norm
  if (!c.tieWordEmbeddings) shared += V * D;
  for (int64_t l = 0; l < c.numLayers; ++l) {
    shared += 2 * D + D * q + 2 * D * kv + q * D;  // norms, q, k, v, o
    if (c.attentionBias) shared += q + 2 * kv;
    if (c.qkNorm) shared += 2 * hd;
    if (!c.isMoeLayer(l)) {
      shared += 3 * D * c.intermediateSize;
      continue;
    }
    const int64_t E = c.numExperts, F = c.expertIntermediateSize, router = E * D;
    if (c.loraExperts.enabled()) {
      const int64_t factors = E * c.loraExperts.rank * (D + F) * static_cast<int64_t>(c.loraExperts.targets.size());
      shared += 3 * D * F;  // the frozen base FFN
      m.trainable += router + factors;
      m.total += router + factors;
    } else {
      int64_t experts = router + E * 3 * D * F;
      if (c.sharedExpertIntermediateSize > 0) experts += 3 * D * c.sharedExpertIntermediateSize + D;
      m.trainable += experts;
      m.total += experts;
    }
  }
  m.total += shared;
  if (!c.loraExperts.enabled()) m.trainable += shared;  // full post-training
  m.optimizerBytes = 8 * m.trainable;
  m.gradientBytes = 4 * m.trainable;
  return m;
}

}  // namespace upcycle
