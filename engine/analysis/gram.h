#pragma once
// The Gram matrix of float32 or bfloat16 rows in float64, at memory speed. Torch-free header.
//
// The expert-similarity analysis needs G = X X^T for n = E rows of hundreds of millions of columns.
// As a GEMM that has M = N = E (8): OpenBLAS runs it at 7-10 GFLOP/s, far below both its peak and the
// memory bandwidth. This kernel streams the columns once per 4 x 4 block of rows, in float64 vector
// registers (AVX-512 or AVX2 chosen at run time, plain code otherwise), over column tiles spread on
// threads. Rows stored as bfloat16 are widened to float32 8 values at a time as they stream past (exact),
// so the analysis of a bf16 model never holds a float32 copy of a weight, and gives the same bits as
// the float32 kernel on the widened rows.
#include <cstdint>

namespace upcycle {

// g (n x n, row-major) += X X^T, where row i of X is rows[i][0..c) minus ref[0..c) when ref is not null.
// The difference is taken in float32 (as `x - ref` on float tensors), the products and sums in float64.
// Runs on `threads` threads; the result does not depend on their number.
void accumulateGram(const float* const* rows, int64_t n, const float* ref, int64_t c, double* g, int threads);
// The same for rows of bfloat16 bit patterns (the upper halves of float32 values); `ref` stays float32.
void accumulateGramBf16(const uint16_t* const* rows, int64_t n, const float* ref, int64_t c, double* g,
                        int threads);

}  // namespace upcycle
