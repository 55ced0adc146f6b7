// The engine tests' main: OpenBLAS's best kernels for this CPU (see core/blas_kernels.h), then GoogleTest.
#include <gtest/gtest.h>

#include "core/blas_kernels.h"

int main(int argc, char** argv) {
  upcycle::selectBlasKernels(argv);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
