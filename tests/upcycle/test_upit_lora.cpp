// UpIT with LoRA experts: the LoRA-expert MoE layer against float64 arithmetic written out here, its
// native folder and its Mixtral export, the GA distance from factors against the dense matrices, the
// SVD refactorization, children replayed from their lineage, and the optimizer holding only the
// factors and routers.
#include <cmath>

#include "model/lora.h"
#include "model/model_io.h"
#include "pipeline/experiment.h"
#include "test_util.h"
#include "train/trainer.h"
#include "upcycle/methods.h"
#include "upcycle/upit_lora.h"

using namespace upcycle;

namespace {

// A tiny dense Llama (d 16, d_ff 24, 2 layers, 264 tokens) with random weights.
DecoderLM tinyDense(uint64_t seed) {
  ModelConfig c;
  c.modelType = "llama";
  c.vocabSize = 264;
  c.hiddenSize = 16;
  c.intermediateSize = 24;
  c.numLayers = 2;
  c.numHeads = 2;
  c.numKvHeads = 1;
  c.headDim = 8;
  c.maxPositionEmbeddings = 64;
  DecoderLM m(c);
  torch::Generator g = at::detail::createCPUGenerator(seed);
  m->initWeights(g);
  return m;
}

LoraOptions ffnLora(int64_t rank) {
  LoraOptions o;
  o.rank = rank;
  o.alpha = 2.0 * static_cast<double>(rank);
  o.targets = {"gate_proj", "up_proj", "down_proj"};
  return o;
}

// A LoRA-expert MoE on tinyDense with random (non-zero) factors.
DecoderLM randomLoraMoe(int64_t experts, int64_t topK, int64_t rank, uint64_t seed) {
  DecoderLM dense = tinyDense(seed);
  torch::Generator g = at::detail::createCPUGenerator(seed + 1);
  DecoderLM moe = freshLoraMoe(*dense, ffnLora(rank), MoeShape{experts, topK, 1, 0}, "normal_002", g);
  torch::NoGradGuard ng;
  for (auto& p : moe->named_parameters())
    if (p.key().find("lora_") != std::string::npos || p.key().find("router") != std::string::npos)
      p.value().normal_(0.0, 0.3, g);
  return moe;
}

// Random experts on the dense model's FFN shapes: rank-r factors for gate, up, down of every layer.
std::vector<LoraExpert> randomExperts(DecoderLMImpl& dense, int n, int64_t rank, uint64_t seed) {
  torch::Generator g = at::detail::createCPUGenerator(seed);
  const ExpertFfn f = ffnOf(dense);
  std::vector<LoraExpert> out;
  for (int k = 0; k < n; ++k) {
    LoraExpert x;
    for (size_t l = 0; l < f.gate.size(); ++l) {
      std::array<torch::Tensor, 3> A, B;
      const torch::Tensor* w[3] = {&f.gate[l], &f.up[l], &f.down[l]};
      for (int i = 0; i < 3; ++i) {
        A[i] = torch::randn({rank, w[i]->size(1)}, g) * 0.3;
        B[i] = torch::randn({w[i]->size(0), rank}, g) * 0.3;
      }
      x.A.push_back(A);
      x.B.push_back(B);
    }
    out.push_back(x);
  }
  return out;
}

}  // namespace

// One MoE layer, token by token in float64: router softmax, top-k renormalized, each chosen expert's
// SwiGLU with W + s B A formed explicitly.
TEST(LoraMoe, LayerMatchesAFloat64ReferenceAndTheMergedExperts) {
  const int64_t E = 4, K = 2, r = 3;
  DecoderLM moe = randomLoraMoe(E, K, r, 5);
  moe->eval();
  auto block = moe->model->layers[0]->as<DecoderLayerImpl>()->moe;
  ASSERT_TRUE(block && block->loraExperts());
  const double s = 2.0 * r / r;  // alpha / rank
  torch::Generator g = at::detail::createCPUGenerator(9);
  auto x = torch::randn({1, 7, 16}, g);
  RouterRecord rec;
  torch::Tensor got;
  {
    torch::NoGradGuard ng;
    got = block->forward(x, rec).reshape({7, 16}).to(torch::kDouble);
  }
  auto X = x.reshape({7, 16}).to(torch::kDouble);
  auto Wr = block->router->weight.detach().to(torch::kDouble);
  auto full = [&](const torch::Tensor& W, const torch::Tensor& A, const torch::Tensor& B, int64_t e) {
    return W.detach().to(torch::kDouble) + s * torch::matmul(B[e].detach().to(torch::kDouble), A[e].detach().to(torch::kDouble));
  };
  for (int64_t t = 0; t < 7; ++t) {
    auto probs = torch::softmax(torch::matmul(Wr, X[t]), 0);
    auto [w, idx] = probs.topk(K);
    w = w / w.sum();
    auto want = torch::zeros({16}, torch::kDouble);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = idx[k].item<int64_t>();
      auto Wg = full(block->base_gate, block->lora_gate_A, block->lora_gate_B, e);
      auto Wu = full(block->base_up, block->lora_up_A, block->lora_up_B, e);
      auto Wd = full(block->base_down, block->lora_down_A, block->lora_down_B, e);
      auto gt = torch::matmul(Wg, X[t]);
      auto h = gt / (1 + torch::exp(-gt)) * torch::matmul(Wu, X[t]);
      want += w[k] * torch::matmul(Wd, h);
    }
    EXPECT_LT((want - got[t]).abs().max().item<double>(), 1e-4) << "token " << t;
  }

  // The standard MoE whose expert e is base + s B_e A_e computes the same logits.
  DecoderLM merged = mergeLoraExperts(*moe);
  EXPECT_FALSE(merged->config().loraExperts.enabled());
  auto ids = torch::randint(0, 264, {2, 9}, g);
  torch::NoGradGuard ng;
  merged->eval();
  auto a = moe->forward(ids).logits, b = merged->forward(ids).logits;
  EXPECT_LT((a - b).abs().max().item<double>(), 1e-4);
}

// The native folder keeps the factors under adapter-style names and reloads to the same function; the
// export is a plain Mixtral that loadModel reads as any other.
TEST(LoraMoe, NativeFolderAndMixtralExportGiveTheSameLogits) {
  test::TempDir dir;
  DecoderLM moe = randomLoraMoe(3, 2, 2, 11);
  saveModel(moe, dir / "native");
  CheckpointFiles files(dir / "native");
  EXPECT_TRUE(files.contains("model.layers.1.block_sparse_moe.experts.2.w1.lora_A.weight"));
  EXPECT_TRUE(files.contains("model.layers.1.block_sparse_moe.experts.2.w2.lora_B.weight"));
  EXPECT_TRUE(files.contains("model.layers.0.block_sparse_moe.base.w3.weight"));
  EXPECT_EQ(files.tensor("model.layers.0.block_sparse_moe.experts.0.w2.lora_A.weight").shape, (std::vector<int64_t>{2, 24}));
  const std::string cfg = test::readBytes(dir / "native/config.json");
  EXPECT_NE(cfg.find("\"upcycle_lora_experts\""), std::string::npos);
  DecoderLM again = loadModel(dir / "native");
  ASSERT_TRUE(again->config().loraExperts.enabled());
  EXPECT_EQ(again->config().loraExperts.rank, 2);

  DecoderLM merged = mergeLoraExperts(*moe);
  saveModel(merged, dir / "mixtral");
  CheckpointFiles mf(dir / "mixtral");
  EXPECT_TRUE(mf.contains("model.layers.0.block_sparse_moe.experts.2.w1.weight"));
  DecoderLM exported = loadModel(dir / "mixtral");
  EXPECT_EQ(exported->config().modelType, "mixtral");

  torch::Generator g = at::detail::createCPUGenerator(3);
  auto ids = torch::randint(0, 264, {2, 10}, g);
  torch::NoGradGuard ng;
  for (auto* m : {&moe, &again, &exported}) (*m)->eval();
  auto ref = moe->forward(ids).logits;
  EXPECT_LT((again->forward(ids).logits - ref).abs().max().item<double>(), 1e-5);
  EXPECT_LT((exported->forward(ids).logits - ref).abs().max().item<double>(), 1e-4);
}

// The distance from r x r products equals the distance of the dense (out, in) updates.
TEST(UpitLora, DistanceFromFactorsEqualsTheDenseArithmetic) {
  DecoderLM dense = tinyDense(1);
  const ExpertFfn base = ffnOf(*dense);
  const auto pool = randomExperts(*dense, 2, 3, 7);
  const double s = 1.5;
  auto vec = [&](const LoraExpert& x, size_t l, bool withBase) {
    std::vector<torch::Tensor> parts;
    const torch::Tensor* w[3] = {&base.gate[l], &base.up[l], &base.down[l]};
    for (int i = 0; i < 3; ++i) {
      auto d = s * torch::matmul(x.B[l][i].to(torch::kDouble), x.A[l][i].to(torch::kDouble));
      parts.push_back((withBase ? w[i]->to(torch::kDouble) + d : d).flatten());
    }
    return torch::cat(parts);
  };
  for (const std::string metric : {"cosine_delta", "cosine", "l2"}) {
    double want = 0;
    for (size_t l = 0; l < 2; ++l) {
      auto a = vec(pool[0], l, metric == "cosine"), b = vec(pool[1], l, metric == "cosine");
      want += metric == "l2" ? (a - b).norm().item<double>() : 1.0 - (a.dot(b) / (a.norm() * b.norm())).item<double>();
    }
    want /= 2;
    EXPECT_NEAR(loraExpertDistance(pool[0], pool[1], base, s, metric), want, 1e-9 * std::max(1.0, std::abs(want))) << metric;
  }
}

// With alpha 1 and no mutation the child is parent A (rank r fits exactly); with alpha 0.5 it is the
// best rank-r approximation of the mean update: its error is the norm of the dropped singular values.
TEST(UpitLora, ChildIsTheBestRankRApproximationOfTheMergedUpdate) {
  DecoderLM dense = tinyDense(2);
  const auto pool = randomExperts(*dense, 2, 2, 8);
  GaConfig ga;
  ga.dareP = 0.0;
  const double s = 2.0;
  const LoraExpert same = makeLoraChild(pool[0], pool[1], 1.0, ga, 1, s, 2);
  for (size_t l = 0; l < 2; ++l)
    for (size_t i = 0; i < 3; ++i)
      EXPECT_LT((loraUpdate(same, l, i, s) - loraUpdate(pool[0], l, i, s)).abs().max().item<double>(), 1e-5);
  double truncation = -1;
  const LoraExpert mid = makeLoraChild(pool[0], pool[1], 0.5, ga, 1, s, 2, &truncation);
  double lost = 0, kept = 0;
  for (size_t l = 0; l < 2; ++l)
    for (size_t i = 0; i < 3; ++i) {
      auto mean = 0.5 * loraUpdate(pool[0], l, i, s) + 0.5 * loraUpdate(pool[1], l, i, s);  // rank <= 4
      auto sv = torch::linalg_svdvals(mean);
      const double dropped = sv.narrow(0, 2, sv.size(0) - 2).pow(2).sum().item<double>();
      const double err = (mean - loraUpdate(mid, l, i, s)).pow(2).sum().item<double>();
      EXPECT_NEAR(err, dropped, 1e-6 * std::max(1.0, dropped));
      EXPECT_EQ(mid.A[l][i].size(0), 2);
      lost += dropped;
      kept += mean.pow(2).sum().item<double>();
    }
  EXPECT_NEAR(truncation, std::sqrt(lost / kept), 1e-6);
}

// Every child of the expansion is recomputed from its lineage record and its parents.
TEST(UpitLora, ChildrenReproduceFromTheirLineage) {
  DecoderLM dense = tinyDense(3);
  const ExpertFfn base = ffnOf(*dense);
  std::vector<LoraExpert> pool = randomExperts(*dense, 3, 2, 9);
  GaConfig ga;  // distance rule, DARE p = 0.3
  torch::Generator gen = at::detail::createCPUGenerator(4);
  const auto lineage = expandLoraPool(pool, base, 6, ga, 2.0, 2, gen);
  ASSERT_EQ(lineage.size(), 3u);
  ASSERT_EQ(pool.size(), 6u);
  for (const auto& e : lineage) {
    const LoraExpert again = makeLoraChild(pool[e.parentA], pool[e.parentB], e.alpha, ga, e.maskSeed, 2.0, 2);
    for (size_t l = 0; l < 2; ++l)
      for (size_t i = 0; i < 3; ++i) {
        EXPECT_TRUE(torch::equal(again.A[l][i], pool[e.child].A[l][i])) << "child " << e.child;
        EXPECT_TRUE(torch::equal(again.B[l][i], pool[e.child].B[l][i])) << "child " << e.child;
      }
  }
  // The first pair is the most distant of the three checkpoint experts.
  double best = -1;
  for (int i = 0; i < 3; ++i)
    for (int j = i + 1; j < 3; ++j) best = std::max(best, loraExpertDistance(pool[i], pool[j], base, 2.0, "cosine_delta"));
  EXPECT_NEAR(lineage[0].distance, best, 1e-12);
}

// Post-training a LoRA-expert MoE moves the factors and routers and nothing else (AdamW with weight
// decay 0 moves every parameter it holds); the trainable count is what trainableMemory reports.
TEST(UpitLora, OptimizerHoldsOnlyTheFactorsAndRouters) {
  DecoderLM moe = randomLoraMoe(4, 2, 2, 21);
  std::map<std::string, torch::Tensor> before;
  for (const auto& p : moe->named_parameters()) before[p.key()] = p.value().detach().clone();
  std::vector<TokenRecord> data;
  for (int i = 0; i < 8; ++i) {
    TokenRecord r;
    for (int t = 0; t < 12; ++t) r.inputIds.push_back((i * 7 + t * 3) % 250 + 4);
    r.labels = r.inputIds;
    data.push_back(r);
  }
  TrainOptions o;
  o.maxSteps = 3;
  o.batchSize = 4;
  o.lr = 1e-2;
  o.warmupSteps = 0;
  o.device = "cpu";
  o.precision = "fp32";
  trainDecoder(moe, data, o, nullptr, nullptr);
  int64_t trainable = 0;
  for (const auto& p : moe->named_parameters()) {
    const bool factorOrRouter = p.key().find("moe.lora_") != std::string::npos || p.key().find("moe.router") != std::string::npos;
    const bool moved = !torch::equal(p.value().detach(), before[p.key()]);
    EXPECT_EQ(moved, factorOrRouter) << p.key();
    if (factorOrRouter) trainable += p.value().numel();
  }
  const TrainableMemory mem = trainableMemory(moe->config());
  // By hand: 2 layers x (router 4 x 16 + 4 experts x rank 2 x (16 + 24) x 3 projections).
  EXPECT_EQ(mem.trainable, 2 * (4 * 16 + 4 * 2 * (16 + 24) * 3));
  EXPECT_EQ(trainable, mem.trainable);
  EXPECT_EQ(mem.optimizerBytes, 8 * mem.trainable);
  int64_t total = 0;
  for (const auto& p : moe->parameters()) total += p.numel();
  EXPECT_EQ(mem.total, total);
}

TEST(UpitLora, ExperimentFilesTakeLoraAndTheNewMethods) {
  const std::string base = "name: l\nbase: {pretrain: {steps: 5}}\nsft: {epochs: 1, save_every: 0.5}\n";
  Experiment e = parseExperiment(base + "lora: {rank: 4, alpha: 8, targets: [gate, up, down]}\n"
                                        "runs:\n  - {method: dense}\n  - {method: loramoe, experts: 4}\n"
                                        "  - {method: upit_lora, experts: 4, checkpoints: 2}\n", "e.yaml");
  EXPECT_EQ(e.lora.rank, 4);
  EXPECT_EQ(e.lora.targets, (std::vector<std::string>{"gate_proj", "up_proj", "down_proj"}));
  Experiment again = parseExperiment(experimentYaml(e), "written");
  EXPECT_EQ(again.lora.rank, 4);
  EXPECT_DOUBLE_EQ(again.lora.alpha, 8);
  EXPECT_EQ(again.runs[2].checkpoints, 2);
  test::expectErrorContaining([&] { parseExperiment(base + "runs: [{method: loramoe}]\n", "e.yaml"); },
                              {"runs[0].method", "loramoe needs a lora: section"});
  test::expectErrorContaining([&] { parseExperiment(base + "lora: {rank: 4, targets: [q, v]}\nruns: [{method: upit_lora, experts: 4, checkpoints: 2}]\n", "e.yaml"); },
                              {"lora.targets", "gate, up or down"});
  test::expectErrorContaining([&] { parseExperiment(base + "lora: {rank: 0}\nruns: [{method: dense}]\n", "e.yaml"); },
                              {"lora.rank", "at least 1"});
}
