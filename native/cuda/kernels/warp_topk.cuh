// A warp's running top-k of one row, shared by the top-k encode kernels (fp32 baseline and
// the tensor-core rescoring): a sorted list in shared memory (descending value; equal values
// in ascending latent index, the CPU backend's tie rule), merged 32 values at a time.
#pragma once
#include <cstdint>

#include "compat.h"

namespace saekit::cuda {

/** Whether (V, J) ranks above (KV, KJ): larger value, or equal value and lower latent index. */
__device__ __forceinline__ bool ranks_above(float v, int j, float kv, int kj) { return v > kv || (v == kv && j < kj); }

/**
 * Merges the lanes' (PRE, J) pairs (J < 0: no value) into VALS/IDX, ordered by value, then
 * lower index: the result does not depend on the order latents are offered in, so the
 * rescoring can take candidates in any order. FILLED (entries so far, at most K) is the same
 * in every lane.
 */
__device__ __forceinline__ void warp_topk_merge(float pre, int j, float* vals, int* idx, int k, int& filled) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const bool full = filled == k;
  const float kv = full ? vals[k - 1] : -INFINITY;
  const int kj = full ? idx[k - 1] : 0;
  unsigned pending = __ballot_sync(0xffffffffu, j >= 0 && (!full || ranks_above(pre, j, kv, kj)));
  while (pending != 0) {
    const int src = __ffs(static_cast<int>(pending)) - 1;
    const float v = __shfl_sync(0xffffffffu, pre, src);
    const int jj = __shfl_sync(0xffffffffu, j, src);
    if (lane == 0) {
      int p = filled < k ? filled : k - 1;
      while (p > 0 && ranks_above(v, jj, vals[p - 1], idx[p - 1])) {
        vals[p] = vals[p - 1];
        idx[p] = idx[p - 1];
        --p;
      }
      vals[p] = v;  // it ranked above the k-th entry (or the list was short), so it belongs
      idx[p] = jj;
    }
    __syncwarp();
    if (filled < k) ++filled;
    pending &= pending - 1;
    // Later candidates of this group must still rank above the new k-th entry.
    const bool full2 = filled == k;
    const float kv2 = full2 ? vals[k - 1] : -INFINITY;
    const int kj2 = full2 ? idx[k - 1] : 0;
    pending &= __ballot_sync(0xffffffffu, j >= 0 && (!full2 || ranks_above(pre, j, kv2, kj2)));
  }
}

/** Lane 0 writes ROW's FILLED entries in ascending latent order, ReLU applied (zeros dropped), into [rows, k] slots. */
__device__ __forceinline__ void warp_topk_emit(float* vals, int* idx, int filled, int k, int64_t row, int32_t* out_indices, float* out_values,
                                               int32_t* out_count) {
  if (static_cast<int>(threadIdx.x) % 32 == 0) {
    for (int a = 1; a < filled; ++a) {
      const int ia = idx[a];
      const float va = vals[a];
      int b = a;
      while (b > 0 && idx[b - 1] > ia) {
        idx[b] = idx[b - 1];
        vals[b] = vals[b - 1];
        --b;
      }
      idx[b] = ia;
      vals[b] = va;
    }
    int kept = 0;
    for (int a = 0; a < filled; ++a) {
      if (vals[a] > 0.f) {
        out_indices[row * k + kept] = idx[a];
        out_values[row * k + kept] = vals[a];
        ++kept;
      }
    }
    out_count[row] = kept;
  }
  __syncwarp();
}

}  // namespace saekit::cuda
