// One body, three compilations: the always_inline template is inlined into wrappers carrying
// different target attributes, so GCC vectorizes it for each ISA without per-file -m flags
// (which would leak AVX-512 into shared inline code and crash older CPUs).
#include "decode_kernels.h"

#include <immintrin.h>

namespace saekit::cpu {
namespace {

// Entries ahead whose W_dec rows are prefetched. Entries are contiguous across rows in CSR, so
// the look-ahead runs straight through row boundaries. One entry's row (3 KiB at d_in 768)
// takes ~100-200 ns to stream at this machine's per-core bandwidth, about one DRAM latency,
// so one entry of look-ahead left the core waiting; several keep enough lines in flight.
// The look-ahead is measured in bytes (~12 KiB in flight per thread: 4 rows at d_in 768): at
// d_in 2304 four rows ahead was 36 KiB of prefetches, more than the core tracks: one thread
// decoded at 21 GB/s, against 26 GB/s with this sizing.
inline uint32_t prefetch_entries(int64_t d_in) {
  const int64_t rows = (12 << 10) / (d_in * 4);
  return static_cast<uint32_t>(rows < 1 ? 1 : rows > 8 ? 8 : rows);
}

__attribute__((always_inline)) inline void prefetch_row(const float* row, int64_t d_in) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t off = 0; off < d_in * 4; off += 64) __builtin_prefetch(p + off, 0, 3);
}

// Warms up the look-ahead: the rows of the first `ahead` entries of [first, last).
__attribute__((always_inline)) inline void prefetch_first(const DecodeArgs& args, uint32_t first, uint32_t last,
                                                          uint32_t ahead) {
  for (uint32_t e = first; e < first + ahead && e < last; ++e)
    prefetch_row(args.W_dec + static_cast<int64_t>(args.codes->indices[e]) * args.d_in, args.d_in);
}

// Row r, columns [col0, d_in), accumulated in the output row itself (L1): b_dec + the entries,
// then the per-row scale/shift. With `prefetch`, pulls in the row `ahead` entries further on
// (entries up to `last`, the end of this task).
__attribute__((always_inline)) inline void decode_row_columns(const DecodeArgs& args, int64_t r, int64_t col0,
                                                              bool prefetch, uint32_t ahead, uint32_t last) {
  const SparseCodesView& c = *args.codes;
  const int64_t d_in = args.d_in, n = d_in - col0;
  float* __restrict out = args.out + r * d_in + col0;
  const float* __restrict b_dec = args.b_dec + col0;
  for (int64_t i = 0; i < n; ++i) out[i] = b_dec[i];
  const uint32_t begin = c.indptr[r], end = c.indptr[r + 1];
  for (uint32_t e = begin; e < end; ++e) {
    if (prefetch && e + ahead < last)
      prefetch_row(args.W_dec + static_cast<int64_t>(c.indices[e + ahead]) * d_in, d_in);
    const float* __restrict w = args.W_dec + static_cast<int64_t>(c.indices[e]) * d_in + col0;
    const float v = c.values[e];
    for (int64_t i = 0; i < n; ++i) out[i] += v * w[i];
  }
  const float scale = c.row_scale ? c.row_scale[r] : 1.0f;
  const float shift = c.row_shift ? c.row_shift[r] : 0.0f;
  if (scale != 1.0f || shift != 0.0f)
    for (int64_t i = 0; i < n; ++i) out[i] = out[i] * scale + shift;
}

__attribute__((always_inline)) inline void decode_rows_body(const DecodeArgs& args, int64_t row_begin,
                                                            int64_t row_end) {
  const uint32_t first = args.codes->indptr[row_begin], last = args.codes->indptr[row_end];
  const uint32_t ahead = prefetch_entries(args.d_in);
  prefetch_first(args, first, last, ahead);
  for (int64_t r = row_begin; r < row_end; ++r) decode_row_columns(args, r, 0, true, ahead, last);
}

}  // namespace

void decode_rows_generic(const DecodeArgs& args, int64_t b, int64_t e) { decode_rows_body(args, b, e); }

__attribute__((target("avx2,fma"))) void decode_rows_avx2(const DecodeArgs& args, int64_t b, int64_t e) {
  decode_rows_body(args, b, e);
}

// AVX-512: the output row is built in register blocks of 256 floats (16 zmm accumulators):
// for each block, every entry's 1 KiB segment is streamed in. Versus accumulating the whole row
// in L1 (a load + store of the output per FMA) this keeps ~k independent read streams in flight
// and halves the L1 traffic: 30 -> 40 GB/s on two threads in the kernel lab (bench/NOTES.md).
// The columns past the last full block go through the generic per-row loop.
#define SAEKIT_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,fma")))

SAEKIT_AVX512 void decode_rows_avx512(const DecodeArgs& args, int64_t row_begin, int64_t row_end) {
  constexpr int64_t kBlock = 256;
  const SparseCodesView& c = *args.codes;
  const int64_t d_in = args.d_in;
  const int64_t full = d_in / kBlock * kBlock;
  const uint32_t first = c.indptr[row_begin], last = c.indptr[row_end];
  const uint32_t ahead = prefetch_entries(d_in);
  prefetch_first(args, first, last, ahead);
  for (int64_t r = row_begin; r < row_end; ++r) {
    float* __restrict out = args.out + r * d_in;
    const uint32_t begin = c.indptr[r], end = c.indptr[r + 1];
    const __m512 vs = _mm512_set1_ps(c.row_scale ? c.row_scale[r] : 1.0f);
    const __m512 vh = _mm512_set1_ps(c.row_shift ? c.row_shift[r] : 0.0f);
    for (int64_t col = 0; col < full; col += kBlock) {
      __m512 acc[16];
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) acc[j] = _mm512_loadu_ps(args.b_dec + col + 16 * j);
      for (uint32_t e = begin; e < end; ++e) {
        if (col == 0 && e + ahead < last)
          prefetch_row(args.W_dec + static_cast<int64_t>(c.indices[e + ahead]) * d_in, d_in);
        const float* __restrict w = args.W_dec + static_cast<int64_t>(c.indices[e]) * d_in + col;
        const __m512 v = _mm512_set1_ps(c.values[e]);
#pragma GCC unroll 16
        for (int j = 0; j < 16; ++j) acc[j] = _mm512_fmadd_ps(v, _mm512_loadu_ps(w + 16 * j), acc[j]);
      }
#pragma GCC unroll 16
      for (int j = 0; j < 16; ++j) _mm512_storeu_ps(out + col + 16 * j, _mm512_fmadd_ps(acc[j], vs, vh));
    }
    // Columns past the last full block (all of them when d_in < 256).
    if (full < d_in) decode_row_columns(args, r, full, full == 0, ahead, last);
  }
}

}  // namespace saekit::cpu
