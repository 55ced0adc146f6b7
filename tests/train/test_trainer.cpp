// The trainer against the PyTorch reference (tests/reference/make_train_fixtures.py), its schedule
// against hand arithmetic, checkpoints, resume, freezing, cancellation and NaN handling.
#include <nlohmann/json.hpp>

#include "api/bench.h"
#include "api/models.h"
#include "formats/trainer_outputs.h"
#include "model/model_io.h"
#include "test_util.h"
#include "train/trainer.h"

using namespace upcycle;
using nlohmann::json;

namespace {

std::vector<TokenRecord> fixtureRecords(const std::string& name) {
  json e = json::parse(test::readBytes(test::fixtures() / "models" / name / "expected.json"));
  std::vector<TokenRecord> out;
  for (size_t r = 0; r < e["input_ids"].size(); ++r) {
    TokenRecord rec;
    for (size_t t = 0; t < e["input_ids"][r].size(); ++t)
      if (e["attention_mask"][r][t].get<int>() == 1) rec.inputIds.push_back(e["input_ids"][r][t].get<int64_t>());
    out.push_back(rec);
  }
  return out;
}

// 16 short records over the fixtures' 64-token vocabulary, from a fixed LCG (no library RNG).
std::vector<TokenRecord> syntheticRecords(int n) {
  std::vector<TokenRecord> out;
  uint64_t x = 12345;
  for (int i = 0; i < n; ++i) {
    TokenRecord r;
    const int len = 6 + i % 5;
    for (int t = 0; t < len; ++t) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      r.inputIds.push_back(static_cast<int64_t>((x >> 33) % 64));
    }
    r.domain = i % 2 ? "odd" : "even";
    out.push_back(r);
  }
  return out;
}

struct Recorder : TrainObserver {
  std::vector<StepMetrics> steps;
  std::vector<int64_t> checkpoints;
  std::vector<int64_t> epochs;
  std::atomic<bool>* cancel = nullptr;
  int64_t cancelAfter = 0;
  void onStep(const StepMetrics& m) override {
    steps.push_back(m);
    if (cancel && m.step == cancelAfter) cancel->store(true);
  }
  void onCheckpoint(const std::filesystem::path&, int64_t step) override { checkpoints.push_back(step); }
  void onEpochEnd(int64_t e, double) override { epochs.push_back(e); }
};

class Reference : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(Reference, LossesMatchPyTorchAdamWStepForStep) {
  json ref = json::parse(test::readBytes(test::fixtures() / "train" / (GetParam() + ".json")));
  const json& ro = ref["options"];
  TrainOptions o;
  o.lr = ro["lr"];
  o.beta1 = ro["beta1"];
  o.beta2 = ro["beta2"];
  o.eps = ro["eps"];
  o.weightDecay = ro["weight_decay"];
  o.warmupSteps = ro["warmup_steps"];
  o.minLrRatio = ro["min_lr_ratio"];
  o.gradClip = ro["grad_clip"];
  o.maxSteps = ro["max_steps"];
  o.auxLossCoef = ro["aux_loss_coef"];
  o.batchSize = 2;  // the whole fixed batch in every step
  o.device = "cpu";
  DecoderLM model = loadModel(test::fixtures() / "models" / GetParam());
  Recorder rec;
  TrainResult r = trainDecoder(model, fixtureRecords(GetParam()), o, &rec, nullptr);
  ASSERT_EQ(r.steps, 4);
  for (size_t s = 0; s < 4; ++s) {
    const json& e = ref["steps"][s];
    EXPECT_NEAR(rec.steps[s].loss, e["loss"].get<double>(), 2e-5) << "step " << s + 1;
    EXPECT_NEAR(rec.steps[s].lmLoss, e["lm_loss"].get<double>(), 2e-5) << "step " << s + 1;
    EXPECT_NEAR(rec.steps[s].auxLoss, e["aux_loss"].get<double>(), 2e-5) << "step " << s + 1;
    EXPECT_NEAR(rec.steps[s].gradNorm, e["grad_norm"].get<double>(), 1e-4 * e["grad_norm"].get<double>()) << "step " << s + 1;
    EXPECT_NEAR(rec.steps[s].lr, e["lr"].get<double>(), 1e-12) << "step " << s + 1;
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, Reference, ::testing::Values("llama_gqa", "mixtral_hub"));

TEST(Schedule, WarmupThenCosineByHand) {
  TrainOptions o;
  o.lr = 1.0;
  o.warmupSteps = 4;
  o.minLrRatio = 0.1;
  // warmup: (step + 1) / 4
  EXPECT_DOUBLE_EQ(learningRateAt(o, 0, 14), 0.25);
  EXPECT_DOUBLE_EQ(learningRateAt(o, 3, 14), 1.0);
  // cosine over the 14 - 4 - 1 = 9 remaining step gaps: step 4 -> 1.0, step 13 -> 0.1,
  // midway (step 8.5 is not an integer; step 4 + 4.5) -> check a quarter: progress 1/3 at step 7.
  EXPECT_DOUBLE_EQ(learningRateAt(o, 4, 14), 1.0);
  EXPECT_NEAR(learningRateAt(o, 13, 14), 0.1, 1e-12);
  EXPECT_NEAR(learningRateAt(o, 7, 14), 0.1 + 0.9 * 0.5 * (1 + std::cos(M_PI / 3)), 1e-12);  // = 0.775
}

TEST(Batching, EpochOrderIsASeededPermutation) {
  auto a = epochOrder(10, 7, 0), b = epochOrder(10, 7, 0), c = epochOrder(10, 7, 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < 10; ++i) EXPECT_EQ(sorted[i], i);
}

TEST(Batching, PadsMasksAndTruncates) {
  std::vector<TokenRecord> d(2);
  d[0].inputIds = {5, 6, 7, 8};
  d[1].inputIds = {9, 10};
  d[1].labels = {-100, 10};
  Batch b = makeBatch(d, {0, 1}, 3);
  EXPECT_EQ(b.ids.sizes(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(b.ids[1][2].item<int64_t>(), 0);
  EXPECT_EQ(b.labels[1][2].item<int64_t>(), -100);
  EXPECT_EQ(b.mask[1].sum().item<int64_t>(), 2);
  EXPECT_EQ(b.inputTokens, 5);
  EXPECT_EQ(b.predictedTokens, 2 + 1);  // record 0: tokens 6, 7 (8 truncated); record 1: token 10
}

TEST(Checkpoints, SavedAtEveryQuarterEpochAndLoadable) {
  test::TempDir dir;
  TrainOptions o;
  o.batchSize = 2;        // 16 records -> 8 steps per epoch
  o.epochs = 2;
  o.saveEveryEpochFraction = 0.25;
  o.outDir = dir.path();
  o.device = "cpu";
  DecoderLM model = loadModel(test::fixtures() / "models/llama_gqa");
  Recorder rec;
  TrainResult r = trainDecoder(model, syntheticRecords(16), o, &rec, nullptr);
  EXPECT_EQ(r.steps, 16);
  EXPECT_EQ(rec.checkpoints, (std::vector<int64_t>{2, 4, 6, 8, 10, 12, 14, 16}));  // 8 checkpoints
  EXPECT_EQ(rec.epochs, (std::vector<int64_t>{1, 2}));
  auto list = listTrainerCheckpoints(dir.path());
  ASSERT_EQ(list.size(), 8u);
  EXPECT_EQ(list[3].step, 8);
  EXPECT_NEAR(*list[3].epoch, 1.0, 1e-12);
  EXPECT_NEAR(*list[3].loss, rec.steps[7].loss, 1e-9);
  EXPECT_TRUE(std::filesystem::exists(list[0].path / "optimizer.pt"));
  EXPECT_FALSE(std::filesystem::exists(dir / "checkpoint-2.tmp"));
  // Every checkpoint is a HF folder that evaluation loads.
  test::writeBytes(dir / "probe.jsonl", "{\"input_ids\": [1, 2, 3, 4, 5]}\n");
  EvalOptions eo;
  eo.device = "cpu";
  EXPECT_GT(evaluateModel(list[0].path, dir / "probe.jsonl", eo).overall.loss, 0.0);
}

TEST(Checkpoints, ResumeContinuesTheSameLossCurve) {
  auto data = syntheticRecords(12);
  TrainOptions o;
  o.batchSize = 4;
  o.maxSteps = 6;
  o.warmupSteps = 2;
  o.lr = 5e-3;
  o.device = "cpu";
  o.seed = 11;
  // Uninterrupted run.
  DecoderLM a = loadModel(test::fixtures() / "models/mixtral_hub");
  Recorder full;
  trainDecoder(a, data, o, &full, nullptr);
  // Interrupted after step 3 (checkpoint every 3 steps), then resumed from a fresh load.
  test::TempDir dir;
  o.outDir = dir.path();
  o.saveSteps = 3;
  std::atomic<bool> cancel{false};
  Recorder first;
  first.cancel = &cancel;
  first.cancelAfter = 3;
  DecoderLM b = loadModel(test::fixtures() / "models/mixtral_hub");
  TrainResult rb = trainDecoder(b, data, o, &first, &cancel);
  EXPECT_TRUE(rb.cancelled);
  EXPECT_EQ(rb.steps, 3);
  o.resume = true;
  Recorder second;
  DecoderLM c = loadModel(test::fixtures() / "models/mixtral_hub");
  TrainResult rc = trainDecoder(c, data, o, &second, nullptr);
  ASSERT_EQ(second.steps.size(), 3u);
  EXPECT_EQ(second.steps[0].step, 4);
  for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(second.steps[i].loss, full.steps[3 + i].loss, 1e-6) << i;
  EXPECT_EQ(rc.history.size(), 6u);  // the log history carries over
}

TEST(Freezing, TrainOnlyRoutersLeavesEverythingElse) {
  DecoderLM model = loadModel(test::fixtures() / "models/mixtral_hub");
  DecoderLM before = loadModel(test::fixtures() / "models/mixtral_hub");
  TrainOptions o;
  o.maxSteps = 2;
  o.trainOnly = {"moe.router"};
  o.device = "cpu";
  trainDecoder(model, syntheticRecords(8), o, nullptr, nullptr);
  auto now = model->named_parameters();
  int changed = 0;
  for (auto& p : before->named_parameters()) {
    const bool same = torch::equal(p.value(), now[p.key()]);
    if (p.key().find("moe.router") != std::string::npos) {
      EXPECT_FALSE(same) << p.key();
      ++changed;
    } else {
      EXPECT_TRUE(same) << p.key();
    }
  }
  EXPECT_EQ(changed, 2);
}

TEST(Failures, NanLossStopsWithAClearErrorAndKeepsTheLastCheckpoint) {
  test::TempDir dir;
  TrainOptions o;
  o.lr = 1e12;  // explodes the weights after the first update
  o.gradClip = 0;
  o.maxSteps = 20;
  o.saveSteps = 1;
  o.outDir = dir.path();
  o.device = "cpu";
  DecoderLM model = loadModel(test::fixtures() / "models/llama_gqa");
  test::expectErrorContaining([&] { trainDecoder(model, syntheticRecords(4), o, nullptr, nullptr); },
                              {"the loss became", "last good checkpoint is", "checkpoint-"});
  EXPECT_TRUE(std::filesystem::exists(dir / "checkpoint-1/model.safetensors"));
}

TEST(Failures, BadSettingsAreRefusedByName) {
  TrainOptions o;
  o.batchSize = 0;
  test::expectErrorContaining([&] { validateTrainOptions(o); }, {"batch_size must be at least 1, got 0"});
  o = TrainOptions{};
  o.saveEveryEpochFraction = 1.5;
  test::expectErrorContaining([&] { validateTrainOptions(o); }, {"save_every", "1.5"});
  o = TrainOptions{};
  o.trainOnly = {"no-such-parameter"};
  o.device = "cpu";
  DecoderLM model = loadModel(test::fixtures() / "models/llama_gqa");
  test::expectErrorContaining([&] { trainDecoder(model, syntheticRecords(2), o, nullptr, nullptr); },
                              {"no parameter is left to train"});
}

// ------------------------------------------------------------------------------- bench train

TEST(BenchTrain, CountsParametersAndFlopsByHand) {
  upcycle::TrainBenchOptions o;
  o.dModel = 32;
  o.dFf = 64;
  o.layers = 2;
  o.heads = 2;
  o.kvHeads = 1;
  o.seqLen = 16;
  o.batch = 2;
  o.warmup = 0;
  o.steps = 2;
  o.experts = 0;
  auto dense = upcycle::benchTrain(o);
  // Per layer: q, o 32x32; k, v 32x16; FFN 3 x 32 x 64. LM head 264 x 32 (untied); embeddings 264 x 32.
  EXPECT_EQ(dense.totalParams, 264 * 32 + 2 * (3072 + 6144 + 64) + 32 + 264 * 32);
  EXPECT_EQ(dense.activeParams, dense.totalParams);
  // 3 x (2 x matmul params + 2 x layers x seq x d).
  EXPECT_DOUBLE_EQ(dense.flopsPerToken, 3.0 * (2.0 * (2 * (3072 + 6144) + 264 * 32) + 2.0 * 2 * 16 * 32));
  EXPECT_GT(dense.tokensPerS, 0);
  EXPECT_NEAR(dense.achievedGflops, dense.flopsPerToken * dense.tokensPerS / 1e9, 1e-9);
  o.experts = 4;
  o.topK = 2;
  auto moe = upcycle::benchTrain(o);
  // 4 experts and a 32 x 4 router per layer; 2 of the 4 experts active per token.
  EXPECT_EQ(moe.totalParams, 264 * 32 + 2 * (3072 + 4 * 6144 + 128 + 64) + 32 + 264 * 32);
  EXPECT_EQ(moe.activeParams, moe.totalParams - 2 * 2 * 6144);
  EXPECT_DOUBLE_EQ(moe.flopsPerToken, 3.0 * (2.0 * (2 * (3072 + 2 * 6144 + 128) + 264 * 32) + 2.0 * 2 * 16 * 32));
  upcycle::test::expectErrorContaining([&] {
    auto bad = o;
    bad.topK = 5;
    upcycle::benchTrain(bad);
  }, {"top-k (5)"});
}
