#include "analysis/gram.h"

#include <algorithm>
#include <cstring>
#include <thread>
#include <vector>

namespace upcycle {
namespace detail {

// Loads 8 row values as float32: float rows as they are, bfloat16 rows widened (the upper 16 bits of
// a float32, so exact).
typedef float v8f __attribute__((vector_size(32)));

// (Out-parameters: returning a 32-byte vector from a function without AVX would change its ABI.)
inline __attribute__((always_inline)) void load8(const float* p, v8f& x) { std::memcpy(&x, p, sizeof x); }
inline __attribute__((always_inline)) void load8(const uint16_t* p, v8f& x) {
  typedef uint16_t v8u16 __attribute__((vector_size(16)));
  typedef uint32_t v8u32 __attribute__((vector_size(32)));
  v8u16 h;
  std::memcpy(&h, p, sizeof h);
  const v8u32 w = __builtin_convertvector(h, v8u32) << 16;
  std::memcpy(&x, &w, sizeof x);
}
inline __attribute__((always_inline)) float load1(const float* p) { return *p; }
inline __attribute__((always_inline)) float load1(const uint16_t* p) {
  const uint32_t w = static_cast<uint32_t>(*p) << 16;
  float x;
  std::memcpy(&x, &w, sizeof x);
  return x;
}

// out[i][j] = sum_k (a_i[k] - r[k]) (b_j[k] - r[k]) for a 4 x 4 block of rows, k < c.
// Inlined whole into each target clone below: vector types must not cross a call between
// differently targeted clones.
template <typename T>
inline __attribute__((always_inline)) void gramBlock4x4Body(const T* const* a, const T* const* b, const float* ref,
                                                            int64_t c, double* out) {
  typedef double v8d __attribute__((vector_size(64)));
  v8d acc[16];
  for (auto& v : acc) v = v8d{0, 0, 0, 0, 0, 0, 0, 0};
  int64_t k = 0;
  for (; k + 8 <= c; k += 8) {
    v8f r = {0, 0, 0, 0, 0, 0, 0, 0};
    if (ref) load8(ref + k, r);
    v8d va[4], vb[4];
    for (int i = 0; i < 4; ++i) {
      v8f x, y;
      load8(a[i] + k, x);
      load8(b[i] + k, y);
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
        s += static_cast<double>(load1(a[i] + t) - rt) * static_cast<double>(load1(b[j] + t) - rt);
      }
      out[i * 4 + j] = s;
    }
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void gramBlock4x4(const float* const* a,
                                                                               const float* const* b,
                                                                               const float* ref, int64_t c,
                                                                               double* out) {
  gramBlock4x4Body(a, b, ref, c, out);
}

__attribute__((target_clones("avx512f", "avx2", "default"))) void gramBlock4x4(const uint16_t* const* a,
                                                                               const uint16_t* const* b,
                                                                               const float* ref, int64_t c,
                                                                               double* out) {
  gramBlock4x4Body(a, b, ref, c, out);
}

template <typename T>
void accumulateGramRows(const T* const* rows, int64_t n, const float* ref, int64_t c, double* g, int threads) {
  if (n <= 0 || c <= 0) return;
  constexpr int64_t kTile = 4096;       // columns per tile: 4 rows x 16 KB stay in L1/L2 across blocks
  constexpr int64_t kTilesPerGroup = 8;  // fixed groups, summed in order: no dependence on threads
  const int64_t nb = (n + 3) / 4, n4 = nb * 4;
  std::vector<T> zeros;  // padding rows (their sums are discarded)
  std::vector<const T*> r(static_cast<size_t>(n4));
  for (int64_t i = 0; i < n4; ++i) {
    if (i < n) {
      r[i] = rows[i];
    } else {
      if (zeros.empty()) zeros.assign(static_cast<size_t>(c), T{0});
      r[i] = zeros.data();
    }
  }
  const int64_t tiles = (c + kTile - 1) / kTile, groups = (tiles + kTilesPerGroup - 1) / kTilesPerGroup;
  std::vector<double> partial(static_cast<size_t>(groups * n4 * n4), 0.0);
  auto work = [&](int64_t g0, int64_t g1) {
    double block[16];
    const T* pa[4];
    const T* pb[4];
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
            gramBlock4x4(pa, pb, ref ? ref + off : nullptr, len, block);
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

}  // namespace detail

void accumulateGram(const float* const* rows, int64_t n, const float* ref, int64_t c, double* g, int threads) {
  detail::accumulateGramRows(rows, n, ref, c, g, threads);
}

void accumulateGramBf16(const uint16_t* const* rows, int64_t n, const float* ref, int64_t c, double* g, int threads) {
  detail::accumulateGramRows(rows, n, ref, c, g, threads);
}

}  // namespace upcycle
