// Statistics across seeds (store/run_summary.h) against hand arithmetic and published t quantiles.
#include <cmath>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "store/run_summary.h"
#include "test_util.h"

using namespace upcycle;
using upcycle::test::TempDir;

TEST(RunSummary, StudentTQuantilesMatchPublishedTables) {
  // Two-sided 95% (p = 0.975) and other quantiles, from standard t tables (to the digits printed there).
  const std::vector<std::tuple<double, double, double>> table = {
      {0.975, 1, 12.7062047362}, {0.975, 2, 4.3026527299}, {0.975, 3, 3.1824463053}, {0.975, 4, 2.7764451052},
      {0.975, 9, 2.2621571628},  {0.975, 29, 2.0452296421}, {0.975, 100, 1.9839715185}, {0.95, 5, 2.0150483733},
      {0.995, 10, 3.1692726669}, {0.9, 1, 3.0776835372}};
  for (const auto& [p, df, t] : table) {
    EXPECT_NEAR(studentTQuantile(p, df), t, 1e-8) << "p " << p << " df " << df;
    EXPECT_NEAR(studentTQuantile(1 - p, df), -t, 1e-8) << "symmetry, df " << df;
  }
  EXPECT_EQ(studentTQuantile(0.5, 7), 0.0);
  // Large df tends to the normal quantile 1.959964.
  EXPECT_NEAR(studentTQuantile(0.975, 1e6), 1.959966, 1e-5);
  EXPECT_THROW(studentTQuantile(1.0, 3), UserError);
  EXPECT_THROW(studentTQuantile(0.9, 0.5), UserError);
}

TEST(RunSummary, SampleStatsByHand) {
  // 1..5: mean 3, sample variance 10/4 = 2.5, half-width t(0.975, 4) * sqrt(2.5) / sqrt(5) = 2.7764451052 * sqrt(0.5).
  const SampleStats s = sampleStats({1, 2, 3, 4, 5});
  EXPECT_EQ(s.n, 5);
  EXPECT_DOUBLE_EQ(s.mean, 3.0);
  EXPECT_NEAR(s.sd, std::sqrt(2.5), 1e-12);
  const double half = 2.7764451052 * std::sqrt(0.5);
  EXPECT_NEAR(s.lo, 3 - half, 1e-8);
  EXPECT_NEAR(s.hi, 3 + half, 1e-8);
  const SampleStats one = sampleStats({7.5});
  EXPECT_EQ(one.n, 1);
  EXPECT_DOUBLE_EQ(one.mean, 7.5);
  EXPECT_TRUE(std::isnan(one.lo) && std::isnan(one.hi)) << "no interval from one seed";
  const SampleStats same = sampleStats({2, 2, 2});
  EXPECT_DOUBLE_EQ(same.lo, 2.0);
  EXPECT_DOUBLE_EQ(same.hi, 2.0);
}

namespace {
// One finished run with an overall and a per-domain accuracy (fractions), a loss and a final train loss.
int64_t addRun(RunStore& st, const std::string& exp, const std::string& name, const std::string& method, uint64_t seed,
               double acc, double mathAcc, double trainLoss, const std::string& status = "finished") {
  const int64_t id = st.beginRun(name, exp, method, seed, "cpu", {});
  st.addEval(id, {{"", 1.0 + seed, 2.7, acc, 100, 40}, {"math", 2.0, 7.4, mathAcc, 50, 20}});
  st.addMetrics(id, {{"post:" + name, "loss", 10, trainLoss}, {"post:" + name, "loss", 5, 99.0}});
  st.finishRun(id, status);
  return id;
}
}  // namespace

TEST(RunSummary, GroupsSeedsAndPairsAgainstTheBaselineByHand) {
  TempDir dir;
  RunStore st(dir / "runs.db");
  st.finishRun(st.beginRun("exp:base", "exp", "base", 0, "cpu", {}), "finished");
  // dense: 0.50, 0.40, 0.45; moe: 0.56, 0.41, 0.44 (seed 2 loses); an unfinished moe seed 3 and another
  // experiment's run are left out; a second dense seed 1 recorded later replaces the first.
  addRun(st, "exp", "dense", "dense", 0, 0.50, 0.30, 1.5);
  addRun(st, "exp", "dense", "dense", 1, 0.99, 0.99, 9.9);
  addRun(st, "exp", "moe", "sparse", 0, 0.56, 0.20, 1.4);
  addRun(st, "exp", "moe", "sparse", 1, 0.41, 0.25, 1.3);
  addRun(st, "exp", "dense", "dense", 2, 0.45, 0.35, 1.6);
  addRun(st, "exp", "moe", "sparse", 2, 0.44, 0.40, 1.2);
  addRun(st, "exp", "dense", "dense", 1, 0.40, 0.32, 1.7);
  addRun(st, "exp", "moe", "sparse", 3, 0.90, 0.90, 0.1, "failed");
  addRun(st, "other", "moe", "sparse", 0, 0.10, 0.10, 5.0);

  const ExperimentSummary s = summarizeExperiment(st, "exp", "accuracy", "dense");
  ASSERT_EQ(s.runs.size(), 2u);
  EXPECT_TRUE(s.higherIsBetter);
  const RunGroupStats& d = s.runs[0];
  const RunGroupStats& m = s.runs[1];
  EXPECT_EQ(d.name, "dense");
  EXPECT_EQ(d.seeds, (std::vector<uint64_t>{0, 1, 2}));
  ASSERT_EQ(d.values.size(), 3u);
  EXPECT_NEAR(d.values[1], 40.0, 1e-9) << "the later record of seed 1 counts";
  // dense: mean 45, sd 5, half-width t(0.975, 2) * 5 / sqrt(3).
  EXPECT_NEAR(d.stats.mean, 45.0, 1e-9);
  EXPECT_NEAR(d.stats.sd, 5.0, 1e-9);
  EXPECT_NEAR(d.stats.hi - d.stats.mean, 4.3026527299 * 5 / std::sqrt(3.0), 1e-7);
  EXPECT_FALSE(d.paired.has_value()) << "the baseline is not paired with itself";
  // moe - dense per seed: +6, +1, -1: mean 2, sd sqrt(((4^2)+(1^2)+(3^2))/2) = sqrt(13), wins 2 of 3.
  ASSERT_TRUE(m.paired.has_value());
  EXPECT_EQ(m.paired->n, 3);
  EXPECT_EQ(m.paired->wins, 2);
  EXPECT_NEAR(m.paired->meanDiff, 2.0, 1e-9);
  const double half = 4.3026527299 * std::sqrt(13.0) / std::sqrt(3.0);
  EXPECT_NEAR(m.paired->lo, 2.0 - half, 1e-7);
  EXPECT_NEAR(m.paired->hi, 2.0 + half, 1e-7);

  // Per domain, eval loss (lower is better: wins are seeds with a smaller loss), train loss.
  const ExperimentSummary math = summarizeExperiment(st, "exp", "accuracy:math");
  EXPECT_NEAR(math.runs[1].stats.mean, (20.0 + 25.0 + 40.0) / 3, 1e-9);
  const ExperimentSummary loss = summarizeExperiment(st, "exp", "eval_loss", "dense");
  EXPECT_FALSE(loss.higherIsBetter);
  EXPECT_NEAR(loss.runs[0].stats.mean, 2.0, 1e-12);  // 1 + seed over seeds 0, 1, 2
  EXPECT_EQ(loss.runs[1].paired->wins, 0) << "equal losses win nothing";
  const ExperimentSummary train = summarizeExperiment(st, "exp", "train_loss");
  EXPECT_NEAR(train.runs[1].stats.mean, 1.3, 1e-12) << "the value at the last step";
  // A point on the curve: the mean over the 10 steps ending there (steps 5 and 10 hold 99 and the loss).
  const ExperimentSummary at10 = summarizeExperiment(st, "exp", "train_loss@10");
  EXPECT_NEAR(at10.runs[1].values[0], (99.0 + 1.4) / 2, 1e-12);
  EXPECT_NEAR(summarizeExperiment(st, "exp", "train_loss@5").runs[1].values[0], 99.0, 1e-12);
  EXPECT_THROW(summarizeExperiment(st, "exp", "train_loss@11"), UserError) << "no run reached step 11";
  EXPECT_THROW(summarizeExperiment(st, "exp", "train_loss@x"), UserError);

  // JSON in the documented shape.
  const auto j = nlohmann::json::parse(summaryJson(s));
  EXPECT_EQ(j["experiment"], "exp");
  EXPECT_EQ(j["metric"], "accuracy");
  ASSERT_EQ(j["runs"].size(), 2u);
  EXPECT_EQ(j["runs"][1]["name"], "moe");
  EXPECT_EQ(j["runs"][1]["n"], 3);
  EXPECT_EQ(j["runs"][1]["seeds"], nlohmann::json::array({0, 1, 2}));
  EXPECT_NEAR(j["runs"][1]["ci95"][0].get<double>(), m.stats.lo, 1e-12);
  EXPECT_EQ(j["runs"][1]["paired"]["baseline"], "dense");
  EXPECT_EQ(j["runs"][1]["paired"]["wins"], 2);
  EXPECT_NEAR(j["runs"][1]["paired"]["mean_diff"].get<double>(), 2.0, 1e-9);
  EXPECT_FALSE(j["runs"][0].contains("paired"));
  const std::string text = summaryText(s);
  EXPECT_NE(text.find("+2.0 ["), std::string::npos) << text;
  EXPECT_NE(text.find("2/3"), std::string::npos) << text;

  // Clear errors: unknown experiment, metric, baseline.
  EXPECT_THROW(summarizeExperiment(st, "nope"), UserError);
  EXPECT_THROW(summarizeExperiment(st, "exp", "accurcy"), UserError);
  EXPECT_THROW(summarizeExperiment(st, "exp", "train_loss:math"), UserError);
  try {
    summarizeExperiment(st, "exp", "accuracy", "sparse");
    FAIL();
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("runs: dense, moe"), std::string::npos) << e.what();
  }
}

TEST(RunSummary, CurveAcrossSeedsAlignsSteps) {
  // Seeds with steps {1, 2, 3}, {1, 2, 3}, {1, 2}: step 3 has two values.
  const CurveBand b = curveAcrossSeeds({{{1, 4}, {2, 3}, {3, 2}}, {{1, 6}, {2, 5}, {3, 4}}, {{1, 5}, {2, 1}}});
  ASSERT_EQ(b.steps, (std::vector<double>{1, 2, 3}));
  EXPECT_EQ(b.n, (std::vector<int64_t>{3, 3, 2}));
  EXPECT_DOUBLE_EQ(b.mean[0], 5.0);
  EXPECT_NEAR(b.hi[0] - 5.0, 4.3026527299 * 1.0 / std::sqrt(3.0), 1e-8);  // sd of 4, 6, 5 is 1
  EXPECT_DOUBLE_EQ(b.mean[2], 3.0);
  EXPECT_NEAR(b.hi[2] - 3.0, 12.7062047362 * std::sqrt(2.0) / std::sqrt(2.0), 1e-7);  // sd of 2, 4 is sqrt(2)
}

TEST(RunSummary, TextKeepsItsColumnsForRunNamesLongerThanTheDefaultWidth) {
  // Seen in the UpIT study: "upit-random-seeds" (17 characters) pushed its row one column right.
  ExperimentSummary s;
  s.experiment = "exp";
  s.metric = "accuracy";
  for (const std::string name : {"dense", "upit-random-seeds-and-more"}) {
    RunGroupStats g;
    g.name = name;
    g.stats = sampleStats({50.0, 60.0, 70.0});
    s.runs.push_back(g);
  }
  std::vector<std::string> lines;
  std::istringstream in(summaryText(s));
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 5u);  // title, blank, header, two rows
  EXPECT_EQ(lines[3].size(), lines[4].size()) << lines[3] << "\n" << lines[4];
  EXPECT_EQ(lines[2].size(), lines[3].size()) << lines[2] << "\n" << lines[3];
  EXPECT_EQ(lines[3].find("60.0"), lines[4].find("60.0"));
}
