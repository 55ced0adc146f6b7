// Sparse upcycling (SPEC §2) and the SPEC §1 invariant: identical experts + renormalized top-k
// compute the dense function, whatever the router.
#include <nlohmann/json.hpp>

#include "model/model_io.h"
#include "upcycle/moe_builder.h"
#include "test_util.h"

using namespace upcycle;

namespace {

double meanLoss(DecoderLMImpl& m, const torch::Tensor& ids) {
  torch::NoGradGuard ng;
  auto out = m.forward(ids);
  auto ls = nextTokenLoss(out.logits, ids);
  return ls.sum.item<double>() / ls.count;
}

class Invariant : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(Invariant, UpcycledModelHasTheDenseLoss) {
  DecoderLM dense = loadModel(test::fixtures() / "models" / GetParam());
  torch::Generator gen = at::detail::createCPUGenerator(7);
  auto ids = torch::randint(0, 64, {3, 9}, gen, torch::kLong);
  for (auto [E, K, freq] : {std::tuple<int64_t, int64_t, int64_t>{4, 2, 1}, {8, 1, 1}, {3, 3, 2}}) {
    DecoderLM moe = sparseUpcycle(*dense, {E, K, freq, 0}, "normal_002", gen);
    EXPECT_NEAR(meanLoss(*moe, ids), meanLoss(*dense, ids), 2e-5) << GetParam() << " E=" << E << " k=" << K;
    // The router really routes: with random routers, experts are picked unevenly but validly.
    auto out = moe->forward(ids);
    ASSERT_FALSE(out.routing.empty());
    EXPECT_EQ(out.routing[0].experts.size(1), K);
    EXPECT_LT(out.routing[0].experts.max().item<int64_t>(), E);
  }
}

INSTANTIATE_TEST_SUITE_P(Bases, Invariant, ::testing::Values("llama_gqa", "qwen2_bias_tied", "mistral_window"));

TEST(SparseUpcycle, ExpertsAreExactCopiesAndConfigIsMixtral) {
  DecoderLM dense = loadModel(test::fixtures() / "models/llama_gqa");
  torch::Generator gen = at::detail::createCPUGenerator(1);
  DecoderLM moe = sparseUpcycle(*dense, {4, 2, 1, 0}, "uniform_std002", gen);
  EXPECT_EQ(moe->config().modelType, "mixtral");
  auto dp = dense->named_parameters();
  auto mp = moe->named_parameters();
  for (int l = 0; l < 2; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    for (int e = 0; e < 4; ++e) {
      EXPECT_TRUE(torch::equal(mp[p + "moe.w_gate"][e], dp[p + "mlp.gate_proj.weight"]));
      EXPECT_TRUE(torch::equal(mp[p + "moe.w_up"][e], dp[p + "mlp.up_proj.weight"]));
      EXPECT_TRUE(torch::equal(mp[p + "moe.w_down"][e], dp[p + "mlp.down_proj.weight"]));
    }
    EXPECT_TRUE(torch::equal(mp[p + "self_attn.q_proj.weight"], dp[p + "self_attn.q_proj.weight"]));
  }
  EXPECT_TRUE(torch::equal(mp["lm_head.weight"], dp["lm_head.weight"]));
}

TEST(SparseUpcycle, QwenBaseOrLayerFrequencyGivesQwen2Moe) {
  DecoderLM dense = loadModel(test::fixtures() / "models/llama_gqa");
  torch::Generator gen = at::detail::createCPUGenerator(1);
  DecoderLM moe = sparseUpcycle(*dense, {4, 2, 2, 0}, "uniform_std002", gen);
  EXPECT_EQ(moe->config().modelType, "qwen2_moe");
  EXPECT_EQ(moe->config().moeLayers, (std::vector<bool>{false, true}));  // every other layer: 2nd, 4th, ...
  EXPECT_TRUE(moe->config().normTopkProb);
}

TEST(RouterInit, DistributionsHaveTheirStatedMoments) {
  torch::Generator gen = at::detail::createCPUGenerator(3);
  auto w = torch::empty({64, 1024});
  initRouter(w, "uniform_std002", gen);
  // Zero mean, std 0.02, bounded by 0.02 * sqrt(3).
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 1e-3);
  EXPECT_NEAR(w.std().item<double>(), 0.02, 5e-4);
  EXPECT_LE(w.abs().max().item<double>(), 0.02 * std::sqrt(3.0) + 1e-7);
  initRouter(w, "normal_002", gen);
  EXPECT_NEAR(w.std().item<double>(), 0.02, 5e-4);
  initRouter(w, "uniform", gen);
  EXPECT_NEAR(w.mean().item<double>(), 0.5, 5e-3);
  EXPECT_GE(w.min().item<double>(), 0.0);
  test::expectErrorContaining([&] { initRouter(w, "xavier", gen); }, {"router_init \"xavier\""});
}

TEST(RouterInit, SameSeedSameRouterDifferentSeedDifferent) {
  auto draw = [](uint64_t seed) {
    torch::Generator g = at::detail::createCPUGenerator(seed);
    auto w = torch::empty({8, 16});
    initRouter(w, "uniform_std002", g);
    return w;
  };
  EXPECT_TRUE(torch::equal(draw(5), draw(5)));
  EXPECT_FALSE(torch::equal(draw(5), draw(6)));
}

TEST(SparseUpcycle, RefusesBadShapes) {
  DecoderLM dense = loadModel(test::fixtures() / "models/llama_gqa");
  torch::Generator gen = at::detail::createCPUGenerator(1);
  test::expectErrorContaining([&] { sparseUpcycle(*dense, {4, 5, 1, 0}, "uniform", gen); },
                              {"top-k (5)", "number of experts (4)"});
  test::expectErrorContaining([&] { sparseUpcycle(*dense, {4, 2, 0, 0}, "uniform", gen); }, {"moe_layer_freq"});
  DecoderLM moe = loadModel(test::fixtures() / "models/mixtral_hub");
  test::expectErrorContaining([&] { sparseUpcycle(*moe, {4, 2, 1, 0}, "uniform", gen); }, {"already an MoE"});
}
