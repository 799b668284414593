// AVX2 + FMA encode kernel: a 6 x 16 register tile (12 accumulators, 2 B vectors, 1 broadcast
// = 15 of the 16 ymm registers), applied to both halves of each 32-latent panel.
#include <immintrin.h>

#include "encode_kernels.h"

namespace saekit::cpu {

#define SAEKIT_AVX2 __attribute__((target("avx2,fma")))

namespace {

template <int MR>
SAEKIT_AVX2 inline void tile_half(const float* __restrict a, const float* __restrict b, int64_t d_in,
                                  float (*out)[kPanel]) {
  __m256 c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm256_setzero_ps();
  for (int64_t i = 0; i < d_in; ++i) {
    const __m256 b0 = _mm256_load_ps(b + i * kPanel);
    const __m256 b1 = _mm256_load_ps(b + i * kPanel + 8);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + i * MR + r);
      c0[r] = _mm256_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm256_fmadd_ps(av, b1, c1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_ps(out[r], c0[r]);
    _mm256_storeu_ps(out[r] + 8, c1[r]);
  }
}

}  // namespace

SAEKIT_AVX2 void encode_block_avx2(const EncodeBlockArgs& args) {
  constexpr int MR = kMrAvx2;
  const int64_t d_in = args.d_in;
  const int n_micro = (args.rows + MR - 1) / MR;
  for (int64_t p = 0; p < args.n_panels; ++p) {
    const float* b = args.b_packed + p * d_in * kPanel;
    for (int m = 0; m < n_micro; ++m) {
      const float* a = args.a_packed + static_cast<int64_t>(m) * d_in * MR;
      alignas(64) float acc[MR][kPanel];
      tile_half<MR>(a, b, d_in, acc);
      // Second half: same A, B shifted by 16 lanes; results land in lanes 16..31.
      float (*hi)[kPanel] = reinterpret_cast<float (*)[kPanel]>(&acc[0][16]);
      tile_half<MR>(a, b + 16, d_in, hi);
      const int rows = args.rows - m * MR < MR ? args.rows - m * MR : MR;
      for (int r = 0; r < rows; ++r)
        tile_row_epilogue(acc[r], args.bias + p * kPanel, args.admit + p * kPanel, m * MR + r, p * kPanel,
                          *args.sink);
    }
  }
}

}  // namespace saekit::cpu
