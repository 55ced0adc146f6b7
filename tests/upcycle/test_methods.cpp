// Conversions (SPEC §2-3) and merge operators, checked with independent arithmetic.
#include <set>

#include "api/models.h"
#include "model/model_io.h"
#include "test_util.h"
#include "upcycle/merge.h"
#include "upcycle/methods.h"

using namespace upcycle;

namespace {

DecoderLM dense() {
  return loadModel(test::fixtures() / "models/llama_gqa");
}  // d_ff 48, d 32, 2 layers

// Index of the dense row equal to `row` bit for bit, or -1.
int64_t matchRow(const torch::Tensor& denseRows, const torch::Tensor& row) {
  for (int64_t i = 0; i < denseRows.size(0); ++i)
    if (torch::equal(denseRows[i], row)) return i;
  return -1;
}

// For each expert row i: which dense row it is (-1 = redrawn).
std::vector<int64_t> matches(const torch::Tensor& denseRows, const torch::Tensor& expertRows) {
  std::vector<int64_t> out;
  for (int64_t i = 0; i < expertRows.size(0); ++i)
    out.push_back(matchRow(denseRows, expertRows[i]));
  return out;
}

torch::Tensor ffn(const torch::Tensor& x, const torch::Tensor& g, const torch::Tensor& u,
                  const torch::Tensor& d) {
  return torch::matmul(torch::silu(torch::matmul(x, g.t())) * torch::matmul(x, u.t()), d.t());
}

}  // namespace

TEST(DropUpcycling, RedrawsExactlyFloorRDffNeuronsWithMatchingStatistics) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(11);
  const double r = 0.5;
  DecoderLM moe = dropUpcycle(*d, {4, 2, 1, 0}, "uniform_std002", r, false, gen);
  const int64_t F = 48, k = 24;  // floor(0.5 * 48)
  for (size_t l = 0; l < 2; ++l) {
    auto dm = layerAt(*d, l)->mlp;
    auto m = layerAt(*moe, l)->moe;
    for (int64_t e = 0; e < 4; ++e) {
      auto mg = matches(dm->gate_proj->weight, m->w_gate[e]);
      auto mu = matches(dm->up_proj->weight, m->w_up[e]);
      auto md = matches(dm->down_proj->weight.t(), m->w_down[e].t());
      for (auto* mm : {&mg, &mu, &md}) {
        EXPECT_EQ(std::count(mm->begin(), mm->end(), -1), k) << "layer " << l << " expert " << e;
        std::set<int64_t> kept(mm->begin(), mm->end());
        kept.erase(-1);
        EXPECT_EQ(static_cast<int64_t>(kept.size()), F - k)
            << "kept rows are distinct dense rows (a permutation)";
      }
      // One permutation for the three matrices: where two keep the same position, they keep the
      // same neuron.
      for (int64_t i = 0; i < F; ++i) {
        if (mg[i] >= 0 && mu[i] >= 0) {
          EXPECT_EQ(mg[i], mu[i]);
        }
        if (mg[i] >= 0 && md[i] >= 0) {
          EXPECT_EQ(mg[i], md[i]);
        }
      }
      // Redrawn gate rows follow N(mean, std) of the dense rows they replaced: the dense rows no
      // kept row matched.
      std::set<int64_t> keptGate(mg.begin(), mg.end());
      std::vector<int64_t> replacedIdx, redrawnIdx;
      for (int64_t i = 0; i < F; ++i) {
        if (!keptGate.count(i)) replacedIdx.push_back(i);
        if (mg[i] < 0) redrawnIdx.push_back(i);
      }
      auto replaced = dm->gate_proj->weight.index_select(0, torch::tensor(replacedIdx));
      auto redrawn = m->w_gate[e].index_select(0, torch::tensor(redrawnIdx));
      const double n = static_cast<double>(redrawn.numel());  // 24 * 32 = 768 values
      const double sigma = replaced.std().item<double>();
      EXPECT_NEAR(redrawn.mean().item<double>(), replaced.mean().item<double>(),
                  4 * sigma / std::sqrt(n));
      EXPECT_NEAR(redrawn.std().item<double>(), sigma, 0.15 * sigma);
    }
  }
}

TEST(DropUpcycling, SharedIndicesRedrawTheSameNeuronsInAllThreeMatrices) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(3);
  DecoderLM moe = dropUpcycle(*d, {2, 1, 1, 0}, "uniform_std002", 0.25, true, gen);
  auto dm = layerAt(*d, 0)->mlp;
  auto m = layerAt(*moe, 0)->moe;
  auto mg = matches(dm->gate_proj->weight, m->w_gate[1]);
  auto mu = matches(dm->up_proj->weight, m->w_up[1]);
  auto md = matches(dm->down_proj->weight.t(), m->w_down[1].t());
  EXPECT_EQ(std::count(mg.begin(), mg.end(), -1), 12);
  for (int64_t i = 0; i < 48; ++i) {
    EXPECT_EQ(mg[i] < 0, mu[i] < 0) << i;
    EXPECT_EQ(mg[i] < 0, md[i] < 0) << i;
  }
}

TEST(DropUpcycling, RatioZeroComputesTheDenseFfnAndRatioOneRedrawsEverything) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(5);
  DecoderLM moe0 = dropUpcycle(*d, {4, 2, 1, 0}, "uniform_std002", 0.0, false, gen);
  DecoderLM moe1 = dropUpcycle(*d, {4, 2, 1, 0}, "uniform_std002", 1.0, false, gen);
  auto x = torch::randn({5, 32}, gen);
  for (size_t l = 0; l < 2; ++l) {
    auto dm = layerAt(*d, l)->mlp;
    auto ref = ffn(x, dm->gate_proj->weight, dm->up_proj->weight, dm->down_proj->weight);
    for (int64_t e = 0; e < 4; ++e) {
      auto m = layerAt(*moe0, l)->moe;
      auto y = ffn(x, m->w_gate[e], m->w_up[e], m->w_down[e]);
      EXPECT_LT((y - ref).abs().max().item<double>(), 1e-5)
          << "a permuted FFN is the same function";
      EXPECT_FALSE(torch::equal(m->w_gate[e], dm->gate_proj->weight)) << "but it is permuted";
      auto g1 = matches(dm->gate_proj->weight, layerAt(*moe1, l)->moe->w_gate[e]);
      EXPECT_EQ(std::count(g1.begin(), g1.end(), -1), 48);
    }
  }
}

TEST(DropUpcycling, FineGrainedExpertsTakeTheirOwnNeuronSubsets) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(8);
  DecoderLM moe = dropUpcycle(*d, {4, 2, 1, 16}, "uniform_std002", 0.0, false, gen);
  EXPECT_EQ(moe->config().expertIntermediateSize, 16);
  auto dm = layerAt(*d, 0)->mlp;
  auto m = layerAt(*moe, 0)->moe;
  EXPECT_EQ(m->w_gate.sizes(), (std::vector<int64_t>{4, 16, 32}));
  std::set<std::set<int64_t>> subsets;
  for (int64_t e = 0; e < 4; ++e) {
    auto mg = matches(dm->gate_proj->weight, m->w_gate[e]);
    auto md = matches(dm->down_proj->weight.t(), m->w_down[e].t());
    EXPECT_EQ(mg, md);
    std::set<int64_t> s(mg.begin(), mg.end());
    EXPECT_EQ(s.size(), 16u);
    EXPECT_EQ(s.count(-1), 0u);
    subsets.insert(s);
  }
  EXPECT_EQ(subsets.size(), 4u) << "each expert draws its own random subset";
}

TEST(DropUpcycling, SameSeedSameFilesDifferentSeedDifferentFiles) {
  DecoderLM d = dense();
  test::TempDir dir;
  for (auto [name, seed] : {std::pair<const char*, uint64_t>{"a", 1}, {"b", 1}, {"c", 2}}) {
    torch::Generator gen = at::detail::createCPUGenerator(seed);
    DecoderLM moe = dropUpcycle(*d, {4, 2, 1, 0}, "uniform_std002", 0.5, false, gen);
    saveModel(moe, dir / name);
  }
  const auto a = test::readBytes(dir / "a/model.safetensors");
  EXPECT_EQ(a, test::readBytes(dir / "b/model.safetensors"));
  EXPECT_NE(a, test::readBytes(dir / "c/model.safetensors"));
  test::expectErrorContaining(
      [&] {
        torch::Generator g = at::detail::createCPUGenerator(1);
        dropUpcycle(*d, {4, 2, 1, 0}, "uniform_std002", 1.5, false, g);
      },
      {"drop ratio r must be in [0, 1], got 1.5"});
}

TEST(NoiseUpcycling, PerturbsHalfTheNeuronsOfEachMatrix) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(2);
  DecoderLM moe = noiseUpcycle(*d, {2, 1, 1, 0}, "uniform_std002", 0.02, 0.5, gen);
  auto dm = layerAt(*d, 1)->mlp;
  auto m = layerAt(*moe, 1)->moe;
  auto mg = matches(dm->gate_proj->weight, m->w_gate[0]);
  EXPECT_EQ(std::count(mg.begin(), mg.end(), -1), 24);
}

TEST(Scratch, EveryWeightIsNew) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(2);
  DecoderLM moe = scratchMoe(d->config(), {4, 2, 1, 0}, "normal_002", gen);
  auto w = layerAt(*moe, 0)->moe->w_gate;
  EXPECT_NEAR(w.std().item<double>(), 0.02, 0.002);
  EXPECT_FALSE(torch::equal(moe->model->embed_tokens->weight, d->model->embed_tokens->weight));
}

TEST(Btx, ExpertsFromTheirSourcesAndAveragedSharedWeights) {
  DecoderLM a = dense(), b = dense();
  {
    torch::NoGradGuard ng;
    for (auto& p : b->parameters()) p.add_(0.5);
  }
  torch::Generator gen = at::detail::createCPUGenerator(1);
  DecoderLM moe = btxUpcycle({a.get(), b.get()}, {4, 2, 1, 0}, "uniform_std002", gen);
  auto m = layerAt(*moe, 0)->moe;
  EXPECT_TRUE(
      torch::equal(m->w_up[1], layerAt(*a, 0)->mlp->up_proj->weight));  // experts 0,1 from source 0
  EXPECT_TRUE(
      torch::equal(m->w_up[2], layerAt(*b, 0)->mlp->up_proj->weight));  // experts 2,3 from source 1
  auto avg = (a->model->norm->weight + b->model->norm->weight) / 2;
  EXPECT_LT((moe->model->norm->weight - avg).abs().max().item<double>(), 1e-6);
  EXPECT_LT((moe->model->norm->weight - a->model->norm->weight - 0.25).abs().max().item<double>(),
            1e-6);
  test::expectErrorContaining(
      [&] {
        btxUpcycle({a.get(), b.get()}, {3, 1, 1, 0}, "uniform", gen);
      },
      {"multiple of the number of sources"});
}

TEST(Qwen3, EveryMethodTurnsAQwen3BaseIntoQwen3Moe) {
  // Through convertModel, the CLI's and the pipeline's entry point: sparse and drop take the
  // streaming path, the others the in-memory one. Every output is Qwen3-MoE with the base's q/k
  // norms.
  const auto base = test::fixtures() / "models/qwen3_qknorm";
  test::TempDir dir;
  // Two "fine-tuned" copies of the base: BTX sources and UpIT checkpoints.
  for (int i = 0; i < 2; ++i) {
    DecoderLM m = loadModel(base);
    torch::Generator g = at::detail::createCPUGenerator(100 + i);
    {
      torch::NoGradGuard ng;
      for (auto& p : m->named_parameters())
        p.value().add_(torch::randn(p.value().sizes(), g) * 0.01);
    }
    saveModel(m, dir / ("tuned" + std::to_string(i)));
  }
  DecoderLM dense = loadModel(base);
  struct Run {
    const char* method;
    int64_t freq;
  };
  for (const Run& run : {Run{"sparse", 1}, Run{"sparse", 2}, Run{"drop", 1}, Run{"drop", 2},
                         Run{"noise", 1}, Run{"scratch", 2}, Run{"btx", 1}, Run{"upit", 1}}) {
    const std::string m = run.method;
    SCOPED_TRACE(m + " moe_layer_freq " + std::to_string(run.freq));
    ConvertOptions o;
    o.run.method = m;
    o.run.experts = 4;
    o.run.topK = 2;
    o.run.moeLayerFreq = run.freq;
    o.run.seed = 5;
    o.base = base;
    o.out = dir / (m + std::to_string(run.freq));
    o.device = "cpu";
    o.layout = "mixtral-fused";  // ignored: Qwen3-MoE has its own layout
    if (m == "btx") o.run.sources = {dir / "tuned0", dir / "tuned1"};
    if (m == "upit") {
      o.checkpoints = {dir / "tuned0", dir / "tuned1"};
      o.run.checkpoints = 2;  // 2 children from the GA
    }
    const ConvertReport r = convertModel(o);
    EXPECT_EQ(r.config.modelType, "qwen3_moe");
    const ModelConfig c = loadHfConfig(o.out);
    EXPECT_EQ(c.modelType, "qwen3_moe");
    EXPECT_TRUE(c.qkNorm);
    EXPECT_EQ(c.headDim, 16);
    const std::vector<bool> layers =
        run.freq == 1 ? std::vector<bool>{true, true} : std::vector<bool>{false, true};
    EXPECT_EQ(c.moeLayers, layers);
    CheckpointFiles f(o.out);
    EXPECT_TRUE(f.contains("model.layers.1.mlp.experts.3.down_proj.weight"));
    EXPECT_TRUE(f.contains("model.layers.1.mlp.gate.weight"));
    EXPECT_EQ(f.contains("model.layers.0.mlp.gate_proj.weight"), run.freq == 2);
    EXPECT_FALSE(f.contains("lm_head.weight")) << "tied embeddings stay tied";
    DecoderLM moe = loadModel(o.out);
    auto mp = moe->named_parameters(), dp = dense->named_parameters();
    const std::string qn = "model.layers.1.self_attn.q_norm.weight";
    if (m == "sparse" || m == "drop" || m == "noise") {
      EXPECT_TRUE(torch::equal(mp[qn], dp[qn])) << "copied from the base";
    } else if (m == "scratch") {
      EXPECT_TRUE(torch::equal(mp[qn], torch::ones({16}))) << "a fresh norm";
    } else {
      EXPECT_FALSE(torch::equal(mp[qn], dp[qn])) << "the mean of the tuned copies";
    }
    if (m == "sparse") {  // the dense function (SPEC §1 invariant), through the files
      torch::NoGradGuard ng;
      auto ids = torch::arange(0, 12, torch::kLong).view({2, 6}) * 5 % 64;
      EXPECT_LT((moe->forward(ids).logits - dense->forward(ids).logits).abs().max().item<double>(),
                1e-5);
    }
  }
}

// ---------------------------------------------------------------------------- merge operators

TEST(Merge, LinearAndTaskArithmeticByHand) {
  auto t1 = torch::tensor({1.0f, 2.0f}), t2 = torch::tensor({3.0f, 4.0f});
  EXPECT_TRUE(torch::allclose(mergeLinear({t1, t2}, {0.25, 0.75}), torch::tensor({2.5f, 3.5f})));
  // base [1,1]; deltas [1,2] and [-1,0]; sum [0,2]; base + 0.5 * sum = [1, 2]
  auto base = torch::tensor({1.0f, 1.0f});
  EXPECT_TRUE(torch::allclose(
      mergeTaskArithmetic(base, {torch::tensor({2.0f, 3.0f}), torch::tensor({0.0f, 1.0f})},
                          {1.0, 1.0}, 0.5),
      torch::tensor({1.0f, 2.0f})));
}

TEST(Merge, TiesTrimsElectsAndAveragesByHand) {
  auto base = torch::zeros({4});
  auto t1 = torch::tensor({3.0f, -1.0f, 0.5f, 2.0f});    // top-2: 3 and 2      -> [3, 0, 0, 2]
  auto t2 = torch::tensor({-1.0f, -2.0f, 1.5f, -2.5f});  // top-2: -2.5 and -2  -> [0, -2, 0, -2.5]
  // elected signs of the sum [3, -2, 0, -0.5]: +, -, 0, -; agreeing entries averaged:
  // [3, -2, 0 (no sign), -2.5 (t1's +2 disagrees)]
  auto out = mergeTies(base, {t1, t2}, {1.0, 1.0}, 0.5);
  EXPECT_TRUE(torch::allclose(out, torch::tensor({3.0f, -2.0f, 0.0f, -2.5f}))) << out;
}

TEST(Merge, DareKeepsOrDropsAndRescales) {
  torch::Generator gen = at::detail::createCPUGenerator(1);
  auto delta = torch::arange(1, 1001, torch::kFloat);
  auto inv = dare(delta, 0.5, DareRescale::Inverse, gen);
  auto kept = inv != 0;
  EXPECT_TRUE(
      torch::equal(inv.masked_select(kept), 2 * delta.masked_select(kept)));  // 1 / (1 - 0.5)
  EXPECT_NEAR(kept.to(torch::kFloat).mean().item<double>(), 0.5, 0.05);
  auto l1 = dare(delta, 0.3, DareRescale::L1, gen);
  EXPECT_NEAR(l1.abs().sum().item<double>(), delta.abs().sum().item<double>(),
              1e-2);  // L1 norm kept
  auto mask = dareKeepMask({100000}, 0.3, gen);
  EXPECT_NEAR(mask.to(torch::kFloat).mean().item<double>(), 0.7, 0.01);
  // p = 0: DARE-linear is task arithmetic with lambda 1.
  auto base = torch::tensor({1.0f, 1.0f});
  EXPECT_TRUE(torch::allclose(
      mergeDareLinear(base, {torch::tensor({2.0f, 3.0f})}, {0.5}, 0.0, DareRescale::Inverse, gen),
      torch::tensor({1.5f, 2.0f})));
}

TEST(Merge, SlerpOnTheCircleAndLinearWhenParallel) {
  auto s = mergeSlerp(torch::tensor({1.0f, 0.0f}), torch::tensor({0.0f, 1.0f}), 0.5);
  EXPECT_NEAR(s[0].item<double>(), std::sqrt(0.5), 1e-6);
  EXPECT_NEAR(s[1].item<double>(), std::sqrt(0.5), 1e-6);
  auto p = mergeSlerp(torch::tensor({1.0f, 1.0f}), torch::tensor({2.0f, 2.0f}), 0.5);
  EXPECT_TRUE(torch::allclose(p, torch::tensor({1.5f, 1.5f})));
  test::expectErrorContaining([] { checkMergeOperator("average"); },
                              {"merge operator \"average\""});
}

TEST(RouterInit, HiddenRowsAreUnitMeanInputsOfTheirPrompts) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(4);
  DecoderLM moe = sparseUpcycle(*d, {3, 1, 1, 0}, "hidden", gen);
  auto before0 = layerAt(*moe, 0)->moe->router->weight.clone();
  initRoutersFromHidden(*moe, {{{1, 2, 3, 4}}, {}, {{9, 8, 7}, {5, 6}}});
  for (size_t l = 0; l < 2; ++l) {
    auto w = layerAt(*moe, l)->moe->router->weight;
    EXPECT_NEAR(w[0].norm().item<double>(), 1.0, 1e-5);
    EXPECT_NEAR(w[2].norm().item<double>(), 1.0, 1e-5);
    if (l == 0) {
      EXPECT_TRUE(torch::equal(w[1], before0[1])) << "an expert without prompts keeps its row";
    }
  }
  // Layer 0's router input is the dense model's post-attention RMSNorm output; for a one-token
  // prompt that is a function of the token's embedding alone, so recompute it independently.
  DecoderLM one = sparseUpcycle(*d, {2, 1, 1, 0}, "hidden", gen);
  initRoutersFromHidden(*one, {{{7}}, {}});
  auto l0 = layerAt(*d, 0);
  auto x = d->model->embed_tokens->weight[7].view({1, 1, -1});
  auto n = l0->input_layernorm(x);
  // One position attends only to itself, so each head outputs its KV head's value: kv heads (2 x 8)
  // serve query heads 0,1 and 2,3.
  auto v = torch::linear(n, l0->self_attn->v_proj->weight).view({2, 8});
  auto att =
      torch::linear(v.repeat_interleave(2, 0).reshape({1, 1, 32}), l0->self_attn->o_proj->weight);
  auto h = l0->post_attention_layernorm(x + att).view({-1});
  auto want = h / h.norm();
  EXPECT_LT((layerAt(*one, 0)->moe->router->weight[0] - want).abs().max().item<double>(), 1e-4);
}

// mergekit's gate modes: `hidden` (= hidden_last) pools each prompt at its last token, `hidden_avg`
// over its tokens; the row is the normalised mean of the prompts' pooled router inputs. Checked
// against the router inputs of separate forwards of each prompt, pooled and averaged here.
TEST(RouterInit, HiddenPoolsTheLastTokenAndHiddenAvgTheSequence) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(4);
  const std::vector<std::vector<int64_t>> prompts{{9, 8, 7}, {5, 6}};
  for (const char* kind : {"hidden", "hidden_last", "hidden_avg"}) {
    DecoderLM moe = sparseUpcycle(*d, {2, 1, 1, 0}, kind, gen);
    DecoderLM probe =
        sparseUpcycle(*d, {2, 1, 1, 0}, "uniform_std002", gen);  // same inputs below the routers
    probe->eval();
    probe->captureRouterInputs(true);
    std::vector<torch::Tensor> want(2);
    for (const auto& p : prompts) {
      torch::NoGradGuard ng;
      auto out = probe->forward(torch::tensor(p, torch::kLong).view({1, -1}));
      for (size_t l = 0; l < 2; ++l) {
        auto in = out.routing[l].inputs;
        auto pooled = std::string(kind) == "hidden_avg" ? in.mean(0) : in[in.size(0) - 1];
        want[l] = want[l].defined() ? want[l] + pooled / 2.0 : pooled / 2.0;
      }
    }
    initRoutersFromHidden(*moe, {prompts, {}}, hiddenPooling(kind));
    for (size_t l = 0; l < 2; ++l) {
      auto w = want[l] / want[l].norm();
      EXPECT_LT((layerAt(*moe, l)->moe->router->weight[0] - w).abs().max().item<double>(), 1e-5)
          << kind << " layer " << l;
    }
  }
  EXPECT_EQ(hiddenPooling("hidden"), HiddenPooling::LastToken);
  EXPECT_EQ(hiddenPooling("hidden_avg"), HiddenPooling::Mean);
  test::expectErrorContaining([] { checkRouterInit("hidden_max"); }, {"hidden_max", "hidden_avg"});
}

// uniform_std002 as the official Drop-Upcycling code's torch_rand_002: U[0,1) for the whole E x d
// matrix, minus that matrix's own sample mean (not 0.5), times 0.02 sqrt(12). Checked against the
// same draws from a generator of the same seed, by hand, and by its statistics.
TEST(RouterInit, UniformStd002SubtractsTheSampleMean) {
  torch::Generator gen = at::detail::createCPUGenerator(11),
                   again = at::detail::createCPUGenerator(11);
  auto w = torch::empty({8, 64});
  initRouter(w, "uniform_std002", gen);
  auto u = torch::empty({8, 64}, torch::kFloat).uniform_(0.0, 1.0, again).to(torch::kDouble);
  double mean = 0;
  for (int64_t i = 0; i < u.numel(); ++i) mean += u.view(-1)[i].item<double>();
  mean /= static_cast<double>(u.numel());
  EXPECT_GT(std::abs(mean - 0.5), 1e-4)
      << "this draw's mean should differ from 0.5, or the test proves nothing";
  const auto want = (u - mean) * (0.02 * std::sqrt(12.0));
  EXPECT_LT((w.to(torch::kDouble) - want).abs().max().item<double>(), 1e-6);
  EXPECT_LT(std::abs(w.to(torch::kDouble).mean().item<double>()), 1e-8);
  EXPECT_NEAR(w.to(torch::kDouble).std().item<double>(), 0.02, 0.002);
}
