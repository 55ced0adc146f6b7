#pragma once
// Statistics across seeds (issue 14): for each run name of an experiment and one metric, the number of
// seeds, mean, sample standard deviation and the 95% Student-t confidence interval of the mean; against
// a baseline run, the paired difference per seed (the seeds both have) with its own t interval and the
// number of seeds where the run wins. Shared by `upcycle runs summary`, `upcycle run`'s table and the
// workbench's across-seeds view. Torch-free; pure functions over the run store.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "store/run_store.h"

namespace upcycle {

// The p-quantile of Student's t distribution with df degrees of freedom (p in (0, 1), df >= 1),
// from the regularized incomplete beta function, to about 1e-10.
double studentTQuantile(double p, double df);

struct SampleStats {
  int64_t n = 0;
  double mean = 0, sd = 0;     // sd: sample standard deviation (n - 1); 0 for n = 1
  double lo = 0, hi = 0;       // 95% t interval of the mean: mean -+ t(0.975, n-1) sd / sqrt(n); NaN for n < 2
};
SampleStats sampleStats(const std::vector<double>& values);

// The metrics a summary can take. "accuracy" and "accuracy:DOMAIN" are exact-match accuracy in percent;
// "eval_loss" / "eval_loss:DOMAIN" the evaluation loss; "train_loss" the last post-training loss;
// "train_loss@STEP" the mean post-training loss over the 10 steps ending at STEP (a point on the curve);
// "diversity" the experts' mean pairwise weight dissimilarity after post-training (MoE runs only).
bool higherIsBetter(const std::string& metric);
// The metric's value for one stored run; nullopt when the run does not have it.
std::optional<double> runMetric(const RunStore& store, const RunRow& run, const std::string& metric);

struct PairedStats {
  std::string baseline;
  int64_t n = 0;               // seeds both runs have
  double meanDiff = 0, lo = 0, hi = 0;  // run - baseline, with the t interval of the mean difference
  int64_t wins = 0;            // seeds where the run is better (by the metric's direction)
};

struct RunGroupStats {
  std::string name, method;
  std::vector<uint64_t> seeds;   // ascending
  std::vector<double> values;    // one per seed
  std::vector<int64_t> runIds;   // the stored run of each seed
  SampleStats stats;
  std::optional<PairedStats> paired;
};

struct ExperimentSummary {
  std::string experiment, metric;
  bool higherIsBetter = true;
  std::vector<RunGroupStats> runs;  // in the order the runs were first recorded
};

// Every finished run of `experiment` (the shared "NAME:base" records left out), grouped by run name;
// of two finished runs with one name and seed the later counts. With a baseline, each other run gets
// its paired difference. Throws UserError for an unknown experiment, metric or baseline.
ExperimentSummary summarizeExperiment(const RunStore& store, const std::string& experiment,
                                      const std::string& metric = "accuracy", const std::string& baseline = "");

std::string summaryText(const ExperimentSummary& s);
std::string summaryJson(const ExperimentSummary& s);

// A curve across seeds: for each step some seed has, the mean of the seeds that have it and the 95%
// t interval (lo = hi = mean where only one seed has the step).
struct CurveBand {
  std::vector<double> steps, mean, lo, hi;
  std::vector<int64_t> n;
};
CurveBand curveAcrossSeeds(const std::vector<std::vector<std::pair<double, double>>>& perSeed);

}  // namespace upcycle
