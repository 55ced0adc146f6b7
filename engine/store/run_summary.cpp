#include "store/run_summary.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <sstream>

#include "core/error.h"

namespace upcycle {

namespace {

// Continued fraction of the regularized incomplete beta function (modified Lentz), valid for
// x < (a + 1) / (a + b + 2); the caller uses the symmetry I_x(a, b) = 1 - I_{1-x}(b, a) otherwise.
double betaContinuedFraction(double a, double b, double x) {
  constexpr double tiny = 1e-300, eps = 1e-15;
  const double qab = a + b, qap = a + 1, qam = a - 1;
  double c = 1, d = 1 - qab * x / qap;
  if (std::fabs(d) < tiny) d = tiny;
  d = 1 / d;
  double h = d;
  for (int m = 1; m <= 500; ++m) {
    const double m2 = 2.0 * m;
    double aa = m * (b - m) * x / ((qam + m2) * (a + m2));  // even step
    d = 1 + aa * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    h *= d * c;
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));  // odd step
    d = 1 + aa * d;
    if (std::fabs(d) < tiny) d = tiny;
    c = 1 + aa / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1 / d;
    const double step = d * c;
    h *= step;
    if (std::fabs(step - 1) < eps) break;
  }
  return h;
}

double regularizedBeta(double a, double b, double x) {
  if (x <= 0) return 0;
  if (x >= 1) return 1;
  const double front = std::exp(std::lgamma(a + b) - std::lgamma(a) - std::lgamma(b) + a * std::log(x) + b * std::log1p(-x));
  if (x < (a + 1) / (a + b + 2)) return front * betaContinuedFraction(a, b, x) / a;
  return 1 - front * betaContinuedFraction(b, a, 1 - x) / b;
}

// P(T <= t) for t >= 0.
double studentTCdf(double t, double df) { return 1 - 0.5 * regularizedBeta(df / 2, 0.5, df / (df + t * t)); }

}  // namespace

double studentTQuantile(double p, double df) {
  UPCYCLE_CHECK(p > 0 && p < 1, "t quantile: p must be in (0, 1), got ", p);
  UPCYCLE_CHECK(df >= 1, "t quantile: degrees of freedom must be at least 1, got ", df);
  if (p == 0.5) return 0;
  if (p < 0.5) return -studentTQuantile(1 - p, df);
  double lo = 0, hi = 1;
  while (studentTCdf(hi, df) < p) hi *= 2;  // df = 1, p = 0.9999: about 3183, 12 doublings
  for (int i = 0; i < 200 && hi - lo > 1e-13 * hi; ++i) {
    const double mid = 0.5 * (lo + hi);
    (studentTCdf(mid, df) < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

SampleStats sampleStats(const std::vector<double>& v) {
  SampleStats s;
  s.n = static_cast<int64_t>(v.size());
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (v.empty()) {
    s.mean = s.sd = s.lo = s.hi = nan;
    return s;
  }
  double sum = 0;
  for (double x : v) sum += x;
  s.mean = sum / s.n;
  if (s.n < 2) {
    s.lo = s.hi = nan;
    return s;
  }
  double ss = 0;
  for (double x : v) ss += (x - s.mean) * (x - s.mean);
  s.sd = std::sqrt(ss / (s.n - 1));
  const double half = studentTQuantile(0.975, static_cast<double>(s.n - 1)) * s.sd / std::sqrt(static_cast<double>(s.n));
  s.lo = s.mean - half;
  s.hi = s.mean + half;
  return s;
}

namespace {

struct MetricName {
  std::string base, domain;  // "accuracy:math" -> {accuracy, math}
  int64_t step = 0;          // train_loss@STEP
};

MetricName parseMetric(const std::string& m) {
  const auto colon = m.find(':');
  MetricName r{m.substr(0, colon), colon == std::string::npos ? std::string() : m.substr(colon + 1)};
  if (r.base.rfind("train_loss@", 0) == 0 && r.domain.empty()) {
    const std::string step = r.base.substr(11);
    const bool digits = !step.empty() && step.size() < 12 && std::all_of(step.begin(), step.end(), [](char c) { return c >= '0' && c <= '9'; });
    UPCYCLE_CHECK(digits && std::stoll(step) >= 1, "metric ", m, ": the step after @ must be a positive whole number");
    r.step = std::stoll(step);
    r.base = "train_loss@";
    return r;
  }
  const bool known = r.base == "accuracy" || r.base == "eval_loss" || ((r.base == "train_loss" || r.base == "diversity") && r.domain.empty());
  UPCYCLE_CHECK(known, "unknown metric \"", m,
                "\": use accuracy, eval_loss (each optionally :DOMAIN, e.g. accuracy:math), train_loss, train_loss@STEP or "
                "diversity");
  return r;
}

}  // namespace

bool higherIsBetter(const std::string& metric) {
  const std::string base = parseMetric(metric).base;  // losses (train_loss@STEP too): lower is better
  return base == "accuracy" || base == "diversity";
}

std::optional<double> runMetric(const RunStore& store, const RunRow& run, const std::string& metric) {
  const MetricName m = parseMetric(metric);
  if (m.base == "train_loss") {
    // The post-training loss at the run's highest step (a renamed run keeps its stage name, "post:OLD",
    // and stores before v2 wrote "post": any post-training stage counts; a run has one).
    std::optional<double> value;
    int64_t last = -1;
    for (const MetricPoint& p : store.metrics(run.id))
      if (p.key == "loss" && p.stage.rfind("post", 0) == 0 && p.step >= last) {
        last = p.step;
        value = p.value;
      }
    return value;
  }
  if (m.base == "train_loss@") {
    // The mean post-training loss over the 10 steps ending at STEP (a run that stopped earlier has none).
    double sum = 0;
    int64_t n = 0, last = 0;
    for (const MetricPoint& p : store.metrics(run.id)) {
      if (p.key != "loss" || p.stage.rfind("post", 0) != 0) continue;
      last = std::max(last, p.step);
      if (p.step > m.step - 10 && p.step <= m.step) {
        sum += p.value;
        ++n;
      }
    }
    if (n == 0 || last < m.step) return std::nullopt;
    return sum / n;
  }
  if (m.base == "diversity") {
    const auto it = run.finalMetrics.find("analysis/diversity");
    return it == run.finalMetrics.end() ? std::nullopt : std::optional<double>(it->second);
  }
  for (const EvalRow& row : store.run(run.id).eval) {
    if (row.domain != m.domain) continue;
    if (m.base == "eval_loss") return row.loss;
    if (row.answered > 0) return 100.0 * row.accuracy;
    return std::nullopt;
  }
  return std::nullopt;
}

ExperimentSummary summarizeExperiment(const RunStore& store, const std::string& experiment, const std::string& metric,
                                      const std::string& baseline) {
  ExperimentSummary out;
  out.experiment = experiment;
  out.metric = metric;
  out.higherIsBetter = higherIsBetter(metric);
  std::vector<RunRow> all = store.listRuns();
  // Oldest first by id (ids only grow; start times tie within a second): the later of two runs with one
  // name and seed wins, and the groups come in the order their runs were first recorded.
  std::sort(all.begin(), all.end(), [](const RunRow& a, const RunRow& b) { return a.id < b.id; });
  std::vector<std::string> order;
  std::map<std::string, std::map<uint64_t, const RunRow*>> groups;
  bool experimentSeen = false;
  for (auto it = all.begin(); it != all.end(); ++it) {
    if (it->experiment != experiment) continue;
    experimentSeen = true;
    if (it->status != "finished" || it->method == "base") continue;
    if (!groups.count(it->name)) order.push_back(it->name);
    groups[it->name][it->seed] = &*it;
  }
  UPCYCLE_CHECK(experimentSeen, "no experiment \"", experiment, "\" in ", store.path().string(),
                " (upcycle runs list shows the experiments recorded)");
  for (const std::string& name : order) {
    RunGroupStats g;
    g.name = name;
    for (const auto& [seed, row] : groups[name]) {
      g.method = row->method;
      const auto v = runMetric(store, *row, metric);
      if (!v) continue;
      g.seeds.push_back(seed);
      g.values.push_back(*v);
      g.runIds.push_back(row->id);
    }
    if (g.values.empty()) continue;  // e.g. diversity of the dense run
    g.stats = sampleStats(g.values);
    out.runs.push_back(std::move(g));
  }
  UPCYCLE_CHECK(!out.runs.empty(), "experiment \"", experiment, "\" has no finished run with the metric ", metric);
  if (!baseline.empty()) {
    const auto base = std::find_if(out.runs.begin(), out.runs.end(), [&](const RunGroupStats& g) { return g.name == baseline; });
    if (base == out.runs.end()) {
      std::string names;
      for (const auto& g : out.runs) names += (names.empty() ? "" : ", ") + g.name;
      throw UserError("baseline \"" + baseline + "\" is not a run of experiment \"" + experiment + "\" with " + metric +
                      " (runs: " + names + ")");
    }
    std::map<uint64_t, double> baseBySeed;
    for (size_t i = 0; i < base->seeds.size(); ++i) baseBySeed[base->seeds[i]] = base->values[i];
    for (auto& g : out.runs) {
      if (g.name == baseline) continue;
      PairedStats p;
      p.baseline = baseline;
      std::vector<double> diffs;
      for (size_t i = 0; i < g.seeds.size(); ++i) {
        const auto b = baseBySeed.find(g.seeds[i]);
        if (b == baseBySeed.end()) continue;
        const double d = g.values[i] - b->second;
        diffs.push_back(d);
        if (out.higherIsBetter ? d > 0 : d < 0) ++p.wins;
      }
      const SampleStats s = sampleStats(diffs);
      p.n = s.n;
      p.meanDiff = s.mean;
      p.lo = s.lo;
      p.hi = s.hi;
      g.paired = p;
    }
  }
  return out;
}

namespace {
std::string fmt(double v, int decimals) {
  if (std::isnan(v)) return "-";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}
int decimalsFor(const std::string& metric) { return metric.rfind("accuracy", 0) == 0 ? 1 : 4; }
}  // namespace

std::string summaryText(const ExperimentSummary& s) {
  const int dp = decimalsFor(s.metric);
  std::ostringstream os;
  os << "experiment " << s.experiment << ", " << s.metric << (s.metric.rfind("accuracy", 0) == 0 ? " (%)" : "") << " ("
     << (s.higherIsBetter ? "higher" : "lower") << " is better); 95% CI = mean -+ t(0.975, n-1) sd / sqrt(n)\n\n";
  // The name column as wide as the longest name (at least 16), so that long run names keep the columns.
  int width = 16;
  for (const auto& g : s.runs) width = std::max(width, static_cast<int>(std::min<size_t>(g.name.size(), 200)));
  char line[512];
  std::snprintf(line, sizeof line, "%-*s %3s %10s %9s %23s", width, "run", "n", "mean", "sd", "95% CI");
  os << line;
  const bool paired = std::any_of(s.runs.begin(), s.runs.end(), [](const RunGroupStats& g) { return g.paired.has_value(); });
  if (paired) {
    std::string baseline;
    for (const auto& g : s.runs)
      if (g.paired) baseline = g.paired->baseline;
    os << "   paired vs " << baseline << ": mean diff [95% CI] wins";
  }
  os << "\n";
  for (const auto& g : s.runs) {
    std::snprintf(line, sizeof line, "%-*s %3lld %10s %9s %23s", width, g.name.c_str(), static_cast<long long>(g.stats.n),
                  fmt(g.stats.mean, dp).c_str(), fmt(g.stats.sd, dp).c_str(),
                  ("[" + fmt(g.stats.lo, dp) + ", " + fmt(g.stats.hi, dp) + "]").c_str());
    os << line;
    if (g.paired) {
      const auto& p = *g.paired;
      os << "   " << (p.meanDiff >= 0 ? "+" : "") << fmt(p.meanDiff, dp) << " [" << fmt(p.lo, dp) << ", " << fmt(p.hi, dp)
         << "] " << p.wins << "/" << p.n;
    } else if (paired) {
      os << "   (baseline)";
    }
    os << "\n";
  }
  return os.str();
}

std::string summaryJson(const ExperimentSummary& s) {
  auto num = [](double v) { return std::isnan(v) ? nlohmann::json(nullptr) : nlohmann::json(v); };
  nlohmann::json runs = nlohmann::json::array();
  for (const auto& g : s.runs) {
    nlohmann::json r = {{"name", g.name},     {"method", g.method},
                        {"n", g.stats.n},     {"mean", num(g.stats.mean)},
                        {"sd", num(g.stats.sd)}, {"ci95", {num(g.stats.lo), num(g.stats.hi)}},
                        {"values", g.values}, {"seeds", g.seeds},
                        {"run_ids", g.runIds}};
    if (g.paired)
      r["paired"] = {{"baseline", g.paired->baseline},
                     {"n", g.paired->n},
                     {"mean_diff", num(g.paired->meanDiff)},
                     {"ci95", {num(g.paired->lo), num(g.paired->hi)}},
                     {"wins", g.paired->wins}};
    runs.push_back(r);
  }
  nlohmann::json j = {{"experiment", s.experiment}, {"metric", s.metric}, {"higher_is_better", s.higherIsBetter}, {"runs", runs}};
  return j.dump(2);
}

CurveBand curveAcrossSeeds(const std::vector<std::vector<std::pair<double, double>>>& perSeed) {
  std::map<double, std::vector<double>> byStep;
  for (const auto& curve : perSeed)
    for (const auto& [x, y] : curve) byStep[x].push_back(y);
  CurveBand b;
  for (const auto& [x, ys] : byStep) {
    const SampleStats s = sampleStats(ys);
    b.steps.push_back(x);
    b.mean.push_back(s.mean);
    b.lo.push_back(s.n >= 2 ? s.lo : s.mean);
    b.hi.push_back(s.n >= 2 ? s.hi : s.mean);
    b.n.push_back(s.n);
  }
  return b;
}

}  // namespace upcycle
