// AVX-512 encode kernel: a 14 x 32 register tile (28 zmm accumulators + 2 B vectors + the
// broadcast A value), i.e. 28 FMAs per 2 vector loads and 14 broadcasts.
//
// Cache blocking: d_in is cut into slices of <= 256 so a panel's B slice (256 x 32 floats =
// 32 KiB) stays in L1 while every micro-panel of the block passes over it; partial tiles park
// in a small L1/L2-resident buffer between slices. Without this the whole 96 KiB panel (at
// d_in 768) streamed from L2 for every micro-panel and the kernel ran at ~80% of the FMA peak.
// The epilogue runs on the registers after the last slice: bias add, one compare per 16 lanes
// against max(admission, row threshold); only a row with a passing lane leaves registers.
#include <immintrin.h>

#include <vector>

#include "encode_kernels.h"

// GCC 12 warns falsely about an uninitialized temporary inside its own AVX-512 intrinsics.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace saekit::cpu {

#define SAEKIT_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma")))

// Appends each tile row's lanes that beat max(admission, row threshold) to the row's staging
// area, branch-free for rows where nothing passes.
SAEKIT_AVX512 __attribute__((noinline)) void select_rows_avx512(const float (*tile)[kPanel], int rows, const float* admit,
                                                                int row0, int64_t base, TileSink& sink) {
  const __m512 adm0 = _mm512_loadu_ps(admit), adm1 = _mm512_loadu_ps(admit + 16);
  const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
  const __m512i idx0 = _mm512_add_epi32(lane, _mm512_set1_epi32(static_cast<int32_t>(base)));
  const __m512i idx1 = _mm512_add_epi32(idx0, _mm512_set1_epi32(16));
  for (int r = 0; r < rows; ++r) {
    const int row = row0 + r;
    const __m512 v0 = _mm512_load_ps(tile[r]);
    const __m512 v1 = _mm512_load_ps(tile[r] + 16);
    const __m512 thr = _mm512_set1_ps(sink.row_threshold[row]);
    const __mmask16 m0 = _mm512_cmp_ps_mask(v0, _mm512_max_ps(adm0, thr), _CMP_GT_OQ);
    const __mmask16 m1 = _mm512_cmp_ps_mask(v1, _mm512_max_ps(adm1, thr), _CMP_GT_OQ);
    if ((m0 | m1) == 0) continue;
    // Compress the passing lanes to the front of a register and store all 16; only
    // popcount(mask) of them count. (Register-form compress: the memory form is microcoded
    // and slow on AMD.)
    int64_t n = sink.count[row];
    float* values = sink.values + row * sink.stride + n;
    int32_t* indices = sink.indices + row * sink.stride + n;
    const int n0 = __builtin_popcount(m0);
    _mm512_storeu_ps(values, _mm512_maskz_compress_ps(m0, v0));
    _mm512_storeu_si512(indices, _mm512_maskz_compress_epi32(m0, idx0));
    _mm512_storeu_ps(values + n0, _mm512_maskz_compress_ps(m1, v1));
    _mm512_storeu_si512(indices + n0, _mm512_maskz_compress_epi32(m1, idx1));
    n += n0 + __builtin_popcount(m1);
    sink.count[row] = n;
    if (n > sink.limit[row]) sink.flush(row);
  }
}

namespace {

constexpr int64_t kMaxSlice = 192;

// One slice [k0, k0 + kc) of one micro-panel against one panel. `partial` holds the tile's
// running sums between slices (MR x 32 floats); first/last say whether to start from zero and
// whether to finish with the epilogue.
template <int MR>
SAEKIT_AVX512 inline void tile_slice(const float* __restrict a, const float* __restrict b, int64_t kc,
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
    const __m512 b0 = _mm512_load_ps(b + i * kPanel);
    const __m512 b1 = _mm512_load_ps(b + i * kPanel + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[i * MR + r]);
      c0[r] = _mm512_fmadd_ps(av, b0, c0[r]);
      c1[r] = _mm512_fmadd_ps(av, b1, c1[r]);
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
  // Park the finished tile (with bias) and select from memory: a call (flush) while the 28
  // accumulators were live forced the compiler to spill them around every row (~500 stack
  // accesses in the old epilogue).
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

SAEKIT_AVX512 void encode_block_avx512(const EncodeBlockArgs& args) {
  constexpr int MR = kMrAvx512;
  const int64_t d_in = args.d_in;
  const int n_micro = (args.rows + MR - 1) / MR;
  // Even slices: 768 -> 3 x 256, 2304 -> 9 x 256, 300 -> 2 x 150.
  const int64_t n_slices = (d_in + kMaxSlice - 1) / kMaxSlice;
  const int64_t slice = (d_in + n_slices - 1) / n_slices;
  std::vector<float> partial_storage(static_cast<size_t>(n_micro) * MR * kPanel + 16);
  float* partial = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(partial_storage.data()) + 63) & ~uintptr_t{63});
  for (int64_t p = 0; p < args.n_panels; ++p) {
    const float* b = args.b_packed + p * d_in * kPanel;
    for (int64_t k0 = 0; k0 < d_in; k0 += slice) {
      const int64_t kc = d_in - k0 < slice ? d_in - k0 : slice;
      const bool first = k0 == 0, last = k0 + kc == d_in;
      // W_enc is one sequential stream (slices, then panels, are contiguous). Pull the next
      // slice into L2 while this one is reused from L1: spread over the micro-panels, a share
      // of its lines per tile. Left to the hardware prefetcher, the first micro-panel of each
      // slice stalled on memory (~15% of the kernel's time at d_in 768).
      const char* next = reinterpret_cast<const char*>(b + (k0 + kc) * kPanel);
      const char* stop = reinterpret_cast<const char*>(args.b_packed + args.n_panels * d_in * kPanel);
      const int64_t next_bytes = slice * kPanel * 4;
      const int64_t per_tile = (next_bytes / n_micro + 63) / 64 * 64;
      for (int m = 0; m < n_micro; ++m) {
        for (int64_t off = m * per_tile; off < (m + 1) * per_tile && off < next_bytes && next + off < stop; off += 64)
          _mm_prefetch(next + off, _MM_HINT_T1);
        const float* a = args.a_packed + static_cast<int64_t>(m) * d_in * MR + k0 * MR;
        const int rows = args.rows - m * MR < MR ? args.rows - m * MR : MR;
        tile_slice<MR>(a, b + k0 * kPanel, kc, partial + m * MR * kPanel, first, last, args.bias + p * kPanel,
                       args.admit + p * kPanel, m * MR, rows, p * kPanel, *args.sink);
      }
    }
  }
}

}  // namespace saekit::cpu
