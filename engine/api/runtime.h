#pragma once
// Process-wide runtime settings of the engine. Torch-free header.
// Thread-safety: call configureRuntime() once at start-up, before any engine work.
#include <string>

namespace upcycle {

struct RuntimeInfo {
  std::string torchVersion;
  int intraOpThreads = 1;
  bool cudaAvailable = false;
  std::string blas;  // e.g. "OpenBLAS 0.3.21, SkylakeX kernels", or "unknown (not OpenBLAS)"
};

// Sets LibTorch's intra-op thread count explicitly (OpenMP may report 1 otherwise), and makes glibc
// keep freed memory for reuse instead of returning large blocks to the kernel (see runtime.cpp).
// threads <= 0 means one per hardware core.
void configureRuntime(int threads = 0);
RuntimeInfo runtimeInfo();

}  // namespace upcycle
