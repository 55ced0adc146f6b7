#include "core/blas_kernels.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace upcycle {
namespace {

using NameFn = char* (*)();

// Marks OPENBLAS_CORETYPE as set by selectBlasKernels (for this process and its children), not the user.
constexpr const char* kSelectedVar = "UPCYCLE_BLAS_SELECTED";

NameFn openblasFn(const char* name) { return reinterpret_cast<NameFn>(dlsym(RTLD_DEFAULT, name)); }

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string cpuBestCore() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  // libgcc's checks include the OS enabling the vector state (XCR0), not just the CPUID bits.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
#endif
  return "";
}

}  // namespace

bool blasCoreIsWeaker(const std::string& detected, const std::string& cpuBest) {
  if (cpuBest.empty() || detected.empty()) return false;
  const std::string d = lower(detected);
  // OpenBLAS 0.3.x x86-64 cores with AVX-512 GEMM kernels, and those with AVX2/FMA ones (Zen included).
  static const char* avx512[] = {"skylakex", "cooperlake", "sapphirerapids"};
  static const char* avx2[] = {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"};
  auto in = [&d](const char* const* b, const char* const* e) { return std::find(b, e, d) != e; };
  if (cpuBest == "SkylakeX") return !in(std::begin(avx512), std::end(avx512));
  if (cpuBest == "Haswell") return !in(std::begin(avx2), std::end(avx2));
  return false;
}

BlasKernels blasKernels() {
  BlasKernels k;
  if (NameFn config = openblasFn("openblas_get_config")) k.library = config();
  if (NameFn core = openblasFn("openblas_get_corename")) k.core = core();
  k.best = cpuBestCore();
  const char* forced = std::getenv("OPENBLAS_CORETYPE");
  const char* ours = std::getenv(kSelectedVar);
  k.selected = forced && ours && std::string(forced) == ours;
  if (forced && !k.selected) k.forced = forced;
  return k;
}

void selectBlasKernels(char** argv) {
  const BlasKernels k = blasKernels();
  // Once only: after the re-execution (k.selected), OpenBLAS may still run weaker kernels than asked
  // for (a build without DYNAMIC_ARCH, or its own AVX-512 check saying no); another exec would loop.
  if (k.core.empty() || k.selected || !k.forced.empty() || !blasCoreIsWeaker(k.core, k.best)) return;
  if (setenv("OPENBLAS_CORETYPE", k.best.c_str(), 1) != 0 || setenv(kSelectedVar, k.best.c_str(), 1) != 0) return;
  execv("/proc/self/exe", argv);
  unsetenv("OPENBLAS_CORETYPE");  // exec failed (no /proc?): carry on with the kernels we have
  unsetenv(kSelectedVar);
}

}  // namespace upcycle
