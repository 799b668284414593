// The training step's kernels (issue 20): topk, batchtopk, standard and jumprelu SAEs. The host
// side is native/cuda/cuda_trainer.h, the math native/cpu/cpu_trainer.cpp's header comment
// (written once for every backend).
//
// Deterministic by construction: no kernel here uses atomics. Every sum has one owner thread or
// one block, and a block's partial sums meet in a fixed order (block_sums below: thread order,
// which depends only on blockDim), so a step's results are the same run to run on one card:
//   - per-row sums (residual, ||e||^2, dL/dpre = g . W_dec[j]): one block per row;
//   - per-latent gradients (dW_dec[j], dW_enc[:, j], db_enc[j]): one block per latent over that
//     latent's entries, listed latent-major in a fixed order (rows ascending, main selection
//     before AuxK's) by a host-side counting sort: the scatter of a (row, latent) pair into its
//     latent's row happens by gathering, never by atomicAdd;
//   - db_dec[c]: one block per column, over rows and latents in fixed strides;
//   - the gradient norm: one block over the per-latent squared norms.
// Under the CPU emulation (../emu/cuda_emu.h) the same source runs in CI.
#pragma once
#include <cstdint>

#include "compat.h"
#include "preactivation.cuh"
#include "warp_topk.cuh"

namespace saekit::cuda {

// Block sizes: powers of two up to TRAIN_MAX_THREADS (the reduction trees below need both).
constexpr int TRAIN_MAX_THREADS = 256;
// AuxK's per-row list (one warp per row, in shared memory); larger k_aux is refused by the host
// unless every dead latent is selected (then no list is kept).
constexpr int TRAIN_AUX_MAX_K = 1024;

/**
 * N sums over the block at once, the same in every thread: each thread stores its N partials
 * in SH[N * blockDim], then thread i < N adds the partials of sum i in thread order (one fixed
 * order, no tree whose shape could vary) and all threads read the results. Three barriers
 * whatever N: the per-entry dot products of a row go through here eight at a time.
 */
template <class T, int N>
__device__ __forceinline__ void block_sums(T (&v)[N], T* sh) {
  const int tid = static_cast<int>(threadIdx.x), n = static_cast<int>(blockDim.x);
  for (int i = 0; i < N; ++i) sh[i * n + tid] = v[i];
  __syncthreads();
  if (tid < N) {
    T acc = 0;
    for (int t = 0; t < n; ++t) acc += sh[tid * n + t];
    sh[tid * n] = acc;  // only this thread reads this segment
  }
  __syncthreads();
  for (int i = 0; i < N; ++i) v[i] = sh[i * n];
  __syncthreads();  // SH is reused by the next call
}

template <class T>
__device__ __forceinline__ T block_sum(T v, T* sh) {
  T a[1] = {v};
  block_sums(a, sh);
  return a[0];
}

// Dot products per block_sums call in the residual kernel.
constexpr int TRAIN_DOTS = 8;

/** xs = s x, xp = xs - b_dec (elementwise, grid-stride). */
__global__ void train_prep_kernel(const float* __restrict__ x, const float* __restrict__ b_dec, int64_t rows, int d, float s, float* __restrict__ xs,
                                  float* __restrict__ xp) {
  const int64_t n = rows * d;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float v = s * x[i];
    xs[i] = v;
    xp[i] = v - b_dec[i % d];
  }
}

/** mean[c] = (1/rows) sum_n t[n, c] in float64, rows in order (one thread per column). */
__global__ void train_col_mean_kernel(const float* __restrict__ t, int rows, int d, double* __restrict__ mean) {
  for (int c = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); c < d; c += static_cast<int>(gridDim.x * blockDim.x)) {
    double acc = 0;
    for (int n = 0; n < rows; ++n) acc += t[static_cast<int64_t>(n) * d + c];
    mean[c] = acc / rows;
  }
}

/**
 * AuxK's selection: per row, the top-K of pre over the latents DEAD[0..D) (ascending latent
 * ids), positive values only, ties to the lower latent (the CPU rule), written as K slots per
 * row in ascending latent order with the row's count. ALL_POSITIVE (K = D): every positive
 * value, no list. One warp per block (blockDim.x = 32), grid-stride over rows.
 */
__global__ void train_aux_topk_kernel(const float* __restrict__ xp, const float* __restrict__ W_enc, const float* __restrict__ b_enc,
                                      const int32_t* __restrict__ dead, int D, int rows, int d_in, int d_sae, int k, int all_positive,
                                      int32_t* __restrict__ out_indices, float* __restrict__ out_values, int32_t* __restrict__ out_count) {
  __shared__ float s_val[TRAIN_AUX_MAX_K];
  __shared__ int s_idx[TRAIN_AUX_MAX_K];
  const int lane = static_cast<int>(threadIdx.x) % 32;
  for (int row = static_cast<int>(blockIdx.x); row < rows; row += static_cast<int>(gridDim.x)) {
    const float* xr = xp + static_cast<int64_t>(row) * d_in;
    int filled = 0;
    for (int base = 0; base < D; base += 32) {
      const int q = base + lane;
      const int j = q < D ? dead[q] : -1;
      const float pre = j >= 0 ? preactivation_f32(xr, W_enc, b_enc, nullptr, 0, d_in, d_sae, j) : -INFINITY;
      if (all_positive) {
        // Lanes in latent order: each positive value goes to the next slot.
        const unsigned pos = __ballot_sync(0xffffffffu, j >= 0 && pre > 0.f);
        if (j >= 0 && pre > 0.f) {
          const int at = filled + __popc(pos & ((1u << lane) - 1u));
          out_indices[static_cast<int64_t>(row) * k + at] = j;
          out_values[static_cast<int64_t>(row) * k + at] = pre;
        }
        filled += __popc(pos);
      } else {
        warp_topk_merge(pre, j, s_val, s_idx, k, filled);
      }
    }
    if (all_positive) {
      if (lane == 0) out_count[row] = filled;
      __syncwarp();
    } else {
      warp_topk_emit(s_val, s_idx, filled, k, row, out_indices, out_values, out_count);
    }
  }
}

/** A row's selection: its slots in VAL / IDX / DPRE. */
struct RowSlots {
  const int32_t* count;    // k-slot layout: row n's entries are slots n * kslots .. + count[n]
  int kslots;
  const uint32_t* offsets;  // CSR layout (when not null): row n's entries are offsets[n] .. offsets[n + 1]
  __device__ __forceinline__ int64_t first(int row) const { return offsets != nullptr ? offsets[row] : static_cast<int64_t>(row) * kslots; }
  __device__ __forceinline__ int size(int row) const { return offsets != nullptr ? static_cast<int>(offsets[row + 1] - offsets[row]) : count[row]; }
};

/**
 * One level of residuals, one block per row (grid-stride):
 *   r = base_row + sum_p val_p W_dec[idx_p] - sub_row   (fp32, entries in slot order)
 *   E_row = r (when E), U_row = g_scale r, err2[row] = ||r||^2 (float64),
 *   dev2[row] = ||sub_row - mean||^2 (when mean: FVU's denominator),
 *   dpre[slot p] = U_row . W_dec[idx_p] (+ dpre_add[idx_p] when given: standard's L1 term).
 * BASE_STRIDE 0 broadcasts one row (b_dec); SUB may be null (AuxK: r = e + ehat).
 */
__global__ void train_residual_kernel(const float* __restrict__ base, int64_t base_stride, const float* __restrict__ sub, const double* __restrict__ mean,
                                      const float* __restrict__ W_dec, const int32_t* __restrict__ idx, const float* __restrict__ val, RowSlots slots,
                                      int rows, int d, float g_scale, const float* __restrict__ dpre_add, float* __restrict__ E, float* __restrict__ U,
                                      double* __restrict__ err2, double* __restrict__ dev2, float* __restrict__ dpre) {
  __shared__ double s_d[2 * TRAIN_MAX_THREADS];
  __shared__ float s_f[TRAIN_DOTS * TRAIN_MAX_THREADS];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  for (int row = static_cast<int>(blockIdx.x); row < rows; row += static_cast<int>(gridDim.x)) {
    const int64_t off = static_cast<int64_t>(row) * d;
    const int64_t soff = slots.first(row);
    const int cnt = slots.size(row);
    double sums[2] = {0, 0};  // ||r||^2, ||sub - mean||^2
    for (int c = tid; c < d; c += nt) {
      float acc = base[row * base_stride + c];
      for (int p = 0; p < cnt; ++p) acc = fmaf(val[soff + p], W_dec[static_cast<int64_t>(idx[soff + p]) * d + c], acc);
      if (sub != nullptr) {
        acc -= sub[off + c];
        if (mean != nullptr) {
          const double t = sub[off + c] - mean[c];
          sums[1] += t * t;
        }
      }
      if (E != nullptr) E[off + c] = acc;
      U[off + c] = g_scale * acc;
      sums[0] += static_cast<double>(acc) * acc;
    }
    block_sums(sums, s_d);
    if (tid == 0) {
      err2[row] = sums[0];
      if (dev2 != nullptr) dev2[row] = sums[1];
    }
    // dL/dpre of the row's entries, TRAIN_DOTS at a time (each thread reads back its own U columns).
    for (int p0 = 0; p0 < cnt; p0 += TRAIN_DOTS) {
      float dots[TRAIN_DOTS];
      for (int q = 0; q < TRAIN_DOTS; ++q) dots[q] = 0.f;
      for (int q = 0; q < TRAIN_DOTS && p0 + q < cnt; ++q) {
        const float* w = W_dec + static_cast<int64_t>(idx[soff + p0 + q]) * d;
        for (int c = tid; c < d; c += nt) dots[q] = fmaf(U[off + c], w[c], dots[q]);
      }
      block_sums(dots, s_f);
      if (tid == 0)
        for (int q = 0; q < TRAIN_DOTS && p0 + q < cnt; ++q) dpre[soff + p0 + q] = dpre_add != nullptr ? dots[q] + dpre_add[idx[soff + p0 + q]] : dots[q];
    }
  }
}

/**
 * Per-latent gradients, one block per latent (grid-stride), over the latent's entries
 * OFFSETS[j]..OFFSETS[j+1] (each: its upstream row of U, its x' row, its slot in VAL / DPRE):
 *   dW_dec[j] = sum_e val_e U[urow_e]      (then, if UNIT_DECODER, minus its component along W_dec[j])
 *   dWt[j]    = sum_e dpre_e XP[xrow_e]    (latent-major: the transpose of dW_enc's column j)
 *   db_enc[j] = sum_e dpre_e               (float64, in entry order)
 *   row_sq[j] = ||dW_dec[j]||^2 + ||dWt[j]||^2 + db_enc[j]^2 (after the projection)
 * With L1_NORM (standard's penalty lambda/B sum f_nj ||W_dec[j]||, L1_SCALE = lambda / B, L1_NORM
 * the rows' norms): dW_dec[j] += float(L1_SCALE (sum_e f_e) / ||W_dec[j]||) W_dec[j] where the
 * norm is > 0 (the CPU trainer's formula, the value sum in float64 in entry order).
 * A latent without entries gets zero rows.
 */
__global__ void train_latent_grads_kernel(const int32_t* __restrict__ offsets, const int32_t* __restrict__ ent_urow, const int32_t* __restrict__ ent_xrow,
                                          const int32_t* __restrict__ ent_slot, const float* __restrict__ val, const float* __restrict__ dpre,
                                          const float* __restrict__ U, const float* __restrict__ XP, const float* __restrict__ W_dec, int d_sae, int d,
                                          int unit_decoder, const float* __restrict__ l1_norm, float l1_scale, float* __restrict__ gWdec,
                                          float* __restrict__ gWt, float* __restrict__ gb_enc, double* __restrict__ row_sq) {
  __shared__ double s_d[TRAIN_MAX_THREADS];
  __shared__ float s_f[TRAIN_MAX_THREADS];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  for (int j = static_cast<int>(blockIdx.x); j < d_sae; j += static_cast<int>(gridDim.x)) {
    const int e0 = offsets[j], e1 = offsets[j + 1];
    float* gd = gWdec + static_cast<int64_t>(j) * d;
    float* ge = gWt + static_cast<int64_t>(j) * d;
    const float* w = W_dec + static_cast<int64_t>(j) * d;
    if (e0 == e1) {
      for (int c = tid; c < d; c += nt) gd[c] = ge[c] = 0.f;
      if (tid == 0) gb_enc[j] = 0.f, row_sq[j] = 0.0;
      continue;
    }
    float l1_coef = 0.f;  // the same in every thread: each sums the values in entry order
    if (l1_norm != nullptr && l1_norm[j] > 0.f) {
      double fs = 0;
      for (int e = e0; e < e1; ++e) fs += val[ent_slot[e]];
      l1_coef = static_cast<float>(l1_scale * fs / l1_norm[j]);
    }
    float gw = 0.f, ww = 0.f;
    for (int c = tid; c < d; c += nt) {
      float a = 0.f, b = 0.f;
      for (int e = e0; e < e1; ++e) {
        a = fmaf(val[ent_slot[e]], U[static_cast<int64_t>(ent_urow[e]) * d + c], a);
        b = fmaf(dpre[ent_slot[e]], XP[static_cast<int64_t>(ent_xrow[e]) * d + c], b);
      }
      if (l1_coef != 0.f) a = fmaf(l1_coef, w[c], a);
      gd[c] = a;
      ge[c] = b;
      gw = fmaf(a, w[c], gw);
      ww = fmaf(w[c], w[c], ww);
    }
    float gww[2] = {gw, ww};
    block_sums(gww, s_f);
    gw = gww[0], ww = gww[1];
    const float alpha = unit_decoder && ww > 0.f ? -gw / ww : 0.f;
    double sq = 0;
    for (int c = tid; c < d; c += nt) {
      const float g = fmaf(alpha, w[c], gd[c]);
      gd[c] = g;
      sq += static_cast<double>(g) * g + static_cast<double>(ge[c]) * ge[c];
    }
    sq = block_sum(sq, s_d);
    if (tid == 0) {
      double gb = 0;
      for (int e = e0; e < e1; ++e) gb += dpre[ent_slot[e]];
      const float gbf = static_cast<float>(gb);
      gb_enc[j] = gbf;
      row_sq[j] = sq + static_cast<double>(gbf) * gbf;
    }
  }
}

/**
 * db_dec[c] = sum_{n < rows} U[n, c] - sum_j db_enc[j] W_enc[c, j]  (b_dec enters x_hat and x'),
 * float64, one block per column (grid-stride); out_sq[c] = db_dec[c]^2 for the gradient norm.
 */
__global__ void train_bdec_grad_kernel(const float* __restrict__ U, int rows, const float* __restrict__ gb_enc, const float* __restrict__ W_enc, int d_sae,
                                       int d, float* __restrict__ gb_dec, double* __restrict__ out_sq) {
  __shared__ double s_d[TRAIN_MAX_THREADS];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  for (int c = static_cast<int>(blockIdx.x); c < d; c += static_cast<int>(gridDim.x)) {
    double acc = 0;
    for (int n = tid; n < rows; n += nt) acc += U[static_cast<int64_t>(n) * d + c];
    const float* wr = W_enc + static_cast<int64_t>(c) * d_sae;
    for (int j = tid; j < d_sae; j += nt) acc -= static_cast<double>(gb_enc[j]) * wr[j];
    acc = block_sum(acc, s_d);
    if (tid == 0) {
      const float g = static_cast<float>(acc);
      gb_dec[c] = g;
      out_sq[c] = static_cast<double>(g) * g;
    }
  }
}

/** out [cols, rows] = in [rows, cols]^T through 32 x 32 shared tiles; blockDim (32, any y dividing 32), grid-stride over tiles. */
__global__ void train_transpose_kernel(const float* __restrict__ in, int rows, int cols, float* __restrict__ out) {
  __shared__ float tile[32][33];
  const int tx = static_cast<int>(threadIdx.x), ty = static_cast<int>(threadIdx.y);
  const int tiles_x = (cols + 31) / 32, tiles_y = (rows + 31) / 32;
  for (int t = static_cast<int>(blockIdx.x); t < tiles_x * tiles_y; t += static_cast<int>(gridDim.x)) {
    const int c0 = (t % tiles_x) * 32, r0 = (t / tiles_x) * 32;
    for (int r = ty; r < 32; r += static_cast<int>(blockDim.y))
      if (r0 + r < rows && c0 + tx < cols) tile[r][tx] = in[static_cast<int64_t>(r0 + r) * cols + c0 + tx];
    __syncthreads();
    for (int c = ty; c < 32; c += static_cast<int>(blockDim.y))
      if (c0 + c < cols && r0 + tx < rows) out[static_cast<int64_t>(c0 + c) * rows + r0 + tx] = tile[tx][c];
    __syncthreads();
  }
}

/** out[0] = sum of in[0..n) in float64: one block, fixed strides and tree. */
__global__ void train_sum_kernel(const double* __restrict__ in, int64_t n, double* __restrict__ out) {
  __shared__ double s_d[TRAIN_MAX_THREADS];
  double acc = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) acc += in[i];
  acc = block_sum(acc, s_d);
  if (threadIdx.x == 0) out[0] = acc;
}

/** One parameter tensor for the fused Adam kernel. */
struct AdamSegment {
  float* p;
  float* m;
  float* v;
  const float* g;
  int64_t n;
};
constexpr int TRAIN_ADAM_MAX_SEGMENTS = 6;
struct AdamSegments {
  AdamSegment s[TRAIN_ADAM_MAX_SEGMENTS];
  int count;
};

/**
 * Adam (bias-corrected; the CPU trainer's float formula) over every parameter in one launch:
 * g = gscale grad; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= lr (m/c1) / (sqrt(v/c2) + eps).
 * Elementwise, so the grid-stride order does not matter.
 */
__global__ void train_adam_kernel(AdamSegments segs, float gscale, float lr, float b1, float b2, float inv_c1, float inv_c2, float eps) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int s = 0; s < segs.count; ++s) {
    const AdamSegment sg = segs.s[s];
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < sg.n; i += stride) {
      const float g = sg.g[i] * gscale;
      const float mi = b1 * sg.m[i] + (1.0f - b1) * g;
      const float vi = b2 * sg.v[i] + (1.0f - b2) * g * g;
      sg.m[i] = mi;
      sg.v[i] = vi;
      sg.p[i] -= lr * (mi * inv_c1) / (sqrtf(vi * inv_c2) + eps);
    }
  }
}

/**
 * jumprelu's window: out[q] = U[urow[q]] . W_dec[latent[q]] for each of M pairs, one block per
 * pair (grid-stride), fp32 in column strides then block_sums.
 */
__global__ void train_pair_dots_kernel(const float* __restrict__ U, const float* __restrict__ W_dec, const int32_t* __restrict__ urow,
                                       const int32_t* __restrict__ latent, int m, int d, float* __restrict__ out) {
  __shared__ float s_f[TRAIN_MAX_THREADS];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  for (int q = static_cast<int>(blockIdx.x); q < m; q += static_cast<int>(gridDim.x)) {
    const float* u = U + static_cast<int64_t>(urow[q]) * d;
    const float* w = W_dec + static_cast<int64_t>(latent[q]) * d;
    float acc = 0.f;
    for (int c = tid; c < d; c += nt) acc = fmaf(u[c], w[c], acc);
    acc = block_sum(acc, s_f);
    if (tid == 0) out[q] = acc;
  }
}

/** float(sqrt(||W[r]||^2)) per row, the square summed in float64: standard's decoder-row norms. */
__global__ void train_row_norms_kernel(const float* __restrict__ W, int rows, int d, float* __restrict__ norm) {
  __shared__ double s_d[TRAIN_MAX_THREADS];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  for (int r = static_cast<int>(blockIdx.x); r < rows; r += static_cast<int>(gridDim.x)) {
    const float* w = W + static_cast<int64_t>(r) * d;
    double sq = 0;
    for (int c = tid; c < d; c += nt) sq += static_cast<double>(w[c]) * w[c];
    sq = block_sum(sq, s_d);
    if (tid == 0) norm[r] = static_cast<float>(sqrt(sq));
  }
}

/** Decoder rows back to unit norm (a zero row stays zero): one block per row, float64 norm. */
__global__ void train_renorm_kernel(float* __restrict__ W, int rows, int d) {
  __shared__ double s_d[TRAIN_MAX_THREADS];
  const int tid = static_cast<int>(threadIdx.x), nt = static_cast<int>(blockDim.x);
  for (int r = static_cast<int>(blockIdx.x); r < rows; r += static_cast<int>(gridDim.x)) {
    float* w = W + static_cast<int64_t>(r) * d;
    double sq = 0;
    for (int c = tid; c < d; c += nt) sq += static_cast<double>(w[c]) * w[c];
    sq = block_sum(sq, s_d);
    if (sq > 0) {
      const float scale = static_cast<float>(1.0 / sqrt(sq));
      for (int c = tid; c < d; c += nt) w[c] = scale * w[c];
    }
  }
}

}  // namespace saekit::cuda
