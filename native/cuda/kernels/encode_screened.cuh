// Exact top-k encode on the tensor cores: screen every latent with bf16 mma (fp32 accumulate),
// keep as candidates the latents whose screened score plus an error bound reaches the row's
// k-th largest lower bound, rescore the candidates in fp32 and take the exact top-k among them
// (the CPU's screen.h scheme, on a GPU). The bound, per row r and latent j:
//   |pre - s| <= ||x'|| * ||w_j - w~_j|| + ||x' - x~|| * ||w~_j|| + slack
// (Cauchy-Schwarz on x'.w - x~.w~ = x'.(w - w~) + (x' - x~).w~; slack covers the fp32
// accumulation of both sums). T_r = k-th largest (s - bound) <= k-th largest true pre, so every
// true top-k latent (and every latent tied with the k-th) is a candidate; rescoring applies the
// lower-index tie rule.
//
// Layout: xb [rows16, Kp] bf16 (x' = x - b_dec rounded, rows padded to 16, d_in to Kp = 16m),
// Wb [Kp, Np] bf16 (W_enc rounded, d_sae padded to Np = 8m, zeros in the padding). One warp
// per 16-row tile, two passes over the n-tiles: pass 1 keeps each row's k largest lower bounds
// (shared memory; row owner lanes insert), pass 2 appends candidates (ascending latent) to a
// per-row list of CAP entries in global memory; a row that overflows is marked and rescored
// over all latents by the rescoring kernel.
#pragma once
#include <cstdint>

#include "compat.h"
#include "mma.cuh"
#include "preactivation.cuh"
#include "warp_topk.cuh"

namespace saekit::cuda {

constexpr int SCREEN_MAX_K = 64;

/** Per row: x' in bf16 (padded), ||x'||, ||x' - x~||. One warp per row; rows16 rows (pad rows zero). */
__global__ void screen_prep_rows_kernel(const float* __restrict__ x, const float* __restrict__ b_dec, int apply_b_dec, int rows, int rows16, int d_in, int Kp,
                                        uint16_t* __restrict__ xb, float* __restrict__ rnorm, float* __restrict__ rerr) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int nwarps = static_cast<int>(gridDim.x * blockDim.x) / 32;
  for (int r = warp; r < rows16; r += nwarps) {
    float n2 = 0.f, e2 = 0.f;
    for (int i = lane; i < Kp; i += 32) {
      float v = 0.f;
      if (r < rows && i < d_in) v = apply_b_dec ? x[static_cast<int64_t>(r) * d_in + i] - b_dec[i] : x[static_cast<int64_t>(r) * d_in + i];
      const uint16_t b = bf16_bits(v);
      xb[static_cast<int64_t>(r) * Kp + i] = b;
      const float d = v - bf16_to_float(b);
      n2 += v * v;
      e2 += d * d;
    }
    for (int m = 16; m >= 1; m >>= 1) {
      n2 += __shfl_xor_sync(0xffffffffu, n2, m);
      e2 += __shfl_xor_sync(0xffffffffu, e2, m);
    }
    if (lane == 0) {
      rnorm[r] = sqrtf(n2);
      rerr[r] = sqrtf(e2);
    }
  }
}

/**
 * Screening: for each 16-row tile, candidates per row into cand [rows16, cap] with counts in
 * ncand [rows16] (cap + 1 = overflow). werr[j] = ||w_j - w~_j||, wtil[j] = ||w~_j||.
 * blockDim.x = 32 (one warp per block).
 */
__global__ void screen_candidates_kernel(const uint16_t* __restrict__ xb, const uint16_t* __restrict__ Wb, const float* __restrict__ b_enc,
                                         const float* __restrict__ rnorm, const float* __restrict__ rerr, const float* __restrict__ werr,
                                         const float* __restrict__ wtil, int rows16, int d_in, int Kp, int d_sae, int Np, int k, int cap,
                                         int32_t* __restrict__ cand, int32_t* __restrict__ ncand) {
  __shared__ float s_low[16][SCREEN_MAX_K];
  __shared__ int s_fill[16];
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  const float slack_rel = 2.f * static_cast<float>(d_in + 2) * 5.97e-8f;  // 2 (d_in + 2) 2^-24
  for (int tile = static_cast<int>(blockIdx.x); tile * 16 < rows16; tile += static_cast<int>(gridDim.x)) {
    const int r0 = tile * 16;
    if (lane < 16) s_fill[lane] = 0;
    __syncwarp();
    // Row of output i of this lane: i = 0,1 -> r0 + g; i = 2,3 -> r0 + g + 8.
    const float xn[2] = {rnorm[r0 + g], rnorm[r0 + g + 8]};
    const float xe[2] = {rerr[r0 + g], rerr[r0 + g + 8]};
    for (int pass = 0; pass < 2; ++pass) {
      float thr[2] = {-INFINITY, -INFINITY};
      if (pass == 1) {
        for (int h = 0; h < 2; ++h) {
          const int rr = g + 8 * h;
          thr[h] = s_fill[rr] == k ? s_low[rr][k - 1] : -INFINITY;
        }
      }
      for (int n0 = 0; n0 < Np; n0 += 8) {
        float d[4] = {0.f, 0.f, 0.f, 0.f};
        for (int k0 = 0; k0 < Kp; k0 += 16) {
          uint32_t a[4], b[2];
          load_a_frag(a, xb + static_cast<int64_t>(r0) * Kp + k0, Kp);
          load_b_frag(b, Wb + static_cast<int64_t>(k0) * Np + n0, Np);
          mma_bf16_16816(d, a, b);
        }
        float low[4], up[4];
        bool valid[4];
        for (int i = 0; i < 4; ++i) {
          const int j = n0 + 2 * t + (i & 1);
          const int h = i >> 1;
          valid[i] = j < d_sae;
          // The last term covers rounding of the bias add and of the screened sum itself.
          const float bound = valid[i] ? xn[h] * werr[j] + xe[h] * wtil[j] + slack_rel * xn[h] * (wtil[j] + werr[j]) +
                                             1.2e-7f * (fabsf(d[i]) + fabsf(b_enc[j])) + 1e-30f
                                       : 0.f;
          const float s = valid[i] ? d[i] + b_enc[j] : -INFINITY;
          low[i] = s - bound;
          up[i] = s + bound;
        }
        // Each row's 8 values of this tile sit in lanes 4g..4g+3 (2 each): the row's owner
        // (t == 0 for row g, t == 1 for row g + 8) gathers them in ascending latent order.
        for (int h = 0; h < 2; ++h) {
          for (int src_t = 0; src_t < 4; ++src_t) {
            for (int e = 0; e < 2; ++e) {
              const int i = 2 * h + e;
              const float lo = __shfl_sync(0xffffffffu, low[i], 4 * g + src_t);
              const float hi = __shfl_sync(0xffffffffu, up[i], 4 * g + src_t);
              const int ok = __shfl_sync(0xffffffffu, valid[i] ? 1 : 0, 4 * g + src_t);
              if (t != h || !ok) continue;
              const int rr = g + 8 * h;
              const int j = n0 + 2 * src_t + e;
              if (pass == 0) {
                // Insert LO among the row's k largest lower bounds (descending).
                int f = s_fill[rr];
                if (f < k || lo > s_low[rr][k - 1]) {
                  int p = f < k ? f : k - 1;
                  while (p > 0 && s_low[rr][p - 1] < lo) {
                    s_low[rr][p] = s_low[rr][p - 1];
                    --p;
                  }
                  s_low[rr][p] = lo;
                  if (f < k) s_fill[rr] = f + 1;
                }
              } else if (hi >= thr[h]) {
                const int c = ncand[r0 + rr];
                if (c < cap) cand[static_cast<int64_t>(r0 + rr) * cap + c] = j;
                ncand[r0 + rr] = c < cap ? c + 1 : cap + 1;  // cap + 1: overflow, rescore every latent
              }
            }
          }
        }
      }
      __syncwarp();
    }
  }
}

/**
 * Rescoring: per row (one warp), the fp32 pre-activation of each candidate (every latent for
 * an overflowed row), exact top-k with ties to the lower index, ReLU, ascending output.
 */
__global__ void screen_rescore_kernel(const float* __restrict__ x, const float* __restrict__ W_enc, const float* __restrict__ b_enc, const float* __restrict__ b_dec,
                                      int apply_b_dec, int rows, int d_in, int d_sae, int k, int cap, const int32_t* __restrict__ cand,
                                      const int32_t* __restrict__ ncand, int32_t* __restrict__ out_indices, float* __restrict__ out_values,
                                      int32_t* __restrict__ out_count) {
  __shared__ float vals[SCREEN_MAX_K];
  __shared__ int idx[SCREEN_MAX_K];
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int row = static_cast<int>(blockIdx.x); row < rows; row += static_cast<int>(gridDim.x)) {
    const float* xr = x + static_cast<int64_t>(row) * d_in;
    const int nc = ncand[row];
    const bool all = nc > cap;
    const int total = all ? d_sae : nc;
    int filled = 0;
    for (int base = 0; base < total; base += 32) {
      const int c = base + lane;
      const int j = c < total ? (all ? c : cand[static_cast<int64_t>(row) * cap + c]) : -1;
      const float pre = j >= 0 ? preactivation_f32(xr, W_enc, b_enc, b_dec, apply_b_dec, d_in, d_sae, j) : -INFINITY;
      warp_topk_merge(pre, j, vals, idx, k, filled);
    }
    warp_topk_emit(vals, idx, filled, k, row, out_indices, out_values, out_count);
  }
}

}  // namespace saekit::cuda
