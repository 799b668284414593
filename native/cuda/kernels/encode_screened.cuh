// Exact top-k encode on the tensor cores: screen every latent with bf16 mma (fp32 accumulate),
// keep as candidates the latents whose screened score plus an error bound reaches the row's
// k-th largest lower bound, rescore the candidates in fp32 and take the exact top-k among them
// (the CPU's screen.h scheme, on a GPU). The bound, per row r and latent j, for the screened
// dot d = x~.w~_j (x' = x - b_dec, x~ and w~ their bf16 roundings):
//   |x'.w_j - d| <= ||x'|| ||w_j - w~_j|| + ||x' - x~|| ||w~_j||        (Cauchy-Schwarz)
//                 + 2 (d_in + 2) 2^-24 ||x~|| ||w~_j||                   (fp32 accumulation)
// with ||x~|| <= ||x'|| + ||x' - x~||; the factor 2 also covers an accumulator that truncates
// instead of rounding (the tensor cores' internal order and rounding are not documented), and
// a 6 u (|d| + |b_j|) term covers the bias add and the interval arithmetic. The norms are
// computed in fp32 and inflated by 1e-4, far above their own rounding. With low = s - bound,
// up = s + bound (s = d + b_j): T = k-th largest low <= k-th largest exact value, so every
// latent of the exact top k (and every latent tied with the k-th) has up >= T. Rescoring
// applies the lower-index tie rule.
//
// Tiling (screen_candidates_kernel): a block owns SCREEN_BM rows and walks every latent tile of
// SCREEN_BN, k-steps of SCREEN_BK staged in shared memory by cp.async (two stages: the next
// step's copies fly while the tensor cores work), fragments by ldmatrix, 8 warps in a 4 x 2
// grid, each a 32 x 64 tile of m16n8k16 mma (64 fp32 accumulators per thread). The dense
// screened matrix never leaves registers: after each latent tile the epilogue appends, per
// row, the latents with up >= the row's running threshold to a candidate list in global memory
// (capacity CAP, > SCREEN_BN); a row whose list cannot take another tile is compacted by one
// warp: its threshold rises to the k-th largest low among the list (exact: every latent left
// out had up < an earlier threshold, so its low cannot be among the k largest), and entries
// with up below it go. A row whose list still cannot take a tile is marked overflowed and
// rescored over every latent. The running threshold only rises, so the final candidate set is
// exactly {up >= k-th largest low over all latents}.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "compat.h"
#include "cp_async.cuh"
#include "encode_threshold.cuh"
#include "mma.cuh"
#include "warp_topk.cuh"

namespace saekit::cuda {

constexpr int SCREEN_MAX_K = 64;
constexpr int SCREEN_BM = 128, SCREEN_BN = 128, SCREEN_BK = 32;
constexpr int SCREEN_WARPS_M = 4, SCREEN_WARPS_N = 2, SCREEN_WARPS = SCREEN_WARPS_M * SCREEN_WARPS_N;
constexpr int SCREEN_THREADS = 32 * SCREEN_WARPS;
constexpr int SCREEN_WM = SCREEN_BM / SCREEN_WARPS_M, SCREEN_WN = SCREEN_BN / SCREEN_WARPS_N;  // 32 x 64 per warp
constexpr int SCREEN_MT = SCREEN_WM / 16, SCREEN_NT = SCREEN_WN / 8;                             // 2 x 8 mma tiles
// Shared-memory row stride in bf16: 80 bytes keeps rows 16-byte aligned for cp.async and puts
// the 8 rows an ldmatrix reads in 8 different 16-byte bank groups (no conflicts).
constexpr int SCREEN_LDS = SCREEN_BK + 8;
// Candidate list capacity per row: one latent tile plus room for the k kept and near ties.
constexpr int SCREEN_MAX_CAP = 256;
inline int screen_default_cap(int k) { return SCREEN_BN + 2 * (k > 32 ? k : 32); }
// The threshold architectures keep every admitted latent (no compaction): room for ~384
// (L0 ~ 50-150 for Gemma Scope-like SAEs, plus the latents near their threshold).
constexpr int SCREEN_THRESHOLD_CAP = SCREEN_BN + 384;

/** The bf16 screen's copy of W_enc and the per-latent norms its bound needs (host-side packing). */
struct ScreenWeights {
  int Kp = 0, Np = 0;             // d_in padded to SCREEN_BK, d_sae padded to SCREEN_BN
  std::vector<uint16_t> Wt;       // [Np, Kp] bf16, latent-major, zero padded
  std::vector<float> WT;          // [d_sae, d_in] fp32, latent-major: the rescoring's rows
  std::vector<float> werr, wtil;  // ||w_j - w~_j||, ||w~_j|| (inflated by 1e-4)
};

/** W_enc is [d_in, d_sae] row-major, or [d_sae, d_in] when ENC_TRANSPOSED. */
inline ScreenWeights screen_pack_weights(const float* W_enc, bool enc_transposed, int d_in, int d_sae) {
  ScreenWeights s;
  s.Kp = (d_in + SCREEN_BK - 1) / SCREEN_BK * SCREEN_BK;
  s.Np = (d_sae + SCREEN_BN - 1) / SCREEN_BN * SCREEN_BN;
  s.Wt.assign(static_cast<size_t>(s.Np) * s.Kp, 0);
  s.WT.resize(static_cast<size_t>(d_sae) * d_in);
  s.werr.resize(d_sae);
  s.wtil.resize(d_sae);
  for (int j = 0; j < d_sae; ++j) {
    double e2 = 0, t2 = 0;
    for (int i = 0; i < d_in; ++i) {
      const float v = enc_transposed ? W_enc[static_cast<size_t>(j) * d_in + i] : W_enc[static_cast<size_t>(i) * d_sae + j];
      const uint16_t b = bf16_bits(v);
      s.Wt[static_cast<size_t>(j) * s.Kp + i] = b;
      s.WT[static_cast<size_t>(j) * d_in + i] = v;
      const double q = bf16_to_float(b), d = static_cast<double>(v) - q;
      e2 += d * d;
      t2 += q * q;
    }
    s.werr[j] = static_cast<float>(std::sqrt(e2) * 1.0001);
    s.wtil[j] = static_cast<float>(std::sqrt(t2) * 1.0001);
  }
  return s;
}

/** Per row: x' in bf16 (padded with zero rows and columns), ||x'||, ||x' - x~||. One warp per row. */
__global__ void screen_prep_rows_kernel(const float* __restrict__ x, const float* __restrict__ b_dec, int apply_b_dec, int rows, int rows_pad, int d_in,
                                        int Kp, uint16_t* __restrict__ xb, float* __restrict__ rnorm, float* __restrict__ rerr) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int nwarps = static_cast<int>(gridDim.x * blockDim.x) / 32;
  for (int r = warp; r < rows_pad; r += nwarps) {
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
      rnorm[r] = sqrtf(n2) * 1.0001f;
      rerr[r] = sqrtf(e2) * 1.0001f;
    }
  }
}

/** The interval [low, up] that holds latent J's exact pre-activation, from its screened dot D (see the top). */
__device__ __forceinline__ void screen_interval(float d, float b, float werr, float wtil, float xn, float xe, float slack_rel, float* low, float* up) {
  const float s = d + b;
  const float bound = xn * werr + xe * wtil + slack_rel * (xn + xe) * wtil + 3.6e-7f * (fabsf(d) + fabsf(b)) + 1e-30f;
  *low = s - bound;
  *up = s + bound;
}

/** A float's bits mapped so that unsigned order is float order (finite values and infinities). */
__device__ __forceinline__ uint32_t order_key(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_value(uint32_t key) {
  const uint32_t u = (key & 0x80000000u) ? (key & 0x7fffffffu) : ~key;
  float f;
  memcpy(&f, &u, 4);
  return f;
}


/**
 * The K-th largest of the warp's keys, bit by bit from the top: the largest key with at least
 * K keys at or above it. COUNT_AT_LEAST(c) = how many of this lane's keys are >= c. The warp
 * must hold at least K keys.
 */
template <class CountAtLeast>
__device__ __forceinline__ uint32_t warp_kth_largest_key(int k, CountAtLeast count_at_least) {
  uint32_t key = 0;
  for (int bit = 31; bit >= 0; --bit) {
    const uint32_t c = key | (1u << bit);
    if (__reduce_add_sync(0xffffffffu, static_cast<unsigned>(count_at_least(c))) >= static_cast<unsigned>(k)) key = c;
  }
  return key;
}

/**
 * One warp compacts one row's candidate list (N entries of screened dot CD and latent CJ):
 * THR rises to the k-th largest low among the entries (when there are at least K), and the
 * entries with up >= THR are kept, in order. Returns the new count (same in every lane).
 */
__device__ __forceinline__ int screen_compact_row(float* cd, int32_t* cj, int n, int k, float* thr, const float* __restrict__ b_enc,
                                                  const float* __restrict__ werr, const float* __restrict__ wtil, float xn, float xe, float slack_rel) {
  constexpr int PER_LANE = SCREEN_MAX_CAP / 32;
  const int lane = static_cast<int>(threadIdx.x) % 32;
  float d[PER_LANE], low[PER_LANE], up[PER_LANE];
  int j[PER_LANE];
  SAEKIT_UNROLL
  for (int q = 0; q < PER_LANE; ++q) {
    const int e = lane + 32 * q;
    j[q] = e < n ? cj[e] : -1;
    d[q] = e < n ? cd[e] : 0.f;
    low[q] = up[q] = -INFINITY;
    if (j[q] >= 0) screen_interval(d[q], b_enc[j[q]], werr[j[q]], wtil[j[q]], xn, xe, slack_rel, &low[q], &up[q]);
  }
  float t = *thr;
  if (n >= k) {
    const uint32_t key = warp_kth_largest_key(k, [&](uint32_t c) {
      int cnt = 0;
      SAEKIT_UNROLL
      for (int q = 0; q < PER_LANE; ++q) cnt += j[q] >= 0 && order_key(low[q]) >= c;
      return cnt;
    });
    t = fmaxf(t, key_value(key));  // the k-th largest low
  }
  __syncwarp();  // every lane has read its entries before any is overwritten
  int kept = 0;
  SAEKIT_UNROLL
  for (int q = 0; q < PER_LANE; ++q) {
    const bool keep = j[q] >= 0 && up[q] >= t;
    const unsigned mask = __ballot_sync(0xffffffffu, keep);
    if (keep) {
      const int pos = kept + __popc(mask & ((1u << lane) - 1u));
      cd[pos] = d[q];
      cj[pos] = j[q];
    }
    kept += __popc(mask);
  }
  __syncwarp();
  if (lane == 0) *thr = t;
  return kept;
}

/**
 * Screening: candidates of every row into cand_d / cand_j [parts, rows_pad, cap] (screened
 * dot, latent) with counts in ncand [parts, rows_pad] (cap + 1 = overflow: rescore every
 * latent); the padding rows (rows..rows_pad, rows_pad a multiple of SCREEN_BM) are skipped.
 * xb [rows_pad, Kp], Wt [Np, Kp] bf16 (Kp % SCREEN_BK == 0, Np % SCREEN_BN == 0).
 * SCREEN_BN < cap <= SCREEN_MAX_CAP; blockDim.x = SCREEN_THREADS.
 *
 * Latent split: gridDim.y = parts; block (x, p) screens the p-th of `parts` ranges of latent
 * tiles into list p, with its own running threshold. A batch of few rows (a row tile or two)
 * then still fills the card; screen_merge_kernel joins the lists (parts == 1: no merge).
 *
 * ADMIT != nullptr: the threshold architectures (standard, jumprelu). A latent is a candidate
 * when up >= admit[j] (max(threshold_j, 0), or 0), the only way its exact value can pass; all
 * of them are needed, so lists are never compacted and a row that fills its list overflows.
 * Any cap > SCREEN_BN then works (no per-lane arrays).
 */
// Two blocks per SM, so one block's copies and epilogue overlap the other's mma: at most 128
// registers. Unbounded, ptxas (nvcc 13) took 156 on sm_80 (one block per SM); bounded it
// spills at most a few bytes (12 on sm_90 today), the cheaper side of that trade.
__global__ void __launch_bounds__(SCREEN_THREADS, 2) screen_candidates_kernel(const uint16_t* __restrict__ xb, const uint16_t* __restrict__ Wt, const float* __restrict__ b_enc,
                                         const float* __restrict__ rnorm, const float* __restrict__ rerr, const float* __restrict__ werr,
                                         const float* __restrict__ wtil, const float* __restrict__ admit, int rows, int rows_pad, int d_in, int Kp, int d_sae,
                                         int Np, int k, int cap, float* __restrict__ cand_d, int32_t* __restrict__ cand_j, int32_t* __restrict__ ncand) {
  __shared__ __align__(16) uint16_t sA[2][SCREEN_BM * SCREEN_LDS];
  __shared__ __align__(16) uint16_t sB[2][SCREEN_BN * SCREEN_LDS];
  __shared__ float s_thr[SCREEN_BM], s_xn[SCREEN_BM], s_xe[SCREEN_BM];
  __shared__ int s_cnt[SCREEN_BM], s_over[SCREEN_BM];
  const int tid = static_cast<int>(threadIdx.x), lane = tid % 32, warp = tid / 32;
  const int wm = warp / SCREEN_WARPS_N, wn = warp % SCREEN_WARPS_N, g = lane / 4, t4 = lane % 4;
  const float slack_rel = 2.f * static_cast<float>(d_in + 2) * 5.97e-8f;
  const int n_tiles = Np / SCREEN_BN, per_part = (n_tiles + static_cast<int>(gridDim.y) - 1) / static_cast<int>(gridDim.y);
  const int nt0 = static_cast<int>(blockIdx.y) * per_part, nt1 = nt0 + per_part < n_tiles ? nt0 + per_part : n_tiles;
  const int k_tiles = Kp / SCREEN_BK, steps = nt1 > nt0 ? k_tiles * (nt1 - nt0) : 0;
  const int64_t list0 = static_cast<int64_t>(blockIdx.y) * rows_pad;  // this part's lists and counts
  for (int tile = static_cast<int>(blockIdx.x); tile * SCREEN_BM < rows_pad; tile += static_cast<int>(gridDim.x)) {
    const int r0 = tile * SCREEN_BM;
    for (int r = tid; r < SCREEN_BM; r += SCREEN_THREADS) {
      s_thr[r] = -INFINITY;
      s_cnt[r] = 0;
      s_over[r] = r0 + r >= rows;  // padding: no candidates, no compaction
      s_xn[r] = rnorm[r0 + r];
      s_xe[r] = rerr[r0 + r];
    }
    // Step S stages k-tile S % k_tiles of latent tile S / k_tiles: 128 rows x 64 bytes of each
    // operand, 512 16-byte copies each, two of each per thread.
    auto stage_copy = [&](int step, int stage) {
      const int n0 = (nt0 + step / k_tiles) * SCREEN_BN, k0 = (step % k_tiles) * SCREEN_BK;
      for (int c = tid; c < SCREEN_BM * SCREEN_BK / 8; c += SCREEN_THREADS) {
        const int row = c / (SCREEN_BK / 8), col = (c % (SCREEN_BK / 8)) * 8;
        cp_async_16(&sA[stage][row * SCREEN_LDS + col], xb + static_cast<int64_t>(r0 + row) * Kp + k0 + col);
      }
      for (int c = tid; c < SCREEN_BN * SCREEN_BK / 8; c += SCREEN_THREADS) {
        const int row = c / (SCREEN_BK / 8), col = (c % (SCREEN_BK / 8)) * 8;
        cp_async_16(&sB[stage][row * SCREEN_LDS + col], Wt + static_cast<int64_t>(n0 + row) * Kp + k0 + col);
      }
    };
    float acc[SCREEN_MT][SCREEN_NT][4];
    SAEKIT_UNROLL
    for (int mi = 0; mi < SCREEN_MT; ++mi)
      SAEKIT_UNROLL
      for (int ni = 0; ni < SCREEN_NT; ++ni)
        SAEKIT_UNROLL
        for (int i = 0; i < 4; ++i) acc[mi][ni][i] = 0.f;
    if (steps > 0) stage_copy(0, 0);
    cp_async_commit();
    for (int step = 0; step < steps; ++step) {
      const int stage = step & 1;
      if (step + 1 < steps) stage_copy(step + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();  // this step's copies have landed (the next step's may still fly)
      __syncthreads();     // ... and every other thread's
      SAEKIT_UNROLL
      for (int kk = 0; kk < SCREEN_BK; kk += 16) {
        uint32_t a[SCREEN_MT][4], b[SCREEN_NT][2];
        SAEKIT_UNROLL
        for (int mi = 0; mi < SCREEN_MT; ++mi)
          ldmatrix_x4(a[mi], &sA[stage][(wm * SCREEN_WM + mi * 16 + lane % 16) * SCREEN_LDS + kk + (lane / 16) * 8]);
        SAEKIT_UNROLL
        for (int nj = 0; nj < SCREEN_NT / 2; ++nj) {
          uint32_t r[4];
          ldmatrix_x4(r, &sB[stage][(wn * SCREEN_WN + nj * 16 + lane % 8 + (lane / 16) * 8) * SCREEN_LDS + kk + ((lane / 8) % 2) * 8]);
          b[2 * nj][0] = r[0];
          b[2 * nj][1] = r[1];
          b[2 * nj + 1][0] = r[2];
          b[2 * nj + 1][1] = r[3];
        }
        SAEKIT_UNROLL
        for (int mi = 0; mi < SCREEN_MT; ++mi)
          SAEKIT_UNROLL
          for (int ni = 0; ni < SCREEN_NT; ++ni) mma_bf16_16816(acc[mi][ni], a[mi], b[ni]);
      }
      __syncthreads();  // every warp is done with STAGE before the next step refills it
      if (step % k_tiles != k_tiles - 1) continue;

      // Epilogue of a latent tile: append the rows' candidates, then compact the full lists.
      const int n0 = (nt0 + step / k_tiles) * SCREEN_BN;
      SAEKIT_UNROLL
      for (int mi = 0; mi < SCREEN_MT; ++mi)
        SAEKIT_UNROLL
        for (int ni = 0; ni < SCREEN_NT; ++ni)
          SAEKIT_UNROLL
          for (int i = 0; i < 4; ++i) {
            const int rl = wm * SCREEN_WM + mi * 16 + g + 8 * (i >> 1);
            const int j = n0 + wn * SCREEN_WN + ni * 8 + 2 * t4 + (i & 1);
            const float d = acc[mi][ni][i];
            acc[mi][ni][i] = 0.f;
            if (j >= d_sae || s_over[rl]) continue;
            float low, up;
            screen_interval(d, b_enc[j], werr[j], wtil[j], s_xn[rl], s_xe[rl], slack_rel, &low, &up);
            if (up < (admit != nullptr ? admit[j] : s_thr[rl])) continue;
            const int slot = atomicAdd(&s_cnt[rl], 1);  // < cap: the list had room for a whole tile
            cand_d[(list0 + r0 + rl) * cap + slot] = d;
            cand_j[(list0 + r0 + rl) * cap + slot] = j;
          }
      __syncthreads();
      const bool last = step == steps - 1;
      for (int rl = warp; rl < SCREEN_BM; rl += SCREEN_WARPS) {
        if (s_over[rl] || (!last && s_cnt[rl] <= cap - SCREEN_BN)) continue;
        if (admit != nullptr) {  // nothing can be dropped: a full list overflows
          if (!last && lane == 0) s_over[rl] = 1;
          continue;
        }
        const int64_t base = (list0 + r0 + rl) * cap;
        const int n = screen_compact_row(cand_d + base, cand_j + base, s_cnt[rl], k, &s_thr[rl], b_enc, werr, wtil, s_xn[rl], s_xe[rl], slack_rel);
        if (lane == 0) {
          s_cnt[rl] = n;
          if (!last && n > cap - SCREEN_BN) s_over[rl] = 1;  // no room for the next tile: rescore every latent
        }
      }
      __syncthreads();
    }
    __syncthreads();  // an empty part (steps == 0) still publishes its zero counts after the reset
    for (int r = tid; r < SCREEN_BM; r += SCREEN_THREADS) ncand[list0 + r0 + r] = s_over[r] && r0 + r < rows ? cap + 1 : s_cnt[r];
    __syncthreads();  // the next row tile resets the shared state
  }
}

/**
 * Joins the PARTS candidate lists of each row (screen_candidates_kernel with a latent split):
 * T = the k-th largest low over the union (exact: a latent a part left out had up below that
 * part's threshold, itself at most the part's k-th largest low, so its low is below T), then
 * the latents with up >= T go to MERGED_J [rows, cap] and their count to ncand[row] (part
 * 0's slot); a row with more than CAP of them (or any part overflowed) is marked overflowed. One warp per row; counts are rescanned from
 * the lists in global memory for each of the 32 bisection steps (few rows: this is the small-
 * batch path).
 */
__global__ void screen_merge_kernel(const float* __restrict__ cand_d, const int32_t* __restrict__ cand_j, int32_t* __restrict__ ncand, int parts, int rows, int rows_pad,
                                    int cap, int k, int d_in, const float* __restrict__ b_enc, const float* __restrict__ werr, const float* __restrict__ wtil,
                                    const float* __restrict__ rnorm, const float* __restrict__ rerr, int32_t* __restrict__ merged_j) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int warp = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x) / 32;
  const int nwarps = static_cast<int>(gridDim.x * blockDim.x) / 32;
  const float slack_rel = 2.f * static_cast<float>(d_in + 2) * 5.97e-8f;
  for (int row = warp; row < rows; row += nwarps) {
    const float xn = rnorm[row], xe = rerr[row];
    bool over = false;
    int total = 0;
    for (int p = 0; p < parts; ++p) {
      const int n = ncand[static_cast<int64_t>(p) * rows_pad + row];
      over = over || n > cap;
      total += n;
    }
    auto interval = [&](int p, int e, float* low, float* up) {
      const int64_t at = (static_cast<int64_t>(p) * rows_pad + row) * cap + e;
      const int j = cand_j[at];
      screen_interval(cand_d[at], b_enc[j], werr[j], wtil[j], xn, xe, slack_rel, low, up);
    };
    float t = -INFINITY;
    if (!over && total >= k) {
      t = key_value(warp_kth_largest_key(k, [&](uint32_t c) {
        int cnt = 0;
        for (int p = 0; p < parts; ++p) {
          const int n = ncand[static_cast<int64_t>(p) * rows_pad + row];
          for (int e = lane; e < n; e += 32) {
            float low, up;
            interval(p, e, &low, &up);
            cnt += order_key(low) >= c;
          }
        }
        return cnt;
      }));
    }
    int kept = 0;
    for (int p = 0; p < parts && !over; ++p) {
      const int n = ncand[static_cast<int64_t>(p) * rows_pad + row];
      for (int base = 0; base < n; base += 32) {
        const int e = base + lane;
        float low = -INFINITY, up = -INFINITY;
        if (e < n) interval(p, e, &low, &up);
        const bool keep = e < n && up >= t;
        const unsigned mask = __ballot_sync(0xffffffffu, keep);
        const int pos = kept + __popc(mask & ((1u << lane) - 1u));
        if (keep && pos < cap) {
          merged_j[static_cast<int64_t>(row) * cap + pos] = cand_j[(static_cast<int64_t>(p) * rows_pad + row) * cap + e];
        }
        kept += __popc(mask);
      }
    }
    __syncwarp();
    if (lane == 0) ncand[row] = over || kept > cap ? cap + 1 : kept;  // list 0's count now describes the merged list
  }
}

/** One warp's staging area for the rescoring dots (shared memory). */
struct RescoreStage {
  float w[32][33];  // [candidate][i], padded: lane c reads row c without bank conflicts
  float x[32];
  int j[32];
};

/**
 * The fp32 dot x'.w_J of lane's candidate J (-1: none) for a group of 32 candidates, summed in
 * the fp32 kernels' order (acc = fma(x'_i, w_i, acc), i = 0..d_in-1: bit-identical to them)
 * from the latent-major copy WT, with coalesced loads: 32-wide slices of the 32 candidates'
 * rows are staged through shared memory (one 128-byte row slice per load instruction) and
 * read transposed. Add b_enc[J] to get the pre-activation.
 */
__device__ __forceinline__ float rescore_dot(const float* xr, const float* __restrict__ WT, const float* __restrict__ b_dec, int apply_b_dec, int d_in, int j,
                                             RescoreStage& st) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  st.j[lane] = j;
  float acc = 0.f;
  for (int i0 = 0; i0 < d_in; i0 += 32) {
    const int i = i0 + lane;
    __syncwarp();  // the previous slice is consumed (and st.j written) before it is overwritten
    st.x[lane] = i < d_in ? (apply_b_dec ? xr[i] - b_dec[i] : xr[i]) : 0.f;
    for (int cc = 0; cc < 32; ++cc) {
      const int jc = st.j[cc];
      st.w[cc][lane] = jc >= 0 && i < d_in ? WT[static_cast<int64_t>(jc) * d_in + i] : 0.f;
    }
    __syncwarp();
    const int len = d_in - i0 < 32 ? d_in - i0 : 32;
    for (int t = 0; t < len; ++t) acc = fmaf(st.x[t], st.w[lane][t], acc);
  }
  __syncwarp();  // all lanes are done with the stage before the caller's next group
  return acc;
}

/** A row's latents to rescore: its candidate list, or every latent when the row overflowed. */
struct RowCandidates {
  const int32_t* list;
  int total;
  bool all;
  __device__ RowCandidates(const int32_t* cand_j, const int32_t* ncand, int row, int cap, int d_sae)
      : list(cand_j + static_cast<int64_t>(row) * cap), total(ncand[row] > cap ? d_sae : ncand[row]), all(ncand[row] > cap) {}
  /** The C-th latent, -1 past the end. */
  __device__ int operator[](int c) const { return c < total ? (all ? c : list[c]) : -1; }
};

/**
 * Rescoring (top-k): per row (one warp), the fp32 pre-activation of each candidate (every
 * latent for an overflowed row), the exact top-k with ties to the lower index, ReLU,
 * ascending output into [rows, k] slots.
 */
__global__ void screen_rescore_kernel(const float* __restrict__ x, const float* __restrict__ WT, const float* __restrict__ b_enc, const float* __restrict__ b_dec,
                                      int apply_b_dec, int rows, int d_in, int d_sae, int k, int cap, const int32_t* __restrict__ cand_j,
                                      const int32_t* __restrict__ ncand, int32_t* __restrict__ out_indices, float* __restrict__ out_values,
                                      int32_t* __restrict__ out_count) {
  constexpr int WARPS = 4;
  __shared__ float vals[WARPS][SCREEN_MAX_K];
  __shared__ int idx[WARPS][SCREEN_MAX_K];
  __shared__ RescoreStage stage[WARPS];
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  for (int row = static_cast<int>(blockIdx.x) * WARPS + warp; row < rows; row += static_cast<int>(gridDim.x) * WARPS) {
    const float* xr = x + static_cast<int64_t>(row) * d_in;
    const RowCandidates cands(cand_j, ncand, row, cap, d_sae);
    int filled = 0;
    for (int base = 0; base < cands.total; base += 32) {
      const int j = cands[base + lane];
      const float acc = rescore_dot(xr, WT, b_dec, apply_b_dec, d_in, j, stage[warp]);
      warp_topk_merge(j >= 0 ? acc + b_enc[j] : -INFINITY, j, vals[warp], idx[warp], k, filled);
    }
    warp_topk_emit(vals[warp], idx[warp], filled, k, row, out_indices, out_values, out_count);
  }
}

/**
 * Rescoring (standard / jumprelu), count then fill like encode_threshold_f32_kernel and with
 * its keep rule (pre > 0, and pre > threshold[j] for jumprelu) and values (bit-identical): pass
 * 1 (indptr == nullptr) writes each row's count, pass 2 writes (latent, value) at indptr[row]
 * in candidate order (ascending for an overflowed row, which runs every latent); the host
 * sorts each row by latent.
 */
__global__ void screen_rescore_threshold_kernel(const float* __restrict__ x, const float* __restrict__ WT, const float* __restrict__ b_enc,
                                                const float* __restrict__ b_dec, const float* __restrict__ threshold, int apply_b_dec, int rows, int d_in,
                                                int d_sae, int cap, const int32_t* __restrict__ cand_j, const int32_t* __restrict__ ncand,
                                                const uint32_t* __restrict__ indptr, int32_t* __restrict__ out_count, int32_t* __restrict__ out_indices,
                                                float* __restrict__ out_values) {
  constexpr int WARPS = 4;
  __shared__ RescoreStage stage[WARPS];
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  for (int row = static_cast<int>(blockIdx.x) * WARPS + warp; row < rows; row += static_cast<int>(gridDim.x) * WARPS) {
    const float* xr = x + static_cast<int64_t>(row) * d_in;
    const RowCandidates cands(cand_j, ncand, row, cap, d_sae);
    uint32_t written = 0;
    for (int base = 0; base < cands.total; base += 32) {
      const int j = cands[base + lane];
      const float acc = rescore_dot(xr, WT, b_dec, apply_b_dec, d_in, j, stage[warp]);
      const float pre = j >= 0 ? acc + b_enc[j] : 0.f;
      threshold_emit(j >= 0 && threshold_keep(pre, threshold, j), j, pre, indptr, row, written, out_indices, out_values);
    }
    if (indptr == nullptr && lane == 0) out_count[row] = static_cast<int32_t>(written);
  }
}

}  // namespace saekit::cuda
