// Host-side selection rules of the training step that every backend shares, so the CPU trainer
// (native/cpu/cpu_trainer.cpp) and the CUDA trainer (native/cuda/cuda_trainer.h) pick the same
// entries from the same candidate values by construction (the math is in cpu_trainer.cpp's
// header comment):
//   - batch top-k's exact cut over a batch's admitted candidates;
//   - the safe admission threshold from a per-row top-k;
//   - jumprelu's split of admitted values into active entries and the estimators' window,
//     and the log-threshold gradient summed over that window.
// Plain functions over SparseCodes (CSR over rows, latents ascending within a row).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "backend.h"

namespace saekit::train {

/**
 * The exact batch top-k of the candidates C among latents < WIDTH: the WANT largest values, ties
 * to the lower row, then the lower latent, into OUT (CSR over B rows). Returns the cut, the
 * smallest selected value (0 when nothing is selected). Any candidate set holding every value
 * above the true cut gives the same OUT (the order used is the CSR's, which is (row, latent)
 * whatever admitted them), so a speed hint for the admission never changes the result.
 */
inline float batch_topk_cut(const SparseCodes& c, int64_t B, int64_t width, int64_t want, SparseCodes* out) {
  std::vector<std::pair<float, int64_t>> cand;  // (value, position in CSR = row-major order)
  for (size_t p = 0; p < c.indices.size(); ++p)
    if (c.indices[p] < width) cand.emplace_back(c.values[p], static_cast<int64_t>(p));
  auto better = [](const std::pair<float, int64_t>& a, const std::pair<float, int64_t>& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  const bool cut_needed = static_cast<int64_t>(cand.size()) > want;
  std::pair<float, int64_t> last{0.0f, 0};
  if (cut_needed) {
    std::nth_element(cand.begin(), cand.begin() + (want - 1), cand.end(), better);
    last = cand[want - 1];
  }
  out->indptr.assign(B + 1, 0);
  out->indices.clear();
  out->values.clear();
  float lowest = std::numeric_limits<float>::infinity();
  for (int64_t n = 0; n < B; ++n) {
    for (uint32_t p = c.indptr[n]; p < c.indptr[n + 1]; ++p) {
      if (c.indices[p] >= width) continue;
      if (cut_needed && better(last, {c.values[p], p})) continue;
      out->values.push_back(c.values[p]);
      out->indices.push_back(c.indices[p]);
      lowest = std::min(lowest, c.values[p]);
    }
    out->indptr[n + 1] = static_cast<uint32_t>(out->indices.size());
  }
  return out->indices.empty() ? 0.0f : lowest;
}

/**
 * A threshold at or below the batch's cut, from the values of a per-row top-k (positive values
 * only): those are WANT = k B values of the batch at most, so their minimum is <= the WANT-th
 * largest. nextafter toward 0 makes "pre > threshold" admit the minimum itself; 0 (admit every
 * positive value) when the per-row top-k holds fewer than WANT values.
 */
inline float batch_topk_safe_threshold(const float* values, int64_t count, int64_t want) {
  float lo = std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < count; ++i) lo = std::min(lo, values[i]);
  return count < want ? 0.0f : std::nextafter(lo, 0.0f);
}

/** jumprelu's straight-through window: the (row, latent, pre) entries with |pre - theta| < eps/2. */
struct JumpWindow {
  std::vector<int32_t> row, latent;
  std::vector<float> pre;
  void clear() { row.clear(), latent.clear(), pre.clear(); }
  int64_t size() const { return static_cast<int64_t>(row.size()); }
};

/**
 * jumprelu: CODES were admitted above max(theta - HALF_EPS, 0). Lists the window entries
 * (|pre - theta_j| < HALF_EPS, float) into W and keeps in CODES only the active ones
 * (pre > theta_j), in place.
 */
inline void jump_split(SparseCodes* codes, const float* theta, float half_eps, int64_t B, JumpWindow* w) {
  w->clear();
  uint32_t out = 0, begin = codes->indptr[0];
  for (int64_t n = 0; n < B; ++n) {
    const uint32_t end = codes->indptr[n + 1];
    for (uint32_t p = begin; p < end; ++p) {
      const int32_t j = codes->indices[p];
      const float v = codes->values[p];
      if (std::fabs(v - theta[j]) < half_eps) {
        w->row.push_back(static_cast<int32_t>(n));
        w->latent.push_back(j);
        w->pre.push_back(v);
      }
      if (v > theta[j]) {
        codes->values[out] = v;
        codes->indices[out] = j;
        ++out;
      }
    }
    begin = end;
    codes->indptr[n + 1] = out;
  }
  codes->values.resize(out);
  codes->indices.resize(out);
}

/**
 * jumprelu: dL/dlog_threshold_j = theta_j sum over the window entries of latent j (in window
 * order, float64) of -theta_j/eps df_q - l0/(B eps), where df_q = g_row . W_dec[j] (DF, one per
 * window entry). Writes all L values of G_LOGTH (zero outside the window).
 */
inline void jump_threshold_grad(const JumpWindow& w, const float* df, const float* theta, double eps, double l0_coeff, int64_t B, int64_t L, float* g_logth) {
  std::vector<double> g(L, 0.0);
  for (int64_t q = 0; q < w.size(); ++q) {
    const int32_t j = w.latent[q];
    g[j] += -theta[j] / eps * df[q] - l0_coeff / (B * eps);
  }
  for (int64_t j = 0; j < L; ++j) g_logth[j] = static_cast<float>(theta[j] * g[j]);
}

}  // namespace saekit::train
