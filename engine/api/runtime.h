#pragma once
// Process-wide runtime settings of the engine. Torch-free header.
// Thread-safety: call configureRuntime() once at start-up, before any engine work.
#include <string>

namespace upcycle {

struct RuntimeInfo {
  std::string torchVersion;
  int intraOpThreads = 1;
  bool cudaAvailable = false;
  std::string cpuBf16;     // the CPU's bf16 matmul support: "AMX-BF16 and AVX-512 BF16", ..., or "none"
  std::string precision;   // what precision "auto" means here for the CPU: "bf16" or "fp32"
  std::string blas;  // e.g. "OpenBLAS 0.3.21, SkylakeX kernels", or "unknown (not OpenBLAS)"
};

// Sets LibTorch's intra-op thread count explicitly (OpenMP may report 1 otherwise), and makes glibc
// keep freed memory for reuse instead of returning large blocks to the kernel (see runtime.cpp).
// threads <= 0 means one per hardware core.
void configureRuntime(int threads = 0);
RuntimeInfo runtimeInfo();

// Mixed precision (TrainOptions, EvalOptions, experiment files: `precision`).
//   fp32: everything in float32.
//   bf16: matmuls in bfloat16 under autocast (on the CPU as on CUDA); master weights, AdamW state,
//         RMSNorm statistics, softmaxes, the router and the losses stay float32.
//   auto: bf16 on CUDA, and on CPUs whose matmuls are faster in bf16 (AVX-512 BF16 or AMX-BF16 in
//         /proc/cpuinfo's flags: oneDNN runs bf16 GEMMs there at 3-5x the float32 rate); fp32 elsewhere.
// UPCYCLE_CPU_BF16=0 or 1 overrides the CPU detection (the tests pin it to 0 so that "auto" means the
// same on every CI machine, and set it to test both answers).
// Returns "fp32" or "bf16"; throws UserError naming `field` for anything else.
std::string resolvePrecision(const std::string& precision, bool cuda, const std::string& field = "precision");
// Whether this CPU has bf16 matmul instructions (after the override), and which.
bool cpuHasFastBf16();
std::string cpuBf16Features();

}  // namespace upcycle
