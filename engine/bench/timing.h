#pragma once
// Timing for the benchmarks: warm-up calls, then wall times of measured calls, with a CUDA synchronize
// before each clock read when the work runs on the GPU. Internal (includes torch).
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <vector>

namespace upcycle {

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

// Seconds per call of each fn, measured in rounds that call every fn once, in order, so that all of
// them see the same machine: on a shared VM the clock speed drifts by 30% within a minute, and
// back-to-back measurements of A then B compare two different machines. samples[f][round].
inline std::vector<std::vector<double>> interleavedSeconds(int64_t warmup, int64_t rounds, const torch::Device& dev,
                                                           const std::vector<std::function<void()>>& fns) {
  auto sync = [&] {
    if (dev.is_cuda()) torch::cuda::synchronize();
  };
  for (int64_t i = 0; i < warmup; ++i)
    for (const auto& fn : fns) fn();
  sync();
  std::vector<std::vector<double>> t(fns.size());
  for (int64_t i = 0; i < rounds; ++i) {
    for (size_t f = 0; f < fns.size(); ++f) {
      const auto t0 = std::chrono::steady_clock::now();
      fns[f]();
      sync();
      t[f].push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
  }
  return t;
}

template <typename Fn>
double medianSeconds(int64_t warmup, int64_t iters, const torch::Device& dev, Fn&& fn) {
  return median(interleavedSeconds(warmup, iters, dev, {std::function<void()>(std::forward<Fn>(fn))})[0]);
}

}  // namespace upcycle
