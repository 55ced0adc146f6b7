#pragma once
// UpIT, Upcycling Instruction Tuning (Hui et al., 2024), SPEC §5. Internal (includes torch).
//   5.1 experts from intermediate SFT checkpoints (selectCheckpoints, ffnOf)
//   5.2 expansion by a genetic algorithm: parent selection, weighted merge, DARE mutation (expandPool)
//   5.3 seed data assigned to the expert with the lowest loss (assignSeeds); routers pre-optimized
//       with a * L_lm + (1 - a) * L_cls (preoptimizeRouters)
//   5.4 assembly (assembleMoe); post-training is the ordinary trainer.
#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "api/training.h"
#include "core/lineage.h"
#include "data/token_records.h"
#include "upcycle/merge.h"
#include "upcycle/moe_builder.h"

namespace upcycle {

// One candidate expert: the FFN weights of every layer, float32 on the CPU.
struct ExpertFfn {
  std::vector<torch::Tensor> gate, up, down;  // per layer: (F, D), (F, D), (D, F)
};
ExpertFfn ffnOf(DecoderLMImpl& dense);

// 5.1: which of `available` checkpoints (in step order) become the M experts. rule "even" (evenly
// spaced, the last included), "latest", or "list" (1-based positions in `list`).
std::vector<int64_t> selectCheckpoints(int64_t available, int64_t m, const std::string& rule,
                                       const std::vector<int64_t>& list);

struct GaConfig {
  std::string parentRule = "distance";  // distance | random | tournament
  std::string distance = "cosine_delta";  // cosine_delta | cosine | l2
  double alphaMin = 0.0, alphaMax = 1.0;
  double dareP = 0.3;
  std::string dareRescale = "inverse";  // inverse (1 / (1 - p)) | l1
  std::string mergeOp = "linear";       // see checkMergeOperator
  double tiesDensity = 0.5;
  int64_t tournamentSize = 3;
  void validate() const;
};

using LineageEntry = Lineage;

// Mean over layers of the configured distance between two experts (deltas from `base`).
double expertDistance(const ExpertFfn& a, const ExpertFfn& b, const ExpertFfn& base, const std::string& metric);
// The child of a and b before and after mutation (see LineageEntry).
ExpertFfn makeChild(const ExpertFfn& a, const ExpertFfn& b, const ExpertFfn& base, double alpha,
                    const GaConfig& ga, uint64_t maskSeed);
// 5.2's selection loop, whatever an expert is: grows a pool of n0 experts to `target`, reading
// distance(i, j) between pool members and handing each new entry (parents, alpha, mask seed) to
// addChild, which appends the child. Draw order from `gen`: pair draws, then alpha, then the mask seed.
std::vector<LineageEntry> growPool(int64_t n0, int64_t target, const GaConfig& ga, torch::Generator& gen,
                                   const std::function<double(int64_t, int64_t)>& distance,
                                   const std::function<void(const LineageEntry&)>& addChild);
// 5.2: grows `pool` to `target` experts; children join the pool and may be parents later. With the
// distance rule, the most distant pair not yet used as parents is chosen (any pair once all are used).
std::vector<LineageEntry> expandPool(std::vector<ExpertFfn>& pool, const ExpertFfn& base, int64_t target,
                                     const GaConfig& ga, torch::Generator& gen);

// 5.4: the MoE: non-FFN tensors (and the FFNs of dense layers) from `nonFfn` (averaged), experts
// from `pool`, routers drawn from `gen`.
DecoderLM assembleMoe(const std::vector<DecoderLMImpl*>& nonFfn, const std::vector<ExpertFfn>& pool,
                      const MoeShape& shape, const std::string& routerInit, torch::Generator& gen);

// 5.3: the expert whose dense model (the MoE's non-FFN tensors with that expert's FFN in every layer)
// has the lowest loss on each record. Returns one expert index per record.
std::vector<int64_t> assignSeeds(DecoderLMImpl& moe, const std::vector<ExpertFfn>& pool,
                                 const std::vector<TokenRecord>& seeds, int64_t batchSize);
// The same for experts of any kind: install(e, layer, gate, up, down) writes expert e's FFN of `layer`
// into the dense model's weights (F, D), (F, D), (D, F).
using InstallExpert = std::function<void(int64_t, size_t, torch::Tensor&, torch::Tensor&, torch::Tensor&)>;
std::vector<int64_t> assignSeedsWith(DecoderLMImpl& moe, int64_t experts, const InstallExpert& install,
                                     const std::vector<TokenRecord>& seeds, int64_t batchSize);

// L_cls at every MoE layer and real token: BCE(sigmoid(z), onehot(record's expert)), averaged over
// tokens and layers. tags (B) hold each record's expert; mask (B, T) the real tokens.
torch::Tensor routerClassificationLoss(const ForwardOutput& out, const torch::Tensor& tags, const torch::Tensor& mask,
                                       int64_t numExperts);

// Trains the routers alone on the tagged seed records with a * L_lm + (1 - a) * L_cls.
TrainResult preoptimizeRouters(DecoderLM& moe, const std::vector<TokenRecord>& taggedSeeds, double a,
                               TrainOptions o, TrainObserver* observer, const std::atomic<bool>* cancel);

}  // namespace upcycle
