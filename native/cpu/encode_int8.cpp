// AVX512-VNNI screening kernel (int8 screen, screen.h): the bf16 kernel's 14 x 32 tile with
// vpdpbusd, which sums FOUR u8 x s8 products per int32 lane: each step consumes a quad of d_in
// entries. Accumulation is in int32 and exact (d_in is bounded at load); the epilogue turns
// I = dot - 128 colsum into fp32 s_j = fma(float(I), sx * sw_j, b_j), the rounding screen.h
// bounds. Screening only: the candidates are rescored in fp32 (rescore.cpp).
//
// Layouts (uint32 = four bytes, the lowest holding d_in index 4q):
//   B: [n_panels][quads][32 latents] s8     A: [micro-panel][quads][MR rows] u8 (q + 128)
#include <immintrin.h>

#include <vector>

#include "encode_kernels.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace saekit::cpu {

#define SAEKIT_VNNI512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx512vnni,fma")))

namespace {

constexpr int64_t kMaxQuadSlice = 192;  // 192 quads x 32 latents x 4 bytes = 24 KiB of B in L1

template <int MR>
SAEKIT_VNNI512 inline void tile_slice_int8(const uint32_t* __restrict a, const uint32_t* __restrict b, int64_t kc,
                                           int32_t* __restrict partial, bool first, bool last, const float* bias,
                                           const float* admit, const float* row_scale, const float* lat_scale,
                                           const int32_t* lat_sum128, int row0, int rows, int64_t base,
                                           TileSink& sink) {
  __m512i c0[MR], c1[MR];
  if (first) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm512_setzero_si512();
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      c0[r] = _mm512_load_si512(partial + r * kPanel);
      c1[r] = _mm512_load_si512(partial + r * kPanel + 16);
    }
  }
  for (int64_t i = 0; i < kc; ++i) {
    const __m512i b0 = _mm512_load_si512(b + i * kPanel);
    const __m512i b1 = _mm512_load_si512(b + i * kPanel + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512i av = _mm512_set1_epi32(static_cast<int>(a[i * MR + r]));
      c0[r] = _mm512_dpbusd_epi32(c0[r], av, b0);
      c1[r] = _mm512_dpbusd_epi32(c1[r], av, b1);
    }
  }
  if (!last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm512_store_si512(partial + r * kPanel, c0[r]);
      _mm512_store_si512(partial + r * kPanel + 16, c1[r]);
    }
    return;
  }
  alignas(64) float tile[MR][kPanel];
  const __m512 bias0 = _mm512_loadu_ps(bias), bias1 = _mm512_loadu_ps(bias + 16);
  const __m512 sw0 = _mm512_loadu_ps(lat_scale), sw1 = _mm512_loadu_ps(lat_scale + 16);
  const __m512i s0 = _mm512_loadu_si512(lat_sum128), s1 = _mm512_loadu_si512(lat_sum128 + 16);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const __m512 sx = _mm512_set1_ps(row_scale[r]);
    const __m512 v0 = _mm512_cvtepi32_ps(_mm512_sub_epi32(c0[r], s0));
    const __m512 v1 = _mm512_cvtepi32_ps(_mm512_sub_epi32(c1[r], s1));
    _mm512_store_ps(tile[r], _mm512_fmadd_ps(v0, _mm512_mul_ps(sx, sw0), bias0));
    _mm512_store_ps(tile[r] + 16, _mm512_fmadd_ps(v1, _mm512_mul_ps(sx, sw1), bias1));
  }
  select_rows_avx512(tile, rows, admit, row0, base, sink);
}

}  // namespace

// args.d_in is the number of QUADS here; a_packed / b_packed point at uint32 quads.
SAEKIT_VNNI512 void encode_block_int8_avx512(const EncodeBlockArgs& args) {
  constexpr int MR = kMrAvx512;
  const int64_t quads = args.d_in;
  const auto* a_packed = reinterpret_cast<const uint32_t*>(args.a_packed);
  const auto* b_packed = reinterpret_cast<const uint32_t*>(args.b_packed);
  const int n_micro = (args.rows + MR - 1) / MR;
  const int64_t n_slices = (quads + kMaxQuadSlice - 1) / kMaxQuadSlice;
  const int64_t slice = (quads + n_slices - 1) / n_slices;
  std::vector<int32_t> partial_storage(static_cast<size_t>(n_micro) * MR * kPanel + 16);
  auto* partial = reinterpret_cast<int32_t*>((reinterpret_cast<uintptr_t>(partial_storage.data()) + 63) & ~uintptr_t{63});
  for (int64_t p = 0; p < args.n_panels; ++p) {
    const uint32_t* b = b_packed + p * quads * kPanel;
    for (int64_t k0 = 0; k0 < quads; k0 += slice) {
      const int64_t kc = quads - k0 < slice ? quads - k0 : slice;
      const bool first = k0 == 0, last = k0 + kc == quads;
      // Next slice into L2 while this one is reused from L1 (as in the fp32 kernel).
      const char* next = reinterpret_cast<const char*>(b + (k0 + kc) * kPanel);
      const char* stop = reinterpret_cast<const char*>(b_packed + args.n_panels * quads * kPanel);
      const int64_t next_bytes = slice * kPanel * 4;
      const int64_t per_tile = (next_bytes / n_micro + 63) / 64 * 64;
      for (int m = 0; m < n_micro; ++m) {
        for (int64_t off = m * per_tile; off < (m + 1) * per_tile && off < next_bytes && next + off < stop; off += 64)
          _mm_prefetch(next + off, _MM_HINT_T1);
        const uint32_t* a = a_packed + static_cast<int64_t>(m) * quads * MR + k0 * MR;
        const int rows = args.rows - m * MR < MR ? args.rows - m * MR : MR;
        tile_slice_int8<MR>(a, b + k0 * kPanel, kc, partial + m * MR * kPanel, first, last, args.bias + p * kPanel,
                            args.admit + p * kPanel, args.row_scale + m * MR, args.latent_scale + p * kPanel,
                            args.latent_sum128 + p * kPanel, m * MR, rows, p * kPanel, *args.sink);
      }
    }
  }
}

}  // namespace saekit::cpu
