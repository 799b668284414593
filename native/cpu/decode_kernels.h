// Sparse decode: x_hat[r] = (sum_j values[j] * W_dec[indices[j]] + b_dec) * row_scale[r] + row_shift[r].
// Memory-bound: each entry streams one W_dec row (d_in floats), so the kernels are a plain
// fp32 axpy into the output row (which stays in L1) with the next entry's row prefetched.
#pragma once
#include <cstdint>

#include "../backend.h"

namespace saekit::cpu {

struct DecodeArgs {
  const SparseCodesView* codes;
  const float* W_dec;  // [d_sae, d_in]
  const float* b_dec;  // [d_in]
  int64_t d_in;
  float* out;          // [rows, d_in]
};

void decode_rows_generic(const DecodeArgs& args, int64_t row_begin, int64_t row_end);
void decode_rows_avx2(const DecodeArgs& args, int64_t row_begin, int64_t row_end);
void decode_rows_avx512(const DecodeArgs& args, int64_t row_begin, int64_t row_end);

}  // namespace saekit::cpu
