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

INSTANTIATE_TEST_SUITE_P(Bases, Invariant,
                         ::testing::Values("llama_gqa", "qwen2_bias_tied", "mistral_window",
                                           "qwen3_qknorm"));

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

TEST(SparseUpcycle, Qwen3BaseGivesQwen3MoeWithTheDenseLogits) {
  const auto base = test::fixtures() / "models/qwen3_qknorm";
  DecoderLM dense = loadModel(base);
  const auto expected = nlohmann::json::parse(test::readBytes(base / "expected.json"));
  std::vector<int64_t> idv, maskv;
  for (const auto& row : expected["input_ids"])
    for (const auto& v : row) idv.push_back(v.get<int64_t>());
  for (const auto& row : expected["attention_mask"])
    for (const auto& v : row) maskv.push_back(v.get<int64_t>());
  const auto ids = torch::tensor(idv).view({2, -1}), mask = torch::tensor(maskv).view({2, -1});
  torch::NoGradGuard ng;
  const auto denseLogits = dense->forward(ids, mask).logits;
  for (int64_t freq : {1, 2}) {
    SCOPED_TRACE("moe_layer_freq " + std::to_string(freq));
    torch::Generator gen = at::detail::createCPUGenerator(3);
    DecoderLM moe = sparseUpcycle(*dense, {4, 2, freq, 0}, "normal_002", gen);
    const ModelConfig& c = moe->config();
    EXPECT_EQ(c.modelType, "qwen3_moe");
    EXPECT_EQ(c.architecture(), "Qwen3MoeForCausalLM");
    EXPECT_TRUE(c.qkNorm);
    EXPECT_EQ(c.headDim, 16);
    EXPECT_TRUE(c.normTopkProb) << "renormalized top-k keeps the dense function";
    EXPECT_EQ(c.sharedExpertIntermediateSize, 0);
    const std::vector<bool> layers =
        freq == 1 ? std::vector<bool>{true, true} : std::vector<bool>{false, true};
    EXPECT_EQ(c.moeLayers, layers);
    // Through the files, as a user gets it.
    test::TempDir dir;
    saveModel(moe, dir.path());
    DecoderLM back = loadModel(dir.path());
    EXPECT_EQ(back->config().modelType, "qwen3_moe");
    auto dp = dense->named_parameters(), bp = back->named_parameters();
    EXPECT_TRUE(torch::equal(bp["model.layers.1.self_attn.q_norm.weight"],
                             dp["model.layers.1.self_attn.q_norm.weight"]));
    EXPECT_TRUE(torch::equal(bp["model.layers.0.self_attn.k_norm.weight"],
                             dp["model.layers.0.self_attn.k_norm.weight"]));
    auto out = back->forward(ids, mask);
    ASSERT_EQ(out.routing.size(), static_cast<size_t>(freq == 1 ? 2 : 1));
    auto valid = mask.to(torch::kBool).unsqueeze(-1).expand_as(out.logits);
    // The same function up to float32 rounding of w1 * y + w2 * y with w1 + w2 = 1.
    EXPECT_LT((out.logits - denseLogits).abs().masked_select(valid).max().item<double>(), 1e-5);
    // And the float64 reference's dense loss (test_reference.cpp's tolerance for it).
    auto ls = nextTokenLoss(out.logits, ids.masked_fill(mask == 0, -100));
    EXPECT_NEAR(ls.sum.item<double>() / ls.count, expected["loss"].get<double>(), 5e-6);
  }
}

TEST(RouterInit, DistributionsHaveTheirStatedMoments) {
  torch::Generator gen = at::detail::createCPUGenerator(3);
  auto w = torch::empty({64, 1024});
  initRouter(w, "uniform_std002", gen);
  // Mean exactly 0 (the sample mean is subtracted), std 0.02; values within 0.02 sqrt(12) x (1 - m)
  // for the draw's mean m, and m is within 0.01 of 0.5 for 65536 draws.
  EXPECT_NEAR(w.mean().item<double>(), 0.0, 1e-8);
  EXPECT_NEAR(w.std().item<double>(), 0.02, 5e-4);
  EXPECT_LE(w.abs().max().item<double>(), 0.02 * std::sqrt(12.0) * 0.51);
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
