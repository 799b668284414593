// Rescoring of screened candidates (screen.h) in the plain fp32 kernels' order: per pair one
// fma chain over d_in starting from 0, then + b_j. The AVX-512 and AVX2 encode kernels sum each
// lane exactly so (the d_in slices of encode_avx512.cpp park partial sums unchanged), so the
// rescored values are theirs bit for bit and a screened encode equals SAEKIT_SCREEN=0 exactly.
//
// One pair's chain is latency-bound (4 cycles per fma), so pairs run side by side: 16 lanes of
// a zmm, each lane its own (row, latent). Lane l needs x'[row_l][i] and w[latent_l][i] for each
// i: 16 consecutive i of 16 pairs are loaded as 16 rows and transposed in registers (64
// shuffles per 16 x 16 block), which beats 16-lane gathers here.
#include <immintrin.h>

#include "screen.h"

// GCC 12 warns falsely about an uninitialized temporary inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace saekit::cpu {

namespace {

#define SAEKIT_RESCORE512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma")))

// r[l][t] -> c[t][l] for a 16 x 16 block of floats (4 stages: ps unpack, pd unpack, two
// 128-bit chunk shuffles).
SAEKIT_RESCORE512 inline void transpose16(__m512 r[16]) {
  __m512 a[16], b[16];
  for (int k = 0; k < 8; ++k) {
    a[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
    a[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {
    const __m512d a0 = _mm512_castps_pd(a[4 * k]), a1 = _mm512_castps_pd(a[4 * k + 1]);
    const __m512d a2 = _mm512_castps_pd(a[4 * k + 2]), a3 = _mm512_castps_pd(a[4 * k + 3]);
    b[4 * k + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
    b[4 * k + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
    b[4 * k + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
    b[4 * k + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
  }
  // b[4k + c], 128-bit chunk q: column 4q + c of rows 4k..4k+3.
  for (int c = 0; c < 4; ++c) {
    const __m512 s0 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0x44), s1 = _mm512_shuffle_f32x4(b[c], b[4 + c], 0xEE);
    const __m512 s2 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0x44), s3 = _mm512_shuffle_f32x4(b[8 + c], b[12 + c], 0xEE);
    r[0 + c] = _mm512_shuffle_f32x4(s0, s2, 0x88);
    r[4 + c] = _mm512_shuffle_f32x4(s0, s2, 0xDD);
    r[8 + c] = _mm512_shuffle_f32x4(s1, s3, 0x88);
    r[12 + c] = _mm512_shuffle_f32x4(s1, s3, 0xDD);
  }
}

}  // namespace

SAEKIT_RESCORE512 void rescore_avx512(const float* xr, const float* wt, int64_t d, const ScreenPair* pairs, int64_t n,
                                      const float* bias, float* out) {
  for (int64_t g = 0; g < n; g += 16) {
    const int lanes = n - g < 16 ? static_cast<int>(n - g) : 16;
    const float* xp[16];
    const float* wp[16];
    for (int l = 0; l < 16; ++l) {
      const ScreenPair& p = pairs[g + (l < lanes ? l : 0)];  // idle lanes repeat pair 0
      xp[l] = xr + static_cast<int64_t>(p.row) * d;
      wp[l] = wt + static_cast<int64_t>(p.latent) * d;
    }
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i0 = 0; i0 < d; i0 += 16) {
      const int64_t rem = d - i0 < 16 ? d - i0 : 16;
      const __mmask16 m = rem == 16 ? 0xFFFF : static_cast<__mmask16>((1u << rem) - 1);
      __m512 X[16], W[16];
      for (int l = 0; l < 16; ++l) {
        X[l] = _mm512_maskz_loadu_ps(m, xp[l] + i0);
        W[l] = _mm512_maskz_loadu_ps(m, wp[l] + i0);
      }
      transpose16(X);
      transpose16(W);
      if (rem == 16) {
#pragma GCC unroll 16
        for (int t = 0; t < 16; ++t) acc = _mm512_fmadd_ps(X[t], W[t], acc);
      } else {
        for (int t = 0; t < rem; ++t) acc = _mm512_fmadd_ps(X[t], W[t], acc);
      }
    }
    alignas(64) float v[16];
    _mm512_store_ps(v, acc);
    for (int l = 0; l < lanes; ++l) out[g + l] = v[l] + bias[pairs[g + l].latent];
  }
}

// Eight scalar chains side by side (2 fma ports x 4 cycles latency).
__attribute__((target("avx2,fma"))) void rescore_fma(const float* xr, const float* wt, int64_t d, const ScreenPair* pairs,
                                                     int64_t n, const float* bias, float* out) {
  constexpr int L = 8;
  for (int64_t g = 0; g < n; g += L) {
    const int lanes = n - g < L ? static_cast<int>(n - g) : L;
    const float* xp[L];
    const float* wp[L];
    float acc[L];
    for (int l = 0; l < L; ++l) {
      const ScreenPair& p = pairs[g + (l < lanes ? l : 0)];
      xp[l] = xr + static_cast<int64_t>(p.row) * d;
      wp[l] = wt + static_cast<int64_t>(p.latent) * d;
      acc[l] = 0.0f;
    }
    for (int64_t i = 0; i < d; ++i) {
#pragma GCC unroll 8
      for (int l = 0; l < L; ++l) acc[l] = __builtin_fmaf(xp[l][i], wp[l][i], acc[l]);
    }
    for (int l = 0; l < lanes; ++l) out[g + l] = acc[l] + bias[pairs[g + l].latent];
  }
}

}  // namespace saekit::cpu
