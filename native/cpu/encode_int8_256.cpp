// AVX-VNNI screening kernel (int8 screen on ymm, screen.h): the VEX-encoded vpdpbusd of CPUs
// with AVX-VNNI (Alder Lake and later, Zen 5), for those without AVX-512 above all. Same
// packed weights as the AVX-512 VNNI kernel (encode_int8.cpp); a 6 x 16 tile (12 accumulators,
// 2 B vectors, 1 broadcast = 15 of 16 ymm registers) applied to both halves of each 32-latent
// panel, as the AVX2 fp32 kernel does. A panel's B (quads x 128 bytes: 24 KiB at d_in 768)
// stays in L1 across the micro-panels without slicing. The epilogue computes exactly what
// the AVX-512 kernel's does (same fp32 operations), so both give the same screened values.
#include <immintrin.h>

#include "encode_kernels.h"

namespace saekit::cpu {

#define SAEKIT_VNNI256 __attribute__((target("avx2,fma,avxvnni")))

namespace {

template <int MR>
SAEKIT_VNNI256 inline void tile_half_int8(const uint32_t* __restrict a, const uint32_t* __restrict b, int64_t quads,
                                          int32_t (*out)[kPanel]) {
  __m256i c0[MR], c1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm256_setzero_si256();
  for (int64_t i = 0; i < quads; ++i) {
    const __m256i b0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + i * kPanel));
    const __m256i b1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(b + i * kPanel + 8));
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m256i av = _mm256_set1_epi32(static_cast<int>(a[i * MR + r]));
      c0[r] = _mm256_dpbusd_avx_epi32(c0[r], av, b0);
      c1[r] = _mm256_dpbusd_avx_epi32(c1[r], av, b1);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r]), c0[r]);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out[r] + 8), c1[r]);
  }
}

}  // namespace

// args.d_in is the number of QUADS; rows are packed in micro-panels of 6.
SAEKIT_VNNI256 void encode_block_int8_avx256(const EncodeBlockArgs& args) {
  constexpr int MR = kMrInt8x256;
  const int64_t quads = args.d_in;
  const auto* a_packed = reinterpret_cast<const uint32_t*>(args.a_packed);
  const auto* b_packed = reinterpret_cast<const uint32_t*>(args.b_packed);
  const int n_micro = (args.rows + MR - 1) / MR;
  for (int64_t p = 0; p < args.n_panels; ++p) {
    const uint32_t* b = b_packed + p * quads * kPanel;
    const float* bias = args.bias + p * kPanel;
    const float* sw = args.latent_scale + p * kPanel;
    const int32_t* sum128 = args.latent_sum128 + p * kPanel;
    for (int m = 0; m < n_micro; ++m) {
      const uint32_t* a = a_packed + static_cast<int64_t>(m) * quads * MR;
      alignas(64) int32_t acc[MR][kPanel];
      tile_half_int8<MR>(a, b, quads, acc);
      tile_half_int8<MR>(a, b + 16, quads, reinterpret_cast<int32_t (*)[kPanel]>(&acc[0][16]));
      const int rows = args.rows - m * MR < MR ? args.rows - m * MR : MR;
      for (int r = 0; r < rows; ++r) {
        const __m256 sx = _mm256_set1_ps(args.row_scale[m * MR + r]);
        alignas(32) float v[kPanel];
        for (int h = 0; h < kPanel; h += 8) {
          const __m256i s = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(sum128 + h));
          const __m256i c = _mm256_load_si256(reinterpret_cast<const __m256i*>(acc[r] + h));
          const __m256 f = _mm256_cvtepi32_ps(_mm256_sub_epi32(c, s));
          _mm256_store_ps(v + h, _mm256_fmadd_ps(f, _mm256_mul_ps(sx, _mm256_loadu_ps(sw + h)), _mm256_loadu_ps(bias + h)));
        }
        select_row(v, args.admit + p * kPanel, m * MR + r, p * kPanel, *args.sink);
      }
    }
  }
}

}  // namespace saekit::cpu
