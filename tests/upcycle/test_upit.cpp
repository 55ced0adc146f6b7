// UpIT (SPEC §5): checkpoint selection, GA expansion recomputed from its lineage, parent choice,
// seed buckets, router classification loss; experiment files and their refusals.
#include "model/model_io.h"
#include "pipeline/experiment.h"
#include "test_util.h"
#include "train/evaluator.h"
#include "upcycle/methods.h"
#include "upcycle/upit.h"

using namespace upcycle;

namespace {

// Three "SFT checkpoints": the fixture's FFN plus different fixed perturbations.
std::vector<ExpertFfn> checkpointPool(const ExpertFfn& base) {
  std::vector<ExpertFfn> pool;
  for (int c = 0; c < 3; ++c) {
    torch::Generator g = at::detail::createCPUGenerator(100 + c);
    ExpertFfn f;
    for (size_t l = 0; l < base.gate.size(); ++l) {
      f.gate.push_back(base.gate[l] + 0.05 * (c + 1) * torch::randn(base.gate[l].sizes(), g));
      f.up.push_back(base.up[l] + 0.05 * torch::randn(base.up[l].sizes(), g));
      f.down.push_back(base.down[l] + 0.05 * torch::randn(base.down[l].sizes(), g));
    }
    pool.push_back(f);
  }
  return pool;
}

// Independent distance: mean over layers of 1 - cos(flattened deltas).
double distance(const ExpertFfn& a, const ExpertFfn& b, const ExpertFfn& base) {
  double total = 0;
  for (size_t l = 0; l < base.gate.size(); ++l) {
    auto da = torch::cat({(a.gate[l] - base.gate[l]).flatten(), (a.up[l] - base.up[l]).flatten(), (a.down[l] - base.down[l]).flatten()});
    auto db = torch::cat({(b.gate[l] - base.gate[l]).flatten(), (b.up[l] - base.up[l]).flatten(), (b.down[l] - base.down[l]).flatten()});
    total += 1.0 - torch::cosine_similarity(da.unsqueeze(0), db.unsqueeze(0)).item<double>();
  }
  return total / base.gate.size();
}

}  // namespace

TEST(Upit, CheckpointSelectionRules) {
  EXPECT_EQ(selectCheckpoints(8, 4, "even", {}), (std::vector<int64_t>{1, 3, 5, 7}));  // every other, the last included
  EXPECT_EQ(selectCheckpoints(8, 3, "even", {}), (std::vector<int64_t>{2, 4, 7}));     // round(8/3)-1, round(16/3)-1, 7
  EXPECT_EQ(selectCheckpoints(8, 2, "latest", {}), (std::vector<int64_t>{6, 7}));
  EXPECT_EQ(selectCheckpoints(8, 2, "list", {1, 8}), (std::vector<int64_t>{0, 7}));
  test::expectErrorContaining([] { selectCheckpoints(3, 4, "even", {}); }, {"wants 4 checkpoint experts but only 3"});
  test::expectErrorContaining([] { selectCheckpoints(8, 2, "list", {1, 9}); }, {"entry 9 is outside 1..8"});
}

TEST(Upit, ChildrenEqualTheRecordedMergePlusMutation) {
  DecoderLM d = loadModel(test::fixtures() / "models/llama_gqa");
  const ExpertFfn base = ffnOf(*d);
  std::vector<ExpertFfn> pool = checkpointPool(base);
  const std::vector<ExpertFfn> original = pool;
  GaConfig ga;  // distance rule, alpha in [0, 1], DARE p = 0.3 with 1 / (1 - p), linear merge
  torch::Generator gen = at::detail::createCPUGenerator(42);
  auto lineage = expandPool(pool, base, 6, ga, gen);
  ASSERT_EQ(pool.size(), 6u);
  ASSERT_EQ(lineage.size(), 3u);
  for (size_t i = 0; i < 3; ++i)  // the M checkpoint experts are untouched
    for (size_t l = 0; l < 2; ++l) EXPECT_TRUE(torch::equal(pool[i].gate[l], original[i].gate[l]));

  // The most distant pair comes first.
  double best = -1;
  std::pair<int64_t, int64_t> bestPair;
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t j = i + 1; j < 3; ++j)
      if (double dd = distance(original[i], original[j], base); dd > best) { best = dd; bestPair = {i, j}; }
  EXPECT_EQ(lineage[0].parentA, bestPair.first);
  EXPECT_EQ(lineage[0].parentB, bestPair.second);
  EXPECT_NEAR(lineage[0].distance, best, 1e-6);  // the test works in float32, the engine in double

  // Recompute every child from its record: base + keep * (alpha A + (1 - alpha) B - base) / (1 - p),
  // keep = U[0,1) >= p drawn from a CPU generator seeded with maskSeed, tensors in order gate, up, down.
  for (const auto& e : lineage) {
    EXPECT_EQ(e.child, static_cast<int64_t>(&e - &lineage[0]) + 3);
    EXPECT_GE(e.alpha, 0.0);
    EXPECT_LE(e.alpha, 1.0);
    torch::Generator g = at::detail::createCPUGenerator(e.maskSeed);
    const ExpertFfn& A = pool[e.parentA];
    const ExpertFfn& B = pool[e.parentB];
    auto expect = [&](const torch::Tensor& a, const torch::Tensor& b, const torch::Tensor& b0, const torch::Tensor& got) {
      auto u = torch::empty(a.sizes(), torch::kFloat);
      u.uniform_(0.0, 1.0, g);
      auto keep = (u >= e.dareP).to(torch::kFloat);
      auto want = b0 + keep * (e.alpha * a + (1 - e.alpha) * b - b0) / (1 - e.dareP);
      EXPECT_LT((want - got).abs().max().item<double>(), 1e-5) << "child " << e.child;
    };
    for (size_t l = 0; l < 2; ++l) {
      expect(A.gate[l], B.gate[l], base.gate[l], pool[e.child].gate[l]);
      expect(A.up[l], B.up[l], base.up[l], pool[e.child].up[l]);
      expect(A.down[l], B.down[l], base.down[l], pool[e.child].down[l]);
    }
  }
  // Pairs are not reused while unused ones remain: 3 children from the 3 original pairs or children.
  std::set<std::pair<int64_t, int64_t>> pairs;
  for (const auto& e : lineage) pairs.insert({e.parentA, e.parentB});
  EXPECT_EQ(pairs.size(), 3u);
}

TEST(Upit, SeedBucketsAreTheLowestLossExpertsAndAddUp) {
  DecoderLM d = loadModel(test::fixtures() / "models/llama_gqa");
  const ExpertFfn base = ffnOf(*d);
  std::vector<ExpertFfn> pool = checkpointPool(base);
  torch::Generator gen = at::detail::createCPUGenerator(1);
  DecoderLM moe = assembleMoe({d.get()}, pool, {3, 2, 1, 0}, "uniform_std002", gen);
  std::vector<TokenRecord> seeds;
  for (int i = 0; i < 20; ++i) {
    TokenRecord r;
    for (int t = 0; t < 6; ++t) r.inputIds.push_back((i * 7 + t * 3) % 64);
    seeds.push_back(r);
  }
  auto bucket = assignSeeds(*moe, pool, seeds, 4);
  ASSERT_EQ(bucket.size(), 20u);
  std::vector<int64_t> counts(3, 0);
  for (auto b : bucket) counts.at(b) += 1;
  EXPECT_EQ(counts[0] + counts[1] + counts[2], 20);
  // Independently: a dense model loaded afresh with each expert's FFN; the lowest mean loss wins.
  for (int64_t e = 0; e < 3; ++e) {
    DecoderLM x = loadModel(test::fixtures() / "models/llama_gqa");
    torch::NoGradGuard ng;
    for (size_t l = 0; l < 2; ++l) {
      layerAt(*x, l)->mlp->gate_proj->weight.copy_(pool[e].gate[l]);
      layerAt(*x, l)->mlp->up_proj->weight.copy_(pool[e].up[l]);
      layerAt(*x, l)->mlp->down_proj->weight.copy_(pool[e].down[l]);
    }
    for (size_t i = 0; i < seeds.size(); ++i) {
      auto ids = torch::tensor(seeds[i].inputIds).view({1, -1});
      auto ls = nextTokenLoss(x->forward(ids).logits, ids);
      const double lossE = ls.sum.item<double>() / ls.count;
      if (bucket[i] == e) continue;
      // The chosen expert's loss is not higher than this one's.
      DecoderLM y = loadModel(test::fixtures() / "models/llama_gqa");
      for (size_t l = 0; l < 2; ++l) {
        layerAt(*y, l)->mlp->gate_proj->weight.copy_(pool[bucket[i]].gate[l]);
        layerAt(*y, l)->mlp->up_proj->weight.copy_(pool[bucket[i]].up[l]);
        layerAt(*y, l)->mlp->down_proj->weight.copy_(pool[bucket[i]].down[l]);
      }
      auto lc = nextTokenLoss(y->forward(ids).logits, ids);
      EXPECT_LE(lc.sum.item<double>() / lc.count, lossE + 1e-6) << "record " << i;
    }
  }
}

TEST(Upit, RouterClassificationLossByHand) {
  // One MoE layer, E = 2, one record of 2 tokens whose expert is 1.
  ForwardOutput out;
  RouterRecord r;
  r.logits = torch::tensor({0.0f, 0.0f, 2.0f, -2.0f}).view({2, 2});
  out.routing.push_back(r);
  auto loss = routerClassificationLoss(out, torch::tensor({int64_t(1)}), torch::ones({1, 2}, torch::kLong), 2);
  // targets [0,1] for both tokens: token 0: -log(1-s(0)) = -log s(0) = ln 2; token 1: -log(1-s(2)) and
  // -log s(-2), both = log(1 + e^2).
  const double want = (2 * std::log(2.0) + 2 * std::log(1 + std::exp(2.0))) / 4;
  EXPECT_NEAR(loss.item<double>(), want, 1e-6);
}

// ---------------------------------------------------------------------------- experiment files

namespace {
const char* kBase = R"(
name: t
base: {pretrain: {steps: 5}}
sft: {epochs: 2, save_every: 0.25}
runs:
)";
std::string exp(const std::string& runs) { return std::string(kBase) + runs; }
}  // namespace

TEST(Experiment, ParsesDefaultsAndRoundTrips) {
  Experiment e = parseExperiment(exp("  - {method: sparse, experts: 4, top_k: 1}\n  - {name: u, method: upit, experts: 8, checkpoints: 4, ga: {alpha: [0.2, 0.8], merge: ties}}\n"), "e.yaml");
  ASSERT_EQ(e.runs.size(), 2u);
  EXPECT_EQ(e.runs[0].name, "sparse");
  EXPECT_EQ(e.runs[0].topK, 1);
  EXPECT_EQ(e.runs[1].mergeOp, "ties");
  EXPECT_DOUBLE_EQ(e.runs[1].alphaMin, 0.2);
  EXPECT_DOUBLE_EQ(e.runs[1].dareP, 0.3);   // SPEC default
  EXPECT_DOUBLE_EQ(e.runs[1].clsWeightA, 0.5);
  Experiment again = parseExperiment(experimentYaml(e), "written");
  EXPECT_EQ(again.runs[1].checkpoints, 4);
  EXPECT_DOUBLE_EQ(again.runs[1].alphaMax, 0.8);
  EXPECT_EQ(again.runs[1].mergeOp, "ties");
  EXPECT_EQ(again.pretrainSteps, 5);
  EXPECT_DOUBLE_EQ(again.sftTraining.saveEvery, 0.25);
}

TEST(Experiment, ExistingSftCheckpointsReplaceTheSftStage) {
  const std::string dir = (test::fixtures() / "models").string();
  const std::string yaml = "name: t\nbase: {path: " + dir + "/llama_gqa}\nsft: {checkpoints: [" + dir + "/llama_gqa, " + dir +
                           "/llama_bf16]}\nruns:\n  - {method: upit, experts: 4, checkpoints: 2}\n";
  Experiment e = parseExperiment(yaml, "e.yaml");
  ASSERT_EQ(e.sftCheckpoints.size(), 2u);
  EXPECT_EQ(e.sftCheckpoints[1], std::filesystem::path(dir + "/llama_bf16"));
  Experiment again = parseExperiment(experimentYaml(e), "written");
  EXPECT_EQ(again.sftCheckpoints, e.sftCheckpoints);
  std::string three = yaml;
  three.replace(three.find("checkpoints: 2"), 14, "checkpoints: 3");
  test::expectErrorContaining([&] { parseExperiment(three, "e.yaml"); },
                              {"runs[0].checkpoints", "exceeds the 2 checkpoints listed in sft.checkpoints"});
  std::string missing = yaml;
  missing.replace(missing.find("/llama_bf16"), 11, "/nowhere");
  test::expectErrorContaining([&] { parseExperiment(missing, "e.yaml"); }, {"sft.checkpoints[1]", "has no config.json"});
}

TEST(Experiment, BadSettingsAreRefusedByField) {
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: sparse, experts: 2, top_k: 3}\n"), "e.yaml"); },
                              {"e.yaml", "runs[0].top_k", "(3) must be between 1 and experts (2)"});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: drop, ratio: 1.5}\n"), "e.yaml"); },
                              {"runs[0].ratio must be in [0, 1]"});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: drop, ratoi: 0.5}\n"), "e.yaml"); },
                              {"unknown key runs[0].ratoi"});
  test::expectErrorContaining(
      [] { parseExperiment(exp("  - {method: upit, experts: 8, checkpoints: 4, expand: false}\n"), "e.yaml"); },
      {"runs[0].expand", "checkpoints (4) must be at least experts (8)"});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: upit, experts: 8, checkpoints: 12}\n"), "e.yaml"); },
                              {"runs[0].checkpoints", "exceeds the 8 checkpoints"});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: moe}\n"), "e.yaml"); }, {"runs[0].method", "\"moe\""});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: sparse, experts: eight}\n"), "e.yaml"); },
                              {"runs[0].experts has a value of the wrong type"});
  test::expectErrorContaining([] { parseExperiment("name: [unclosed", "e.yaml"); }, {"e.yaml", "not valid YAML"});
}

TEST(Experiment, SeedsRepeatsAndPinnedStages) {
  // seeds: a list; repeats: N = seed .. seed + N - 1; a stage's own seed pins it across repeats.
  Experiment e = parseExperiment("name: s\nseed: 10\nrepeats: 3\nbase: {pretrain: {seed: 4, steps: 5}}\n"
                                 "data: {seed: 2}\nsft: {seed: 1, epochs: 1}\nruns:\n  - {method: sparse}\n"
                                 "  - {name: pinned, method: dense, seed: 77}\n",
                                 "s.yaml");
  EXPECT_EQ(repeatSeeds(e), (std::vector<uint64_t>{10, 11, 12}));
  EXPECT_TRUE(e.baseSeed.set && e.dataSeed.set && e.sftSeed.set);
  EXPECT_EQ(e.baseSeed.orRepeat(11), 4u);
  EXPECT_EQ(e.dataSeed.value, 2u);
  EXPECT_EQ(e.sftSeed.value, 1u);
  const Experiment one = experimentForSeed(e, 11);
  EXPECT_EQ(one.seed, 11u);
  EXPECT_TRUE(one.seeds.empty());
  EXPECT_EQ(one.out, e.out / "seed-11");
  EXPECT_EQ(one.runs[0].seed, 11u) << "a run without its own seed follows the repeat";
  EXPECT_EQ(one.runs[1].seed, 77u) << "a pinned run keeps its seed";
  // The written file says what was read: the seeds, the pins, and a run's seed only where it was set.
  const std::string yaml = experimentYaml(e);
  EXPECT_NE(yaml.find("seeds: [10, 11, 12]"), std::string::npos) << yaml;
  Experiment again = parseExperiment(yaml, "written");
  EXPECT_EQ(again.seeds, e.seeds);
  EXPECT_EQ(again.baseSeed.value, 4u);
  EXPECT_EQ(again.dataSeed.value, 2u);
  EXPECT_TRUE(again.sftSeed.set);
  EXPECT_FALSE(again.runs[0].seedSet) << "saving must not pin every run to the experiment's seed";
  EXPECT_TRUE(again.runs[1].seedSet);
  EXPECT_EQ(again.runs[1].seed, 77u);
  // One seed: the output folder is the experiment's own.
  Experiment single = parseExperiment(exp("  - {method: sparse}\n"), "e.yaml");
  EXPECT_EQ(repeatSeeds(single), (std::vector<uint64_t>{0}));
  EXPECT_EQ(experimentForSeed(single, 0).out, single.out);
  EXPECT_EQ(parseExperiment("name: s\nseeds: [5, 1]\nbase: {pretrain: {steps: 5}}\nruns: [{method: dense}]\n", "s").seeds,
            (std::vector<uint64_t>{5, 1}));

  test::expectErrorContaining([] { parseExperiment(exp("  - {method: sparse}\n") + "seeds: [1, 1]\n", "e.yaml"); },
                              {"e.yaml", "seeds", "seed 1 twice"});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: sparse}\n") + "seeds: []\n", "e.yaml"); },
                              {"seeds must list at least one seed"});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: sparse}\n") + "repeats: 0\n", "e.yaml"); },
                              {"repeats must be in [1, 1000], got 0"});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: sparse}\n") + "repeats: 2\nseeds: [3]\n", "e.yaml"); },
                              {"seeds or repeats, not both"});
  test::expectErrorContaining([] { parseExperiment(exp("  - {method: sparse}\n  - {method: sparse}\n"), "e.yaml"); },
                              {"two runs named \"sparse\""});
}

TEST(Btx, SourcesWithOtherArchitecturesAreRefused) {
  DecoderLM a = loadModel(test::fixtures() / "models/llama_gqa");
  DecoderLM q = loadModel(test::fixtures() / "models/qwen2_bias_tied");
  torch::Generator gen = at::detail::createCPUGenerator(1);
  test::expectErrorContaining([&] { btxUpcycle({a.get(), q.get()}, {4, 2, 1, 0}, "uniform", gen); }, {"architectures do not match (model_type llama vs qwen2)"});
}
