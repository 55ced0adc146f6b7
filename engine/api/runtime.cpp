#include "api/runtime.h"

#include "api/distributed.h"

#include <torch/torch.h>

#include <climits>
#include <thread>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/blas_kernels.h"
#include "core/error.h"
#include "model/model_io.h"

namespace upcycle {

void configureRuntime(int threads) {
  if (threads <= 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(threads);
#if defined(__GLIBC__)
  // glibc serves blocks above its mmap threshold (at most 32 MB) with mmap and unmaps them when freed,
  // so every training step page-faulted its large activations and gradients in again: 160-290k faults
  // per MoE layer step at d 1024. Keep freed memory in the heap for the next step instead (peak RSS
  // is unchanged; memory is kept until the process ends).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
#endif
}

RuntimeInfo runtimeInfo() {
  RuntimeInfo r;
  r.torchVersion = TORCH_VERSION;
  r.intraOpThreads = at::get_num_threads();
  r.cudaAvailable = torch::cuda::is_available();
  const BlasKernels k = blasKernels();
  if (k.core.empty()) {
    r.blas = "unknown (not OpenBLAS)";
  } else {
    std::string lib = k.library.substr(0, k.library.find(' ', k.library.find(' ') + 1));  // "OpenBLAS 0.3.21"
    r.blas = lib + ", " + k.core + " kernels";
    if (!k.forced.empty()) r.blas += " (OPENBLAS_CORETYPE=" + k.forced + ")";
    if (k.selected) r.blas += " (selected at start-up: OpenBLAS's own pick for this CPU was weaker)";
  }
  return r;
}

torch::Device resolveDevice(const std::string& name) {
  // A data-parallel rank's "cuda" is its own GPU, cuda:LOCAL_RANK.
  const DistInfo dist = distInfo();
  const torch::Device cuda = dist.active ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(dist.localRank))
                                         : torch::Device(torch::kCUDA);
  if (name.empty() || name == "auto") return torch::cuda::is_available() ? cuda : torch::kCPU;
  if (name == "cpu") return torch::kCPU;
  if (name.rfind("cuda", 0) == 0) {
    UPCYCLE_CHECK(torch::cuda::is_available(), "device \"", name, "\" requested but CUDA is not available");
    return name == "cuda" ? cuda : torch::Device(name);
  }
  throw UserError("unknown device \"" + name + "\" (expected auto, cpu or cuda[:N])");
}

}  // namespace upcycle
