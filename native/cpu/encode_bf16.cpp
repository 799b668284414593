// AVX512-BF16 screening kernel: the fp32 kernel's 14 x 32 tile (encode_avx512.cpp) with
// vdpbf16ps instead of vfmadd: each step consumes a PAIR of d_in entries, so one instruction
// does twice the multiply-adds. Screening only: the values it produces carry the bf16 rounding
// of x' and W_enc, and screen.h bounds that error so the exact winners can be recomputed in
// fp32 (cpu_model.h, encode_screened).
//
// Layouts (uint32 = two bf16, the lower half holding the even d_in index):
//   B: [n_panels][d_in/2][32 latents]     A: [micro-panel][d_in/2][MR rows]
#include <immintrin.h>

#include <vector>

#include "encode_kernels.h"

#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace saekit::cpu {

#define SAEKIT_BF16 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx512bf16,fma")))

namespace {

constexpr int64_t kMaxPairSlice = 192;  // 192 pairs x 32 latents x 4 bytes = 24 KiB of B in L1

template <int MR>
SAEKIT_BF16 inline void tile_slice_bf16(const uint32_t* __restrict a, const uint32_t* __restrict b, int64_t kc,
                                        float* __restrict partial, bool first, bool last, const float* bias,
                                        const float* admit, int row0, int rows, int64_t base, TileSink& sink) {
  __m512 c0[MR], c1[MR];
  if (first) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm512_setzero_ps();
  } else {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      c0[r] = _mm512_load_ps(partial + r * kPanel);
      c1[r] = _mm512_load_ps(partial + r * kPanel + 16);
    }
  }
  for (int64_t i = 0; i < kc; ++i) {
    const __m512bh b0 = (__m512bh)_mm512_load_si512(b + i * kPanel);
    const __m512bh b1 = (__m512bh)_mm512_load_si512(b + i * kPanel + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[i * MR + r]));
      c0[r] = _mm512_dpbf16_ps(c0[r], av, b0);
      c1[r] = _mm512_dpbf16_ps(c1[r], av, b1);
    }
  }
  if (!last) {
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm512_store_ps(partial + r * kPanel, c0[r]);
      _mm512_store_ps(partial + r * kPanel + 16, c1[r]);
    }
    return;
  }
  alignas(64) float tile[MR][kPanel];
  const __m512 bias0 = _mm512_loadu_ps(bias), bias1 = _mm512_loadu_ps(bias + 16);
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_store_ps(tile[r], _mm512_add_ps(c0[r], bias0));
    _mm512_store_ps(tile[r] + 16, _mm512_add_ps(c1[r], bias1));
  }
  select_rows_avx512(tile, rows, admit, row0, base, sink);
}

}  // namespace

// args.d_in is the number of PAIRS here; a_packed / b_packed point at uint32 pairs.
SAEKIT_BF16 void encode_block_bf16(const EncodeBlockArgs& args) {
  constexpr int MR = kMrAvx512;
  const int64_t pairs = args.d_in;
  const auto* a_packed = reinterpret_cast<const uint32_t*>(args.a_packed);
  const auto* b_packed = reinterpret_cast<const uint32_t*>(args.b_packed);
  const int n_micro = (args.rows + MR - 1) / MR;
  const int64_t n_slices = (pairs + kMaxPairSlice - 1) / kMaxPairSlice;
  const int64_t slice = (pairs + n_slices - 1) / n_slices;
  std::vector<float> partial_storage(static_cast<size_t>(n_micro) * MR * kPanel + 16);
  float* partial = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(partial_storage.data()) + 63) & ~uintptr_t{63});
  for (int64_t p = 0; p < args.n_panels; ++p) {
    const uint32_t* b = b_packed + p * pairs * kPanel;
    for (int64_t k0 = 0; k0 < pairs; k0 += slice) {
      const int64_t kc = pairs - k0 < slice ? pairs - k0 : slice;
      const bool first = k0 == 0, last = k0 + kc == pairs;
      // Next slice into L2 while this one is reused from L1 (as in the fp32 kernel).
      const char* next = reinterpret_cast<const char*>(b + (k0 + kc) * kPanel);
      const char* stop = reinterpret_cast<const char*>(b_packed + args.n_panels * pairs * kPanel);
      const int64_t next_bytes = slice * kPanel * 4;
      const int64_t per_tile = (next_bytes / n_micro + 63) / 64 * 64;
      for (int m = 0; m < n_micro; ++m) {
        for (int64_t off = m * per_tile; off < (m + 1) * per_tile && off < next_bytes && next + off < stop; off += 64)
          _mm_prefetch(next + off, _MM_HINT_T1);
        const uint32_t* a = a_packed + static_cast<int64_t>(m) * pairs * MR + k0 * MR;
        const int rows = args.rows - m * MR < MR ? args.rows - m * MR : MR;
        tile_slice_bf16<MR>(a, b + k0 * kPanel, kc, partial + m * MR * kPanel, first, last, args.bias + p * kPanel,
                            args.admit + p * kPanel, m * MR, rows, p * kPanel, *args.sink);
      }
    }
  }
}

}  // namespace saekit::cpu
