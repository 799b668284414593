// The fp32 pre-activation of one latent, shared by the baseline encode kernels so every
// architecture computes it in the same order: pre_j = sum_i (x_i - b_dec_i) W_enc[i, j] + b_enc_j,
// fp32 FMAs in d_in order. W_enc is [d_in, d_sae] row-major: lanes computing consecutive j read
// consecutive floats (coalesced); x is a broadcast.
#pragma once
#include <cstdint>

#include "compat.h"

namespace saekit::cuda {

__device__ __forceinline__ float preactivation_f32(const float* xr, const float* W_enc, const float* b_enc, const float* b_dec, int apply_b_dec, int d_in,
                                                   int d_sae, int j) {
  float acc = 0.f;
  for (int i = 0; i < d_in; ++i) {
    const float xi = apply_b_dec ? xr[i] - b_dec[i] : xr[i];
    acc = fmaf(xi, W_enc[static_cast<int64_t>(i) * d_sae + j], acc);
  }
  return acc + b_enc[j];
}

}  // namespace saekit::cuda
