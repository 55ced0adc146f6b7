#include "api/runtime.h"

#include "api/distributed.h"

#include <torch/torch.h>

#include <climits>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <thread>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "core/blas_kernels.h"
#include "core/error.h"
#include "model/model_io.h"

namespace upcycle {

void configureRuntime(int threads) {
  UPCYCLE_CHECK(threads <= 1024, "threads must be at most 1024, got ", threads);
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

std::string cpuBf16Features() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    bool amx = false, avx512 = false;
    for (std::string w; words >> w;) {
      amx = amx || w == "amx_bf16";
      avx512 = avx512 || w == "avx512_bf16";
    }
    if (amx && avx512) return "AMX-BF16 and AVX-512 BF16";
    if (amx) return "AMX-BF16";
    if (avx512) return "AVX-512 BF16";
    return "none";
  }
  return "none";
}

bool cpuHasFastBf16() {
  if (const char* f = std::getenv("UPCYCLE_CPU_BF16"); f && *f) {
    const std::string v = f;
    UPCYCLE_CHECK(v == "0" || v == "1", "UPCYCLE_CPU_BF16 must be 0 or 1, got \"", v, "\"");
    return v == "1";
  }
  static const bool has = cpuBf16Features() != "none";
  return has;
}

std::string resolvePrecision(const std::string& precision, bool cuda, const std::string& field) {
  if (precision == "fp32" || precision == "float32") return "fp32";
  if (precision == "bf16" || precision == "bfloat16") return "bf16";
  UPCYCLE_CHECK(precision.empty() || precision == "auto", field, " must be auto, fp32 or bf16, got \"", precision, "\"");
  return cuda || cpuHasFastBf16() ? "bf16" : "fp32";
}

RuntimeInfo runtimeInfo() {
  RuntimeInfo r;
  r.cpuBf16 = cpuBf16Features();
  r.precision = resolvePrecision("auto", false);
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
