// OpenBLAS kernel selection (core/blas_kernels.h): the rule, and that this test process runs the best
// kernels its CPU supports (test_main.cpp calls selectBlasKernels, as every program's main does).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "core/blas_kernels.h"

using upcycle::blasCoreIsWeaker;

TEST(BlasKernels, WeakerRule) {
  // Debian 12's OpenBLAS falls back to Prescott on CPUs it does not know.
  EXPECT_TRUE(blasCoreIsWeaker("Prescott", "SkylakeX"));
  EXPECT_TRUE(blasCoreIsWeaker("Prescott", "Haswell"));
  EXPECT_TRUE(blasCoreIsWeaker("Sandybridge", "Haswell"));  // AVX without FMA
  EXPECT_TRUE(blasCoreIsWeaker("Haswell", "SkylakeX"));     // AVX2 on an AVX-512 CPU
  EXPECT_TRUE(blasCoreIsWeaker("Zen", "SkylakeX"));         // 0.3.21 calls Zen 4 "Zen"
  EXPECT_FALSE(blasCoreIsWeaker("SkylakeX", "SkylakeX"));
  EXPECT_FALSE(blasCoreIsWeaker("cooperlake", "SkylakeX"));  // case-insensitive
  EXPECT_FALSE(blasCoreIsWeaker("SapphireRapids", "SkylakeX"));
  EXPECT_FALSE(blasCoreIsWeaker("Haswell", "Haswell"));
  EXPECT_FALSE(blasCoreIsWeaker("Zen", "Haswell"));
  EXPECT_FALSE(blasCoreIsWeaker("SkylakeX", "Haswell"));
  EXPECT_FALSE(blasCoreIsWeaker("Prescott", ""));  // not x86-64 or no AVX2: nothing better to pick
  EXPECT_FALSE(blasCoreIsWeaker("", "SkylakeX"));  // not OpenBLAS
}

TEST(BlasKernels, ThisProcessRunsTheBestKernels) {
  torch::mm(torch::ones({2, 2}), torch::ones({2, 2}));  // LibTorch (and its BLAS) loaded and used
  const upcycle::BlasKernels k = upcycle::blasKernels();
  if (k.core.empty()) GTEST_SKIP() << "not OpenBLAS";
  if (!k.forced.empty()) GTEST_SKIP() << "OPENBLAS_CORETYPE=" << k.forced << " set by the user";
  EXPECT_FALSE(blasCoreIsWeaker(k.core, k.best)) << "OpenBLAS runs " << k.core << " kernels on a " << k.best << " CPU";
}
