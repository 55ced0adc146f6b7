// Configure-time helper (tests/CMakeLists.txt): prints the OpenBLAS core this CPU supports best.
#include <cstdio>

#include "core/blas_kernels.h"

int main() {
  std::printf("%s", upcycle::blasKernels().best.c_str());
  return 0;
}
