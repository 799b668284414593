// Fused top-k encode, fp32 baseline: pre = (x - b_dec) @ W_enc + b_enc, per-row top-k with
// ReLU on the kept values, without ever writing the dense [rows, d_sae] pre-activations.
//
// One warp per row. Lane l computes latents j = l + 32 t (W_enc is [d_in, d_sae] row-major,
// so the 32 lanes read 32 consecutive floats of a W_enc row: coalesced) with fp32 FMAs in d_in
// order; x is read as a broadcast. After each tile of 32 latents the warp merges the lanes that
// beat the row's current k-th value into a sorted top-k list in shared memory (a ballot picks
// them in lane order = latent order, one insertion at a time), so ties keep the lower latent
// index, the deterministic rule the CPU backend uses. Exact in the sense of the CPU backend's
// rule: fp32 sums, the top-k set matching a float64 reference except between values within
// fp32 rounding of each other.
//
// This is the correctness baseline the tensor-core kernel (bf16/tf32 mma screen + fp32
// rescoring) will be checked against; it is memory-bound on W_enc, not fast.
#pragma once
#include <cstdint>

#include "compat.h"
#include "preactivation.cuh"
#include "warp_topk.cuh"

namespace saekit::cuda {

constexpr int ENCODE_TOPK_MAX_K = 256;
constexpr int ENCODE_WARPS_PER_BLOCK = 4;

/**
 * Writes, per row, k (index, value) slots in ascending latent order into out_indices /
 * out_values ([rows, k]) and the number of slots kept (values > 0) into out_count [rows].
 * Requires 1 <= k <= min(d_sae, ENCODE_TOPK_MAX_K) and blockDim.x = 32 * ENCODE_WARPS_PER_BLOCK.
 */
__global__ void encode_topk_f32_kernel(const float* __restrict__ x, const float* __restrict__ W_enc, const float* __restrict__ b_enc,
                                       const float* __restrict__ b_dec, int apply_b_dec, int rows, int d_in, int d_sae, int k,
                                       int32_t* __restrict__ out_indices, float* __restrict__ out_values, int32_t* __restrict__ out_count) {
  __shared__ float s_val[ENCODE_WARPS_PER_BLOCK][ENCODE_TOPK_MAX_K];
  __shared__ int s_idx[ENCODE_WARPS_PER_BLOCK][ENCODE_TOPK_MAX_K];
  const int warp = static_cast<int>(threadIdx.x) / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  float* vals = s_val[warp];
  int* idx = s_idx[warp];
  const int warps_total = static_cast<int>(gridDim.x) * ENCODE_WARPS_PER_BLOCK;
  for (int row = static_cast<int>(blockIdx.x) * ENCODE_WARPS_PER_BLOCK + warp; row < rows; row += warps_total) {
    const float* xr = x + static_cast<int64_t>(row) * d_in;
    int filled = 0;  // same in every lane: updated identically after each ballot
    for (int base = 0; base < d_sae; base += 32) {
      const int j = base + lane < d_sae ? base + lane : -1;
      const float pre = j >= 0 ? preactivation_f32(xr, W_enc, b_enc, b_dec, apply_b_dec, d_in, d_sae, j) : -INFINITY;
      warp_topk_merge(pre, j, vals, idx, k, filled);
    }
    warp_topk_emit(vals, idx, filled, k, row, out_indices, out_values, out_count);
  }
}

}  // namespace saekit::cuda
