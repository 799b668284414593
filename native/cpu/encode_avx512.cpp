// AVX-512 encode kernel: a 14 x 32 register tile (28 zmm accumulators + 2 B vectors; the A
// value is an embedded broadcast operand of the FMA), i.e. 28 FMAs per 2 vector loads. The
// epilogue runs on the registers: bias add, one compare per 16 lanes against
// max(admission, row threshold), and only a row with a passing lane leaves registers.
#include <immintrin.h>

#include "encode_kernels.h"

// GCC 12 warns falsely about an uninitialized temporary inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace saekit::cpu {

#define SAEKIT_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma")))

namespace {

template <int MR>
SAEKIT_AVX512 inline void tile(const float* __restrict a, const float* __restrict b, int64_t d_in,
                               const float* bias, const float* admit, int row0, int rows, int64_t base,
                               TileSink& sink) {
  __m512 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  for (int64_t i = 0; i < d_in; ++i) {
    const __m512 b0 = _mm512_load_ps(b + i * kPanel);
    const __m512 b1 = _mm512_load_ps(b + i * kPanel + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[i * MR + r]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
    }
  }
  const __m512 bias0 = _mm512_loadu_ps(bias), bias1 = _mm512_loadu_ps(bias + 16);
  const __m512 adm0 = _mm512_loadu_ps(admit), adm1 = _mm512_loadu_ps(admit + 16);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    if (r >= rows) break;
    const __m512 v0 = _mm512_add_ps(c0[r], bias0);
    const __m512 v1 = _mm512_add_ps(c1[r], bias1);
    const __m512 thr = _mm512_set1_ps(sink.row_threshold[row0 + r]);
    const __mmask16 m0 = _mm512_cmp_ps_mask(v0, _mm512_max_ps(adm0, thr), _CMP_GT_OQ);
    const __mmask16 m1 = _mm512_cmp_ps_mask(v1, _mm512_max_ps(adm1, thr), _CMP_GT_OQ);
    const uint32_t mask = static_cast<uint32_t>(m0) | (static_cast<uint32_t>(m1) << 16);
    if (mask != 0) {
      alignas(64) float v[kPanel];
      _mm512_store_ps(v, v0);
      _mm512_store_ps(v + 16, v1);
      sink.push(row0 + r, mask, v, base);
    }
  }
}

}  // namespace

SAEKIT_AVX512 void encode_block_avx512(const EncodeBlockArgs& args) {
  constexpr int MR = kMrAvx512;
  const int64_t d_in = args.d_in;
  const int n_micro = (args.rows + MR - 1) / MR;
  for (int64_t p = 0; p < args.n_panels; ++p) {
    const float* b = args.b_packed + p * d_in * kPanel;
    for (int m = 0; m < n_micro; ++m) {
      const float* a = args.a_packed + static_cast<int64_t>(m) * d_in * MR;
      const int rows = args.rows - m * MR < MR ? args.rows - m * MR : MR;
      tile<MR>(a, b, d_in, args.bias + p * kPanel, args.admit + p * kPanel, m * MR, rows, p * kPanel, *args.sink);
    }
  }
}

}  // namespace saekit::cpu
