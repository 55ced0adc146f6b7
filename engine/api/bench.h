#pragma once
// `upcycle bench moe`: one MoE layer, forward plus backward, the grouped path against the naive
// Hugging Face Mixtral algorithm (per expert: mask its tokens, compute, index_add), measured in the same
// run next to a float32 matmul peak. Torch-free header. Thread-safety: calling thread only.
#include <cstdint>
#include <string>

namespace upcycle {

struct MoeBenchOptions {
  int64_t dModel = 256, dFf = 688, experts = 8, topK = 2, tokens = 2048;
  std::string device = "cpu";
  int64_t warmup = 2, iterations = 10;
  uint64_t seed = 0;
};

struct MoeBenchResult {
  MoeBenchOptions options;
  int threads = 1;
  double groupedSeconds = 0, naiveSeconds = 0;  // median forward + backward
  double tokensPerS = 0, naiveTokensPerS = 0;
  double achievedGflops = 0, naiveGflops = 0;   // counted expert + router FLOPs (fwd + 2x bwd) / time
  double matmulPeakGflops = 0;                  // float32 matmul at the average expert GEMM shape
  double speedup = 0;                           // naive time / grouped time
};

MoeBenchResult benchMoe(const MoeBenchOptions& o);
std::string moeBenchJson(const MoeBenchResult& r);

}  // namespace upcycle
