// `upcycle bench allreduce`: c10d all-reduce latency and bandwidth across the running group.
#include <torch/torch.h>

#include <chrono>
#include <nlohmann/json.hpp>

#include "api/bench.h"
#include "bench/timing.h"
#include "core/error.h"
#include "dist/process_group.h"

namespace upcycle {

AllreduceBenchResult benchAllreduce(const AllreduceBenchOptions& o) {
  DistGroup* g = DistGroup::current();
  UPCYCLE_CHECK(
      g, "bench allreduce needs at least 2 data-parallel processes (--nproc 2, or torchrun)");
  UPCYCLE_CHECK(o.iterations >= 1 && o.warmup >= 0, "iterations must be at least 1");
  AllreduceBenchResult r;
  r.world = g->world();
  r.backend = g->info().backend;
  for (double mb : o.sizesMb) {
    UPCYCLE_CHECK(mb > 0 && mb <= 4096, "sizes must be in (0, 4096] MB, got ", mb);
    const int64_t n = std::max<int64_t>(1, static_cast<int64_t>(mb * 1048576.0 / 4));
    auto t = torch::ones({n}, torch::TensorOptions().device(g->device()));
    std::vector<double> secs;
    for (int64_t i = 0; i < o.warmup + o.iterations; ++i) {
      g->barrier("the benchmark's barrier");
      const auto t0 = std::chrono::steady_clock::now();
      g->allreduceSum(t, "the benchmark's all-reduce");
      if (t.is_cuda()) torch::cuda::synchronize();
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      if (i >= o.warmup) secs.push_back(s);
    }
    AllreduceBenchRow row;
    row.mb = static_cast<double>(n) * 4 / 1048576.0;
    row.seconds = median(secs);
    row.algoGbPerS = static_cast<double>(n) * 4 / row.seconds / 1e9;
    row.busGbPerS = row.algoGbPerS * 2.0 * (r.world - 1) / r.world;
    r.rows.push_back(row);
  }
  return r;
}

std::string allreduceBenchJson(const AllreduceBenchResult& r) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& x : r.rows)
    rows.push_back({{"mb", x.mb},
                    {"seconds", x.seconds},
                    {"algo_gb_per_s", x.algoGbPerS},
                    {"bus_gb_per_s", x.busGbPerS}});
  return nlohmann::json{{"world", r.world}, {"backend", r.backend}, {"rows", rows}}.dump(2);
}

}  // namespace upcycle
