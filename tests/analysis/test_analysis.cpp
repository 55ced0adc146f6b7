// Analysis on known cases, with figures computed by hand.
#include <random>

#include "analysis/analysis.h"
#include "analysis/gram.h"
#include "model/model_io.h"
#include "test_util.h"
#include "upcycle/methods.h"
#include "upcycle/stream_convert.h"

using namespace upcycle;

namespace {
DecoderLM dense() { return loadModel(test::fixtures() / "models/llama_gqa"); }
std::vector<TokenRecord> probe() {
  std::vector<TokenRecord> out;
  for (int i = 0; i < 12; ++i) {
    TokenRecord r;
    for (int t = 0; t < 7; ++t) r.inputIds.push_back((i * 11 + t * 5) % 64);
    r.domain = i % 3 == 0 ? "a" : "b";
    out.push_back(r);
  }
  return out;
}
}  // namespace

TEST(Analysis, CosineAndCkaByHand) {
  auto m = cosineMatrix(torch::tensor({1.0, 0.0, 1.0, 1.0, 0.0, 2.0}).view({3, 2}));
  EXPECT_NEAR(m.at(0, 1), 1 / std::sqrt(2.0), 1e-12);  // (1,0).(1,1) / sqrt 2
  EXPECT_NEAR(m.at(0, 2), 0.0, 1e-12);
  EXPECT_NEAR(m.at(1, 2), 2 / (std::sqrt(2.0) * 2), 1e-12);
  auto a = torch::randn({50, 4}, torch::kDouble);
  EXPECT_NEAR(linearCka(a, a), 1.0, 1e-12);
  EXPECT_NEAR(linearCka(a, 3 * a + 1), 1.0, 1e-12);  // invariant to scale and shift
  auto q = std::get<0>(torch::linalg_qr(torch::randn({4, 4}, torch::kDouble)));
  EXPECT_NEAR(linearCka(a, torch::matmul(a, q)), 1.0, 1e-9);  // and to rotations
}

TEST(Analysis, ChunkedCosineOverPartsAndDeltasMatchesTheWholeMatrix) {
  // Two parts wider than one 65536-column chunk, and a reference row subtracted from every row.
  torch::manual_seed(3);
  auto a = torch::randn({5, 70000}), b = torch::randn({5, 3, 40000});
  auto ra = torch::randn({70000}), rb = torch::randn({3, 40000});
  auto whole = torch::cat({a - ra, (b - rb).reshape({5, -1})}, 1).to(torch::kDouble);  // (5, 190000)
  auto unit = whole / whole.norm(2, 1, true);
  auto expected = torch::matmul(unit, unit.t());
  Matrix m = cosineMatrix({a, b}, {ra, rb});
  ASSERT_EQ(m.rows, 5);
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 5; ++j) EXPECT_NEAR(m.at(i, j), expected[i][j].item<double>(), 1e-12) << i << "," << j;
}

TEST(Analysis, SparseUpcycledExpertsAreIdentical) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(1);
  DecoderLM moe = sparseUpcycle(*d, {4, 2, 1, 0}, "normal_002", gen);
  AnalysisReport r = analyzeDecoder(*moe, d.get(), probe());
  ASSERT_EQ(r.similarity.size(), 2u);
  for (const auto& s : r.similarity) {
    for (int64_t a = 0; a < 4; ++a)
      for (int64_t b = 0; b < 4; ++b) {
        EXPECT_NEAR(s.weights.at(a, b), 1.0, 1e-9);
        EXPECT_NEAR(s.cka.at(a, b), 1.0, 1e-6);
      }
    EXPECT_NEAR(s.diversity, 0.0, 1e-9);
  }
  EXPECT_NEAR(r.diversity, 0.0, 1e-9);
}

TEST(Analysis, DropWithRatioOneIsFarLessSimilar) {
  DecoderLM d = dense();
  torch::Generator gen = at::detail::createCPUGenerator(1);
  DecoderLM moe = dropUpcycle(*d, {4, 2, 1, 0}, "uniform_std002", 1.0, false, gen);
  AnalysisReport r = analyzeDecoder(*moe, d.get(), {});
  for (const auto& s : r.similarity)
    for (int64_t a = 0; a < 4; ++a)
      for (int64_t b = 0; b < 4; ++b)
        if (a != b) {
          EXPECT_LT(s.weights.at(a, b), 0.5) << "layer " << s.layer;
        }
  EXPECT_GT(r.diversity, 0.5);
  EXPECT_TRUE(r.routing.empty());  // no probe, no routing
}

TEST(Analysis, RoutingSharesSumToOneAndCoselectionCountsTokens) {
  AnalysisReport r = analyzeDecoder(*loadModel(test::fixtures() / "models/mixtral_hub"), nullptr, probe());
  ASSERT_EQ(r.routing.size(), 2u);
  EXPECT_EQ(r.probeTokens, 12 * 7);
  for (const auto& rl : r.routing) {
    double sum = 0;
    for (double s : rl.shares) sum += s;
    EXPECT_NEAR(sum, 1.0, 1e-12);
    for (const auto& [d, sh] : rl.domainShares) {
      double ds = 0;
      for (double s : sh) ds += s;
      EXPECT_NEAR(ds, 1.0, 1e-12) << d;
    }
    EXPECT_EQ(rl.domainShares.size(), 2u);
    // Each token picks k = 2 distinct experts: the diagonal counts sum to 2 N, and each row of the
    // co-selection matrix, less its diagonal, equals its diagonal (every pick has one partner).
    double diag = 0;
    for (int64_t e = 0; e < 4; ++e) {
      diag += rl.coselection.at(e, e);
      double off = 0;
      for (int64_t f = 0; f < 4; ++f) if (f != e) off += rl.coselection.at(e, f);
      EXPECT_NEAR(off, rl.coselection.at(e, e), 1e-9);
      EXPECT_NEAR(rl.shares[e], rl.coselection.at(e, e) / (2.0 * 84), 1e-12);
    }
    EXPECT_NEAR(diag, 2.0 * 84, 1e-9);
    double mx = *std::max_element(rl.shares.begin(), rl.shares.end());
    EXPECT_NEAR(rl.imbalance, mx * 4, 1e-12);
    EXPECT_GT(rl.entropy, 0.0);
    EXPECT_LE(rl.entropy, std::log(4.0) + 1e-9);
  }
}

// The streaming Gram kernel (analysis/gram.h) against plain double loops: row counts that are not a
// multiple of its 4-row blocks, column counts that are not a multiple of its 8-wide vectors nor of its
// 4096-column tiles, with and without a reference row; the same bits for 1 and 3 threads.
TEST(Analysis, GramKernelMatchesPlainLoops) {
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (const int64_t n : {1, 5, 9}) {
    for (const int64_t c : {int64_t{7}, int64_t{4096 * 3 + 13}}) {
      for (const bool withRef : {false, true}) {
        SCOPED_TRACE(std::to_string(n) + " rows, " + std::to_string(c) + " columns, ref " + std::to_string(withRef));
        std::vector<float> x(static_cast<size_t>(n * c)), ref(static_cast<size_t>(c));
        for (auto& v : x) v = normal(rng);
        for (auto& v : ref) v = normal(rng);
        std::vector<const float*> rows;
        for (int64_t i = 0; i < n; ++i) rows.push_back(x.data() + i * c);
        std::vector<double> expected(static_cast<size_t>(n * n), 0.0);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j)
            for (int64_t k = 0; k < c; ++k) {
              const float a = x[i * c + k] - (withRef ? ref[k] : 0.0f), b = x[j * c + k] - (withRef ? ref[k] : 0.0f);
              expected[i * n + j] += static_cast<double>(a) * static_cast<double>(b);
            }
        std::vector<double> g(static_cast<size_t>(n * n), 1.0);  // accumulates onto what is there
        accumulateGram(rows.data(), n, withRef ? ref.data() : nullptr, c, g.data(), 1);
        std::vector<double> g2(static_cast<size_t>(n * n), 1.0);
        accumulateGram(rows.data(), n, withRef ? ref.data() : nullptr, c, g2.data(), 3);
        for (int64_t i = 0; i < n * n; ++i) {
          EXPECT_NEAR(g[i], 1.0 + expected[i], 1e-9 * (1.0 + std::abs(expected[i]))) << i;
          EXPECT_EQ(g[i], g2[i]) << i;
        }
      }
    }
  }
}

// bfloat16 rows (analysis/gram.h's accumulateGramBf16): the same bits as the float32 kernel on the
// rows widened by hand (bf16 is the upper half of a float32), and plain double loops to 1e-9; with and
// without a float32 reference row, odd row and column counts, 1 and 3 threads.
TEST(Analysis, GramKernelReadsBf16RowsAsTheirFloat32Widening) {
  std::mt19937 rng(8);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto widen = [](uint16_t h) {
    const uint32_t bits = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  };
  for (const int64_t n : {3, 8}) {
    for (const int64_t c : {int64_t{13}, int64_t{4096 * 9 + 5}}) {
      for (const bool withRef : {false, true}) {
        SCOPED_TRACE(std::to_string(n) + " rows, " + std::to_string(c) + " columns, ref " + std::to_string(withRef));
        std::vector<uint16_t> h(static_cast<size_t>(n * c));
        std::vector<float> wide(h.size()), ref(static_cast<size_t>(c));
        for (size_t i = 0; i < h.size(); ++i) {
          const float x = normal(rng);
          uint32_t bits;
          std::memcpy(&bits, &x, 4);
          h[i] = static_cast<uint16_t>(bits >> 16);  // truncation: any bf16 pattern will do
          wide[i] = widen(h[i]);
        }
        for (auto& v : ref) v = normal(rng);
        std::vector<const uint16_t*> rows16;
        std::vector<const float*> rows32;
        for (int64_t i = 0; i < n; ++i) {
          rows16.push_back(h.data() + i * c);
          rows32.push_back(wide.data() + i * c);
        }
        const float* r = withRef ? ref.data() : nullptr;
        std::vector<double> g16(static_cast<size_t>(n * n), 0.0), g32 = g16, g16t3 = g16, expected = g16;
        accumulateGramBf16(rows16.data(), n, r, c, g16.data(), 1);
        accumulateGramBf16(rows16.data(), n, r, c, g16t3.data(), 3);
        accumulateGram(rows32.data(), n, r, c, g32.data(), 1);
        for (int64_t i = 0; i < n; ++i)
          for (int64_t j = 0; j < n; ++j)
            for (int64_t k = 0; k < c; ++k) {
              const float a = wide[i * c + k] - (r ? r[k] : 0.0f), b = wide[j * c + k] - (r ? r[k] : 0.0f);
              expected[i * n + j] += static_cast<double>(a) * static_cast<double>(b);
            }
        for (int64_t i = 0; i < n * n; ++i) {
          EXPECT_EQ(g16[i], g32[i]) << i;
          EXPECT_EQ(g16[i], g16t3[i]) << i;
          EXPECT_NEAR(g16[i], expected[i], 1e-9 * (1.0 + std::abs(expected[i]))) << i;
        }
      }
    }
  }
}

// A bf16 MoE analysed as stored (bf16 parameters, rows read by the bf16 kernel, the base's rows too)
// against the same checkpoints loaded as float32: the weight and delta similarities are the same
// numbers (bf16 -> float32 is exact and the kernel sums in the same order; checked to 1e-12). Routing
// and CKA come from the probe forward, which runs in bf16 for the bf16 model: they agree to bf16
// precision (tolerances below).
TEST(Analysis, Bf16ModelMatchesItsFloat32Widening) {
  test::TempDir dir;
  const auto base = test::fixtures() / "models/llama_bf16";
  StreamConvertOptions o;
  o.base = base;
  o.out = dir / "moe";
  o.method = "drop";
  o.ratio = 0.5;
  o.shape = MoeShape{4, 2, 1, 0};
  o.seed = 2;
  streamConvert(o);
  DecoderLM m16 = loadModel(dir / "moe", {torch::kCPU, torch::kBFloat16});
  DecoderLM m32 = loadModel(dir / "moe", {torch::kCPU, torch::kFloat});
  DecoderLM b16 = loadModel(base, {torch::kCPU, torch::kBFloat16});
  DecoderLM b32 = loadModel(base, {torch::kCPU, torch::kFloat});
  for (const auto& p : m16->parameters()) ASSERT_EQ(p.scalar_type(), torch::kBFloat16);
  const AnalysisReport r16 = analyzeDecoder(*m16, b16.get(), probe());
  const AnalysisReport r32 = analyzeDecoder(*m32, b32.get(), probe());
  ASSERT_EQ(r16.similarity.size(), r32.similarity.size());
  // bf16 activations may flip a near-tied choice: at most 2 of the 12 x 7 x 2 (token, slot) assignments
  // move (one was seen), so a share moves by at most 2 / 168. Mean router entropy and output CKA move
  // by bf16 rounding (1.5e-5 and 0.006 were seen).
  constexpr double kShareTolerance = 2.0 / 168 + 1e-12, kEntropyTolerance = 1e-3, kCkaTolerance = 0.02;
  EXPECT_NEAR(r16.diversity, r32.diversity, 1e-12);
  EXPECT_GT(r16.diversity, 0.1);  // drop r = 0.5: the experts differ
  for (size_t l = 0; l < r16.similarity.size(); ++l) {
    const auto &a = r16.similarity[l], &b = r32.similarity[l];
    for (size_t i = 0; i < a.weights.values.size(); ++i) {
      EXPECT_NEAR(a.weights.values[i], b.weights.values[i], 1e-12) << "layer " << l;
      EXPECT_NEAR(a.deltas.values[i], b.deltas.values[i], 1e-12) << "layer " << l;
      EXPECT_NEAR(a.cka.values[i], b.cka.values[i], kCkaTolerance) << "layer " << l;
    }
    const auto &ra = r16.routing[l], &rb = r32.routing[l];
    for (size_t e = 0; e < ra.shares.size(); ++e)
      EXPECT_NEAR(ra.shares[e], rb.shares[e], kShareTolerance) << "layer " << l << " expert " << e;
    EXPECT_NEAR(ra.entropy, rb.entropy, kEntropyTolerance) << "layer " << l;
  }
  // The file-level entry point: auto keeps the bf16 checkpoint in bf16, with the same similarities.
  AnalyzeOptions ao;
  ao.base = base;
  ao.device = "cpu";
  const AnalysisReport fromFiles = analyzeModel(dir / "moe", ao);
  ASSERT_EQ(fromFiles.similarity.size(), r16.similarity.size());
  for (size_t l = 0; l < r16.similarity.size(); ++l)
    EXPECT_EQ(fromFiles.similarity[l].weights.values, r16.similarity[l].weights.values);
}
