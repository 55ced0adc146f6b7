#pragma once
// Which BLAS kernels the process runs, and a start-up fix for OpenBLAS on CPUs it does not know.
// Torch-free: OpenBLAS is looked up with dlsym, so this works (as a no-op) without it.
//
// Debian 12's OpenBLAS 0.3.21 picks its kernels from the CPU model when the library loads. It does not
// know recent Xeons (e.g. family 6 model 207, our dev VM) and falls back to its generic "Prescott"
// kernels: float32 GEMM at 60 GFLOP/s instead of 320 on 2 AVX-512 cores. Its choice can be overridden
// only through OPENBLAS_CORETYPE, read at load time, before main().
#include <string>

namespace upcycle {

struct BlasKernels {
  std::string library;   // "OpenBLAS 0.3.21 DYNAMIC_ARCH ..." (openblas_get_config), or "" if not OpenBLAS
  std::string core;      // the kernels in use, e.g. "SkylakeX", or "" if not OpenBLAS
  std::string best;      // the best kernels this CPU supports, e.g. "SkylakeX"; "" if not x86-64
  std::string forced;    // OPENBLAS_CORETYPE as the user set it, or ""
  bool selected = false; // selectBlasKernels chose `core` (OpenBLAS's own pick was weaker)
};

BlasKernels blasKernels();

// True when OpenBLAS core `detected` (any case) uses narrower vector units than `cpuBest`, the best this
// CPU supports: "SkylakeX" (AVX-512 F/CD/BW/DQ/VL), "Haswell" (AVX2 + FMA) or "" (nothing to pick).
bool blasCoreIsWeaker(const std::string& detected, const std::string& cpuBest);

// Call first thing in main(). When OpenBLAS runs weaker kernels than the CPU supports and the user
// has not set OPENBLAS_CORETYPE, sets it to the best supported core and re-executes the program with
// the same arguments (once; /proc/self/exe). Returns normally in every other case, including when the
// re-execution fails. Set OPENBLAS_CORETYPE yourself to choose other kernels.
void selectBlasKernels(char** argv);

}  // namespace upcycle
