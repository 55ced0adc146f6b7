#include "analysis/gram.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

namespace upcycle {
namespace detail {

// out[i][j] = sum_k (a_i[k] - r[k]) (b_j[k] - r[k]) for a 4 x 4 block of rows, k < c.
// Everything in one function: vector types must not cross a call between differently targeted clones.
__attribute__((target_clones("avx512f", "avx2", "default"))) void gramBlock4x4(const float* const* a,
                                                                               const float* const* b,
                                                                               const float* ref, int64_t c,
                                                                               double* out) {
  typedef float v8f __attribute__((vector_size(32)));
  typedef double v8d __attribute__((vector_size(64)));
  v8d acc[16];
  for (auto& v : acc) v = v8d{0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= c; k += 8) {
    v8f r = {0, 0, 0, 0, 0, 0, 0, 0};
    if (ref) std::memcpy(&r, ref + k, sizeof r);
    v8d va[4], vb[4];
    for (int i = 0; i < 4; ++i) {
      v8f x, y;
      std::memcpy(&x, a[i] + k, sizeof x);
      std::memcpy(&y, b[i] + k, sizeof y);
      va[i] = __builtin_convertvector(x - r, v8d);
      vb[i] = __builtin_convertvector(y - r, v8d);
    }
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) acc[i * 4 + j] += va[i] * vb[j];
  }
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 4; ++j) {
      double s = 0;
      for (int l = 0; l < 8; ++l) s += acc[i * 4 + j][l];
      for (int64_t t = k; t < c; ++t) {
        const float rt = ref ? ref[t] : 0.0f;
        s += static_cast<double>(a[i][t] - rt) * static_cast<double>(b[j][t] - rt);
      }
      out[i * 4 + j] = s;
    }
}

}  // namespace detail

void accumulateGram(const float* const* rows, int64_t n, const float* ref, int64_t c, double* g, int threads) {
  if (n <= 0 || c <= 0) return;
  constexpr int64_t kTile = 4096;       // columns per tile: 4 rows x 16 KB stay in L1/L2 across blocks
  constexpr int64_t kTilesPerGroup = 8;  // fixed groups, summed in order: no dependence on threads
  const int64_t nb = (n + 3) / 4, n4 = nb * 4;
  std::vector<float> zeros;  // padding rows (their sums are discarded)
  std::vector<const float*> r(static_cast<size_t>(n4));
  for (int64_t i = 0; i < n4; ++i) {
    if (i < n) {
      r[i] = rows[i];
    } else {
      if (zeros.empty()) zeros.assign(static_cast<size_t>(c), 0.0f);
      r[i] = zeros.data();
    }
  }
  const int64_t tiles = (c + kTile - 1) / kTile, groups = (tiles + kTilesPerGroup - 1) / kTilesPerGroup;
  std::vector<double> partial(static_cast<size_t>(groups * n4 * n4), 0.0);
  auto work = [&](int64_t g0, int64_t g1) {
    double block[16];
    const float* pa[4];
    const float* pb[4];
    for (int64_t grp = g0; grp < g1; ++grp) {
      double* acc = partial.data() + grp * n4 * n4;
      const int64_t t1 = std::min(tiles, (grp + 1) * kTilesPerGroup);
      for (int64_t t = grp * kTilesPerGroup; t < t1; ++t) {
        const int64_t off = t * kTile, len = std::min(kTile, c - off);
        for (int64_t bi = 0; bi < nb; ++bi)
          for (int64_t bj = bi; bj < nb; ++bj) {
            for (int q = 0; q < 4; ++q) {
              pa[q] = r[bi * 4 + q] + off;
              pb[q] = r[bj * 4 + q] + off;
            }
            detail::gramBlock4x4(pa, pb, ref ? ref + off : nullptr, len, block);
            for (int i = 0; i < 4; ++i)
              for (int j = 0; j < 4; ++j) acc[(bi * 4 + i) * n4 + bj * 4 + j] += block[i * 4 + j];
          }
      }
    }
  };
  // Plain threads: at::parallel_for is inline OpenMP, which this file would have to be built with.
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, groups));
  std::vector<std::thread> pool;
  for (int64_t w = 1; w < workers; ++w)
    pool.emplace_back(work, groups * w / workers, groups * (w + 1) / workers);
  work(0, groups / workers);
  for (auto& t : pool) t.join();
  for (int64_t grp = 0; grp < groups; ++grp) {
    const double* acc = partial.data() + grp * n4 * n4;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i; j < n; ++j) {
        const double v = acc[i * n4 + j];  // upper triangle of blocks holds every pair i <= j
        g[i * n + j] += v;
        if (j != i) g[j * n + i] += v;
      }
  }
}

}  // namespace upcycle
