// Fused encode for the threshold architectures, fp32: standard (ReLU: keep pre > 0) and
// jumprelu (keep pre > threshold[j], value pre). The number of nonzeros per row is not known
// in advance, so it is count-then-fill: the kernel runs twice with the same arithmetic; the
// first pass writes each row's count, the host turns counts into CSR row offsets (an exclusive
// scan), the second pass writes indices and values at those offsets, ascending by latent.
//
// One warp per row, lane l computing latents l + 32 t with fp32 FMAs in d_in order (the same
// order in both passes, so both agree on every comparison). Within a tile of 32 latents a
// ballot gives each kept lane its slot: the count of kept lanes below it.
#pragma once
#include <cstdint>

#include "compat.h"
#include "preactivation.cuh"

namespace saekit::cuda {

constexpr int ENCODE_THRESHOLD_WARPS_PER_BLOCK = 4;

/** The threshold architectures' keep rule: pre > 0, and pre > threshold[j] for jumprelu. */
__device__ __forceinline__ bool threshold_keep(float pre, const float* threshold, int j) { return pre > 0.f && (threshold == nullptr || pre > threshold[j]); }

/**
 * Count-then-fill output of one group of 32 lanes: the lanes that KEEP take consecutive slots
 * (lane order) after the row's WRITTEN so far; pass 2 (INDPTR set) writes (J, PRE) there.
 * WRITTEN grows by the group's kept count in every lane.
 */
__device__ __forceinline__ void threshold_emit(bool keep, int j, float pre, const uint32_t* indptr, int row, uint32_t& written, int32_t* out_indices,
                                               float* out_values) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const unsigned kept = __ballot_sync(0xffffffffu, keep);
  if (indptr != nullptr && keep) {
    const uint32_t slot = indptr[row] + written + static_cast<uint32_t>(__popc(kept & ((1u << lane) - 1u)));
    out_indices[slot] = j;
    out_values[slot] = pre;
  }
  written += static_cast<uint32_t>(__popc(kept));
}

/**
 * threshold == nullptr: standard (keep pre > 0); else jumprelu (keep pre > threshold[j] and
 * pre > 0). Pass 1 (indptr == nullptr): counts into out_count[rows]. Pass 2: writes
 * out_indices/out_values at indptr[row] .. indptr[row + 1].
 */
__global__ void encode_threshold_f32_kernel(const float* __restrict__ x, const float* __restrict__ W_enc, const float* __restrict__ b_enc,
                                            const float* __restrict__ b_dec, const float* __restrict__ threshold, int apply_b_dec, int rows, int d_in,
                                            int d_sae, const uint32_t* __restrict__ indptr, int32_t* __restrict__ out_count,
                                            int32_t* __restrict__ out_indices, float* __restrict__ out_values) {
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warps_total = static_cast<int>(gridDim.x) * ENCODE_THRESHOLD_WARPS_PER_BLOCK;
  for (int row = static_cast<int>(blockIdx.x) * ENCODE_THRESHOLD_WARPS_PER_BLOCK + warp; row < rows; row += warps_total) {
    const float* xr = x + static_cast<int64_t>(row) * d_in;
    uint32_t written = 0;  // kept so far in this row, identical in every lane
    for (int base = 0; base < d_sae; base += 32) {
      const int j = base + lane;
      float pre = 0.f;
      bool keep = false;
      if (j < d_sae) {
        pre = preactivation_f32(xr, W_enc, b_enc, b_dec, apply_b_dec, d_in, d_sae, j);
        keep = threshold_keep(pre, threshold, j);
      }
      threshold_emit(keep, j, pre, indptr, row, written, out_indices, out_values);
    }
    if (indptr == nullptr && lane == 0) out_count[row] = static_cast<int32_t>(written);
  }
}

}  // namespace saekit::cuda
