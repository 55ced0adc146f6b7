// The engine tests' main: OpenBLAS's best kernels for this CPU (see core/blas_kernels.h), fp32 for
// `precision: auto`, then GoogleTest.
#include <gtest/gtest.h>

#include <cstdlib>

#include "core/blas_kernels.h"

int main(int argc, char** argv) {
  upcycle::selectBlasKernels(argv);
  // `precision: auto` means bf16 on CPUs with AVX-512 BF16 or AMX; the tests pin it to fp32 so that
  // every CI machine computes the same numbers (and the processes they start inherit it). The bf16
  // tests ask for bf16 explicitly, and the tests of `auto` set this variable themselves.
  ::setenv("UPCYCLE_CPU_BF16", "0", /*overwrite=*/0);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
