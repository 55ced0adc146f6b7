// KV-cache decoding against the plain algorithm: re-running the whole sequence every step.
#include "model/model_io.h"
#include "test_util.h"
#include "train/evaluator.h"

using namespace upcycle;

namespace {
class Cached : public ::testing::TestWithParam<std::string> {};
}  // namespace

TEST_P(Cached, GreedyDecodingEqualsFullRecomputation) {
  DecoderLM model = loadModel(test::fixtures() / "models" / GetParam());
  model->eval();
  torch::NoGradGuard ng;
  const std::vector<int64_t> prompt = {5, 17, 42};
  GenerateOptions g;
  g.maxNewTokens = 9;  // 12 positions: past the 4-token sliding window of mistral_window
  const auto cached = generateTokens(*model, prompt, g);
  ASSERT_EQ(cached.size(), 9u);

  std::vector<int64_t> seq = prompt, naive;
  for (int t = 0; t < 9; ++t) {
    auto logits = model->forward(torch::tensor(seq, torch::kLong).view({1, -1})).logits;
    const int64_t next = logits[0][-1].argmax().item<int64_t>();
    naive.push_back(next);
    seq.push_back(next);
  }
  EXPECT_EQ(cached, naive) << GetParam();

  // Logits of the cached path match the full forward position by position.
  KVCache cache;
  auto full = model->forward(torch::tensor(seq, torch::kLong).view({1, -1})).logits;  // (1, 12, V)
  auto first = model->forwardCached(torch::tensor(std::vector<int64_t>(seq.begin(), seq.begin() + 3)).view({1, -1}), cache).logits;
  EXPECT_LT((first - full.narrow(1, 0, 3)).abs().max().item<double>(), 1e-4);
  for (int64_t p = 3; p < 12; ++p) {
    auto step = model->forwardCached(torch::tensor({seq[p]}, torch::kLong).view({1, 1}), cache).logits;
    EXPECT_LT((step[0][0] - full[0][p]).abs().max().item<double>(), 1e-4) << "position " << p;
  }
  EXPECT_EQ(cache.length, 12);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Cached,
                         ::testing::Values("llama_gqa", "qwen2_bias_tied", "mistral_window",
                                           "mixtral_hub", "qwen2_moe_shared",
                                           "llama_tied_rope_linear", "qwen3_qknorm", "qwen3_moe"));

TEST(Generate, StopsAtEosAndSamplingIsSeeded) {
  DecoderLM model = loadModel(test::fixtures() / "models/llama_gqa");
  model->eval();
  GenerateOptions g;
  g.maxNewTokens = 6;
  const auto greedy = generateTokens(*model, {1, 2, 3}, g);
  g.eos = greedy[2];  // stop where the third token would be (the first occurrence of that id)
  const auto stopped = generateTokens(*model, {1, 2, 3}, g);
  const auto firstEos = std::find(greedy.begin(), greedy.end(), greedy[2]) - greedy.begin();
  EXPECT_EQ(static_cast<int64_t>(stopped.size()), firstEos);
  GenerateOptions s;
  s.maxNewTokens = 8;
  s.temperature = 1.5;
  torch::Generator a = at::detail::createCPUGenerator(4), b = at::detail::createCPUGenerator(4),
                   c = at::detail::createCPUGenerator(5);
  const auto sa = generateTokens(*model, {1, 2, 3}, s, &a);
  EXPECT_EQ(sa, generateTokens(*model, {1, 2, 3}, s, &b));
  EXPECT_NE(sa, generateTokens(*model, {1, 2, 3}, s, &c));
}

TEST(ExactMatch, TrimsWhitespaceOnly) {
  EXPECT_TRUE(exactMatch(" 42\n", "42"));
  EXPECT_FALSE(exactMatch("42.", "42"));
  EXPECT_FALSE(exactMatch("4 2", "42"));
}

// The benchmark's naive baseline must compute what the grouped path computes, outputs and gradients.
#include "bench/moe_bench.h"

TEST(NaiveMoe, SameOutputAndGradientsAsTheGroupedPath) {
  DecoderLM m = loadModel(test::fixtures() / "models/mixtral_hub");
  auto block = std::static_pointer_cast<DecoderLayerImpl>(m->model->layers->children()[0])->moe;
  torch::Generator gen = at::detail::createCPUGenerator(2);
  auto x = torch::randn({37, 32}, gen).requires_grad_(true);
  RouterRecord rec;
  auto g = block->forward(x.view({1, 37, 32}), rec).view({37, 32});
  const SeparateExperts ex = separateExperts(*block);
  auto n = naiveMoeForward(*block, ex, x);
  EXPECT_LT((g - n).abs().max().item<double>(), 1e-5);
  auto upstream = torch::randn({37, 32}, gen);
  auto gradG = torch::autograd::grad({g}, {x, block->router->weight, block->w_gate, block->w_up, block->w_down}, {upstream});
  std::vector<torch::Tensor> leaves = {x, block->router->weight};
  for (const auto* v : {&ex.gate, &ex.up, &ex.down}) leaves.insert(leaves.end(), v->begin(), v->end());
  auto gradN = torch::autograd::grad({n}, leaves, {upstream}, /*retain_graph=*/false, /*create_graph=*/false,
                                     /*allow_unused=*/true);
  const int64_t E = block->numExperts;
  auto stacked = [&](int64_t first) {
    std::vector<torch::Tensor> parts;
    for (int64_t e = 0; e < E; ++e)
      parts.push_back(gradN[first + e].defined() ? gradN[first + e] : torch::zeros_like(ex.gate[0]));
    return torch::stack(parts);
  };
  EXPECT_LT((gradG[0] - gradN[0]).abs().max().item<double>(), 1e-5);
  EXPECT_LT((gradG[1] - gradN[1]).abs().max().item<double>(), 1e-5);
  for (int w = 0; w < 3; ++w) {
    SCOPED_TRACE(w);
    auto ref = stacked(2 + w * E);
    EXPECT_EQ(gradG[2 + w].sizes(), ref.sizes());
    EXPECT_LT((gradG[2 + w] - ref).abs().max().item<double>(), 1e-5);
    EXPECT_GT(ref.abs().sum().item<double>(), 0.0);
  }
}
