// sgemm for the trainer (see gemm.h). The AVX-512 path holds an 8 x 32 tile of C in 16 zmm
// accumulators and walks k: per step two B loads, eight broadcasts of A, sixteen FMAs. Work is
// split into 64-row x 128-column tasks; inside one, each 32-column strip of B (K x 128 bytes)
// is reused from L2 by the task's eight row tiles. Other ISAs take a plain loop the compiler
// vectorizes.
#include "gemm.h"

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "../thread_pool.h"
#include "isa.h"

namespace saekit::cpu {
namespace {

constexpr int kMr = 8;
constexpr int kNr = 32;
constexpr int64_t kTaskRows = 64;
constexpr int64_t kTaskCols = 128;
constexpr int64_t kKc = 256;

inline float a_at(const float* A, int64_t lda, bool trans_a, int64_t i, int64_t k) {
  return trans_a ? A[k * lda + i] : A[i * lda + k];
}

// Accumulators are named variables, not arrays: GCC kept an array of __m512 on the stack and
// stored it every k step (a quarter of the peak).
#define SAEKIT_GEMM_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)

template <bool TA>
__attribute__((target("avx512f"))) void tile8_avx512(int64_t K, const float* A, int64_t lda, int64_t i0, const float* B,
                                                     int64_t ldb, int64_t j0, int ncols, float* C, int64_t ldc,
                                                     bool accumulate) {
#define DECL(r) __m512 c0_##r = _mm512_setzero_ps(), c1_##r = _mm512_setzero_ps();
  SAEKIT_GEMM_ROWS(DECL)
#undef DECL
  const __mmask16 m0 = ncols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << ncols) - 1);
  const __mmask16 m1 = ncols >= 32 ? 0xFFFF : ncols <= 16 ? 0 : static_cast<__mmask16>((1u << (ncols - 16)) - 1);
  const float* b = B + j0;
  const float* a = TA ? A + i0 : A + i0 * lda;
  for (int64_t k = 0; k < K; ++k, b += ldb) {
    const __m512 b0 = _mm512_maskz_loadu_ps(m0, b);
    const __m512 b1 = _mm512_maskz_loadu_ps(m1, b + 16);
#define STEP(r)                                                                  \
  {                                                                              \
    const __m512 av = _mm512_set1_ps(TA ? a[k * lda + (r)] : a[(r) * lda + k]); \
    c0_##r = _mm512_fmadd_ps(av, b0, c0_##r);                                    \
    c1_##r = _mm512_fmadd_ps(av, b1, c1_##r);                                    \
  }
    SAEKIT_GEMM_ROWS(STEP)
#undef STEP
  }
#define STORE(r)                                                               \
  {                                                                            \
    float* c = C + (i0 + (r)) * ldc + j0;                                      \
    if (accumulate) {                                                          \
      c0_##r = _mm512_add_ps(c0_##r, _mm512_maskz_loadu_ps(m0, c));            \
      c1_##r = _mm512_add_ps(c1_##r, _mm512_maskz_loadu_ps(m1, c + 16));       \
    }                                                                          \
    _mm512_mask_storeu_ps(c, m0, c0_##r);                                      \
    _mm512_mask_storeu_ps(c + 16, m1, c1_##r);                                 \
  }
  SAEKIT_GEMM_ROWS(STORE)
#undef STORE
}

// One row of C (the tail of a task's rows).
__attribute__((target("avx512f"))) void tile1_avx512(int64_t K, const float* A, int64_t lda, bool trans_a, int64_t i,
                                                     const float* B, int64_t ldb, int64_t j0, int ncols, float* C,
                                                     int64_t ldc, bool accumulate) {
  __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
  const __mmask16 m0 = ncols >= 16 ? 0xFFFF : static_cast<__mmask16>((1u << ncols) - 1);
  const __mmask16 m1 = ncols >= 32 ? 0xFFFF : ncols <= 16 ? 0 : static_cast<__mmask16>((1u << (ncols - 16)) - 1);
  const float* b = B + j0;
  for (int64_t k = 0; k < K; ++k, b += ldb) {
    const __m512 av = _mm512_set1_ps(a_at(A, lda, trans_a, i, k));
    c0 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m0, b), c0);
    c1 = _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m1, b + 16), c1);
  }
  float* c = C + i * ldc + j0;
  if (accumulate) {
    c0 = _mm512_add_ps(c0, _mm512_maskz_loadu_ps(m0, c));
    c1 = _mm512_add_ps(c1, _mm512_maskz_loadu_ps(m1, c + 16));
  }
  _mm512_mask_storeu_ps(c, m0, c0);
  _mm512_mask_storeu_ps(c + 16, m1, c1);
}

// k is cut into chunks of kKc so a 32-column strip of B (kKc x 128 bytes = 32 KiB) stays in
// L1 while the task's row tiles pass over it; C accumulates across chunks.
__attribute__((target("avx512f"))) void task_avx512(int64_t i0, int64_t i1, int64_t j0, int64_t j1, int64_t K,
                                                    const float* A, int64_t lda, bool trans_a, const float* B,
                                                    int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  for (int64_t k0 = 0; k0 < std::max<int64_t>(K, 1); k0 += kKc) {
    const int64_t kc = std::min(kKc, K - k0);
    const bool acc = accumulate || k0 > 0;
    const float* Ak = trans_a ? A + k0 * lda : A + k0;
    const float* Bk = B + k0 * ldb;
    for (int64_t j = j0; j < j1; j += kNr) {
      const int ncols = static_cast<int>(std::min<int64_t>(kNr, j1 - j));
      int64_t i = i0;
      for (; i + kMr <= i1; i += kMr) {
        if (trans_a) tile8_avx512<true>(kc, Ak, lda, i, Bk, ldb, j, ncols, C, ldc, acc);
        else tile8_avx512<false>(kc, Ak, lda, i, Bk, ldb, j, ncols, C, ldc, acc);
      }
      for (; i < i1; ++i) tile1_avx512(kc, Ak, lda, trans_a, i, Bk, ldb, j, ncols, C, ldc, acc);
    }
  }
}

// Any ISA: one C row at a time, the j loop vectorized by the compiler (clones per ISA).
__attribute__((target_clones("avx2,fma", "default"))) void task_generic(int64_t i0, int64_t i1, int64_t j0,
                                                                       int64_t j1, int64_t K, const float* A,
                                                                       int64_t lda, bool trans_a, const float* B,
                                                                       int64_t ldb, float* C, int64_t ldc,
                                                                       bool accumulate) {
  for (int64_t i = i0; i < i1; ++i) {
    float* c = C + i * ldc;
    if (!accumulate) std::fill(c + j0, c + j1, 0.0f);
    for (int64_t k = 0; k < K; ++k) {
      const float a = a_at(A, lda, trans_a, i, k);
      const float* b = B + k * ldb;
      for (int64_t j = j0; j < j1; ++j) c[j] += a * b[j];
    }
  }
}

}  // namespace

void sgemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, bool trans_a, const float* B, int64_t ldb,
           float* C, int64_t ldc, bool accumulate) {
  if (M <= 0 || N <= 0) return;
  const bool avx512 = current_isa() == Isa::Avx512;
  const int64_t row_tasks = (M + kTaskRows - 1) / kTaskRows;
  const int64_t col_tasks = (N + kTaskCols - 1) / kTaskCols;
  parallel_for(row_tasks * col_tasks, [&](int64_t t, int) {
    const int64_t i0 = (t / col_tasks) * kTaskRows, j0 = (t % col_tasks) * kTaskCols;
    const int64_t i1 = std::min(M, i0 + kTaskRows), j1 = std::min(N, j0 + kTaskCols);
    if (avx512) task_avx512(i0, i1, j0, j1, K, A, lda, trans_a, B, ldb, C, ldc, accumulate);
    else task_generic(i0, i1, j0, j1, K, A, lda, trans_a, B, ldb, C, ldc, accumulate);
  });
}

}  // namespace saekit::cpu
