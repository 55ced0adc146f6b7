#pragma once
// Timing for the benchmarks: warm-up calls, then the median wall time of `iters` calls, with a CUDA
// synchronize before each clock read when the work runs on the GPU. Internal (includes torch).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <vector>

namespace upcycle {

template <typename Fn>
double medianSeconds(int64_t warmup, int64_t iters, const torch::Device& dev, Fn&& fn) {
  auto sync = [&] {
    if (dev.is_cuda()) torch::cuda::synchronize();
  };
  for (int64_t i = 0; i < warmup; ++i) fn();
  sync();
  std::vector<double> t;
  for (int64_t i = 0; i < iters; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    sync();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace upcycle
