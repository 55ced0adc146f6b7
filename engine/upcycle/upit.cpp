#include "upcycle/upit.h"

#include <cmath>
#include <functional>
#include <limits>
#include <set>

#include "core/error.h"
#include "train/evaluator.h"
#include "train/trainer.h"
#include "upcycle/methods.h"

namespace upcycle {

ExpertFfn ffnOf(DecoderLMImpl& dense) {
  UPCYCLE_CHECK(!dense.config().isMoe(), "UpIT experts come from dense checkpoints");
  torch::NoGradGuard ng;
  ExpertFfn f;
  for (size_t l = 0; l < dense.model->layers->size(); ++l) {
    auto m = layerAt(dense, l)->mlp;
    f.gate.push_back(m->gate_proj->weight.detach().to(torch::kCPU, torch::kFloat).clone());
    f.up.push_back(m->up_proj->weight.detach().to(torch::kCPU, torch::kFloat).clone());
    f.down.push_back(m->down_proj->weight.detach().to(torch::kCPU, torch::kFloat).clone());
  }
  return f;
}

std::vector<int64_t> selectCheckpoints(int64_t n, int64_t m, const std::string& rule, const std::vector<int64_t>& list) {
  UPCYCLE_CHECK(m >= 1, "UpIT needs at least one checkpoint expert, got ", m);
  std::vector<int64_t> out;
  if (rule == "list") {
    UPCYCLE_CHECK(static_cast<int64_t>(list.size()) == m, "checkpoint list has ", list.size(), " entries, expected ", m);
    for (int64_t i : list) {
      UPCYCLE_CHECK(i >= 1 && i <= n, "checkpoint list entry ", i, " is outside 1..", n);
      out.push_back(i - 1);
    }
    return out;
  }
  UPCYCLE_CHECK(m <= n, "UpIT wants ", m, " checkpoint experts but only ", n, " checkpoints are available");
  if (rule == "latest") {
    for (int64_t i = n - m; i < n; ++i) out.push_back(i);
  } else if (rule == "even") {
    // Evenly spaced, ending at the last: positions round((k + 1) * n / m) - 1.
    for (int64_t k = 0; k < m; ++k) out.push_back(std::llround(double(k + 1) * double(n) / double(m)) - 1);
  } else {
    throw UserError("checkpoint selection \"" + rule + "\" is not one of even, latest, list");
  }
  return out;
}

void GaConfig::validate() const {
  UPCYCLE_CHECK(parentRule == "distance" || parentRule == "random" || parentRule == "tournament",
                "ga.parent_rule \"", parentRule, "\" is not one of distance, random, tournament");
  UPCYCLE_CHECK(distance == "cosine_delta" || distance == "cosine" || distance == "l2", "ga.distance \"", distance,
                "\" is not one of cosine_delta, cosine, l2");
  UPCYCLE_CHECK(alphaMin >= 0 && alphaMax <= 1 && alphaMin <= alphaMax, "ga.alpha range [", alphaMin, ", ", alphaMax,
                "] must lie in [0, 1] with min <= max");
  UPCYCLE_CHECK(dareP >= 0 && dareP < 1, "ga.dare_p must be in [0, 1), got ", dareP);
  UPCYCLE_CHECK(dareRescale == "inverse" || dareRescale == "l1", "ga.dare_rescale \"", dareRescale,
                "\" is not one of inverse, l1");
  checkMergeOperator(mergeOp);
  UPCYCLE_CHECK(tiesDensity > 0 && tiesDensity <= 1, "ga.ties_density must be in (0, 1], got ", tiesDensity);
  UPCYCLE_CHECK(tournamentSize >= 1, "ga.tournament_size must be at least 1, got ", tournamentSize);
}

double expertDistance(const ExpertFfn& a, const ExpertFfn& b, const ExpertFfn& base, const std::string& metric) {
  double total = 0;
  const size_t L = a.gate.size();
  for (size_t l = 0; l < L; ++l) {
    auto vec = [&](const ExpertFfn& x, bool delta) {
      auto g = delta ? x.gate[l] - base.gate[l] : x.gate[l];
      auto u = delta ? x.up[l] - base.up[l] : x.up[l];
      auto d = delta ? x.down[l] - base.down[l] : x.down[l];
      return torch::cat({g.reshape({-1}), u.reshape({-1}), d.reshape({-1})}).to(torch::kDouble);
    };
    if (metric == "l2") {
      total += (vec(a, true) - vec(b, true)).norm().item<double>();
    } else {
      const bool delta = metric == "cosine_delta";
      auto va = vec(a, delta), vb = vec(b, delta);
      const double na = va.norm().item<double>(), nb = vb.norm().item<double>();
      const double cosv = (na > 0 && nb > 0) ? (va.dot(vb) / (na * nb)).item<double>() : 0.0;
      total += 1.0 - cosv;
    }
  }
  return total / static_cast<double>(L);
}

ExpertFfn makeChild(const ExpertFfn& a, const ExpertFfn& b, const ExpertFfn& base, double alpha, const GaConfig& ga,
                    uint64_t maskSeed) {
  torch::NoGradGuard ng;
  torch::Generator maskGen = at::detail::createCPUGenerator(maskSeed);
  const DareRescale rescale = ga.dareRescale == "l1" ? DareRescale::L1 : DareRescale::Inverse;
  auto merge = [&](const torch::Tensor& x, const torch::Tensor& y, const torch::Tensor& b0) {
    const std::vector<torch::Tensor> thetas = {x, y};
    const std::vector<double> w = {alpha, 1.0 - alpha};
    if (ga.mergeOp == "linear") return mergeLinear(thetas, w);
    if (ga.mergeOp == "task_arithmetic") return mergeTaskArithmetic(b0, thetas, w, 1.0);
    if (ga.mergeOp == "ties") return mergeTies(b0, thetas, w, ga.tiesDensity);
    if (ga.mergeOp == "dare_linear") return mergeDareLinear(b0, thetas, w, ga.dareP, rescale, maskGen);
    if (ga.mergeOp == "dare_ties") return mergeDareTies(b0, thetas, w, ga.dareP, rescale, maskGen);
    return mergeSlerp(x, y, 1.0 - alpha);  // slerp: alpha is A's share
  };
  ExpertFfn child;
  for (size_t l = 0; l < a.gate.size(); ++l) {
    // Order of the mask draws: gate, up, down, layer by layer.
    auto mutate = [&](const torch::Tensor& merged, const torch::Tensor& b0) {
      return b0 + dare(merged - b0, ga.dareP, rescale, maskGen);
    };
    child.gate.push_back(mutate(merge(a.gate[l], b.gate[l], base.gate[l]), base.gate[l]));
    child.up.push_back(mutate(merge(a.up[l], b.up[l], base.up[l]), base.up[l]));
    child.down.push_back(mutate(merge(a.down[l], b.down[l], base.down[l]), base.down[l]));
  }
  return child;
}

std::vector<LineageEntry> growPool(int64_t n0, int64_t target, const GaConfig& ga, torch::Generator& gen,
                                   const std::function<double(int64_t, int64_t)>& distance,
                                   const std::function<void(const LineageEntry&)>& addChild) {
  ga.validate();
  UPCYCLE_CHECK(n0 >= 2 || n0 >= target, "the genetic expansion needs at least 2 experts to merge, got ", n0);
  std::vector<LineageEntry> lineage;
  std::set<std::pair<int64_t, int64_t>> used;
  auto uniform = [&] {
    auto u = torch::empty({1}, torch::kDouble);
    u.uniform_(0.0, 1.0, gen);
    return u.item<double>();
  };
  int64_t n = n0;
  auto randomPair = [&] {
    auto idx = torch::randperm(n, gen, torch::kLong);
    int64_t x = idx[0].item<int64_t>(), y = idx[1].item<int64_t>();
    return std::make_pair(std::min(x, y), std::max(x, y));
  };
  while (n < target) {
    std::pair<int64_t, int64_t> parents{0, 1};
    double bestDist = -1;
    if (ga.parentRule == "distance") {
      for (int pass = 0; pass < 2 && bestDist < 0; ++pass)
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = i + 1; j < n; ++j) {
            if (pass == 0 && used.count({i, j})) continue;
            const double d = distance(i, j);
            if (d > bestDist) { bestDist = d; parents = {i, j}; }
          }
    } else if (ga.parentRule == "random") {
      parents = randomPair();
      bestDist = distance(parents.first, parents.second);
    } else {  // tournament: the most distant of `tournamentSize` random pairs
      for (int64_t t = 0; t < ga.tournamentSize; ++t) {
        auto p = randomPair();
        const double d = distance(p.first, p.second);
        if (d > bestDist) { bestDist = d; parents = p; }
      }
    }
    used.insert(parents);
    LineageEntry e;
    e.child = n;
    e.parentA = parents.first;
    e.parentB = parents.second;
    e.alpha = ga.alphaMin + (ga.alphaMax - ga.alphaMin) * uniform();
    e.dareP = ga.dareP;
    e.maskSeed = static_cast<uint64_t>(uniform() * 9007199254740992.0);  // 2^53: exact in JSON/SQLite
    e.distance = bestDist;
    e.mergeOp = ga.mergeOp;
    addChild(e);
    lineage.push_back(e);
    ++n;
  }
  return lineage;
}

std::vector<LineageEntry> expandPool(std::vector<ExpertFfn>& pool, const ExpertFfn& base, int64_t target,
                                     const GaConfig& ga, torch::Generator& gen) {
  return growPool(
      static_cast<int64_t>(pool.size()), target, ga, gen,
      [&](int64_t i, int64_t j) { return expertDistance(pool[i], pool[j], base, ga.distance); },
      [&](const LineageEntry& e) {
        pool.push_back(makeChild(pool[e.parentA], pool[e.parentB], base, e.alpha, ga, e.maskSeed));
      });
}

DecoderLM assembleMoe(const std::vector<DecoderLMImpl*>& nonFfn, const std::vector<ExpertFfn>& pool,
                      const MoeShape& shape, const std::string& routerInit, torch::Generator& gen) {
  UPCYCLE_CHECK(!nonFfn.empty(), "assembly needs the models that give the non-FFN tensors");
  UPCYCLE_CHECK(static_cast<int64_t>(pool.size()) == shape.experts, "assembly: ", pool.size(), " experts for E = ",
                shape.experts);
  checkRouterInit(routerInit);
  const ModelConfig mc = moeConfigFromDense(nonFfn[0]->config(), shape);
  UPCYCLE_CHECK(mc.expertIntermediateSize == nonFfn[0]->config().intermediateSize, "UpIT experts are whole FFNs");
  DecoderLM moe(mc);
  averageSharedWeights(nonFfn, *moe);
  torch::NoGradGuard ng;
  initAllRouters(*moe, routerInit, gen);
  for (size_t l = 0; l < moe->model->layers->size(); ++l) {
    auto layer = layerAt(*moe, l);
    if (!layer->moe) continue;
    for (int64_t e = 0; e < mc.numExperts; ++e) {
      layer->moe->w_gate[e].copy_(pool[e].gate[l]);
      layer->moe->w_up[e].copy_(pool[e].up[l]);
      layer->moe->w_down[e].copy_(pool[e].down[l]);
    }
  }
  return moe;
}

std::vector<int64_t> assignSeeds(DecoderLMImpl& moe, const std::vector<ExpertFfn>& pool,
                                 const std::vector<TokenRecord>& seeds, int64_t batchSize) {
  return assignSeedsWith(moe, static_cast<int64_t>(pool.size()),
                         [&](int64_t e, size_t l, torch::Tensor& gate, torch::Tensor& up, torch::Tensor& down) {
                           gate.copy_(pool[e].gate[l]);
                           up.copy_(pool[e].up[l]);
                           down.copy_(pool[e].down[l]);
                         },
                         seeds, batchSize);
}

std::vector<int64_t> assignSeedsWith(DecoderLMImpl& moe, int64_t experts, const InstallExpert& install,
                                     const std::vector<TokenRecord>& seeds, int64_t batchSize) {
  UPCYCLE_CHECK(!seeds.empty(), "the seed set is empty");
  // A dense model with the MoE's shared tensors; each expert's FFN goes into every layer in turn.
  ModelConfig dc = moe.config();
  dc.modelType = dc.modelType == "qwen3_moe" ? "qwen3" : dc.attentionBias ? "qwen2" : "llama";
  dc.numExperts = 0;
  dc.topK = 0;
  dc.moeLayers.clear();
  dc.loraExperts.rank = 0;
  dc.intermediateSize = dc.expertIntermediateSize;
  DecoderLM dense(dc);
  copySharedWeights(moe, *dense);
  dense->to(moe.lmHeadWeight().device());
  std::vector<double> best(seeds.size(), std::numeric_limits<double>::infinity());
  std::vector<int64_t> bucket(seeds.size(), 0);
  for (int64_t e = 0; e < experts; ++e) {
    {
      torch::NoGradGuard ng;
      for (size_t l = 0; l < dense->model->layers->size(); ++l) {
        auto m = layerAt(*dense, l)->mlp;
        install(e, l, m->gate_proj->weight, m->up_proj->weight, m->down_proj->weight);
      }
    }
    const auto losses = recordLosses(*dense, seeds, batchSize);
    for (size_t i = 0; i < seeds.size(); ++i)
      if (losses[i].mean() < best[i]) {  // ties go to the lower expert index
        best[i] = losses[i].mean();
        bucket[i] = e;
      }
  }
  return bucket;
}

torch::Tensor routerClassificationLoss(const ForwardOutput& out, const torch::Tensor& tags, const torch::Tensor& mask,
                                       int64_t E) {
  UPCYCLE_CHECK(!out.routing.empty(), "router classification needs an MoE model");
  const int64_t T = mask.size(1);
  auto valid = mask.reshape({-1}).to(torch::kBool);                       // (B*T)
  auto tokenTags = tags.unsqueeze(1).expand({tags.size(0), T}).reshape({-1}).index({valid});
  auto target = torch::one_hot(tokenTags, E).to(torch::kFloat);           // (N, E)
  torch::Tensor total = torch::zeros({}, target.options());
  for (const auto& r : out.routing)
    total = total + torch::binary_cross_entropy_with_logits(r.logits.index({valid}), target);
  return total / static_cast<double>(out.routing.size());
}

TrainResult preoptimizeRouters(DecoderLM& moe, const std::vector<TokenRecord>& taggedSeeds, double a, TrainOptions o,
                               TrainObserver* observer, const std::atomic<bool>* cancel) {
  UPCYCLE_CHECK(a >= 0 && a <= 1, "router pre-optimization weight a must be in [0, 1], got ", a);
  for (const auto& r : taggedSeeds)
    UPCYCLE_CHECK(r.tag >= 0 && r.tag < moe->config().numExperts, "seed record without a valid expert tag");
  o.trainOnly = {"moe.router"};
  o.auxLossCoef = 0.0;
  o.zLossCoef = 0.0;
  o.stage = "router-preopt";
  TrainHooks hooks;
  hooks.lmWeight = a;
  hooks.extraWeight = 1.0 - a;
  const int64_t E = moe->config().numExperts;
  hooks.extraLoss = [E](const ForwardOutput& out, const torch::Tensor& tags, const torch::Tensor& mask) {
    return routerClassificationLoss(out, tags, mask, E);
  };
  return trainDecoder(moe, taggedSeeds, o, observer, cancel, hooks);
}

}  // namespace upcycle
