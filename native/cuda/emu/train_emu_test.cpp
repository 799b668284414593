// The CUDA training kernels (kernels/train_step.cuh) and the CUDA trainer (cuda_trainer.h)
// under CPU emulation: each kernel against a float64 reference at awkward sizes, the whole step
// against the CPU trainer from a common state (weights, Adam moments, gradients, stats), and
// many steps on planted features next to the CPU trainer. One line per case ("ok  " / "FAIL"),
// then "all passed"; exit 1 on any failure. Seeded from argv[1]; argv[2] filters groups
// (kernels, step, planted).
//
// Tolerances (see bench/NOTES.md, "CUDA training"): both sides sum in fp32 in different orders
// (the CPU in 16 vector lanes, the kernels per thread over strided columns and then a tree), so
// a sum of n terms differs by at most ~n * 2^-24 relative to the sum of the terms' magnitudes.
// With n <= d_in + k (about 100 here) that is ~1e-5 of a tensor's scale; tolerances are 1e-4
// of each tensor's largest magnitude (gradients, moments) and, for parameters, 1e-4 of the
// learning rate plus 1e-6 absolute: Adam's first steps move every touched element by about lr
// whatever the gradient's size, so an error relative to lr is the meaningful one.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "../cuda_trainer.h"
#include "emu_test_util.h"

using saekit::emu::dim3;
using saekit::emu::launch;
using saekit::emu_test::check;
using saekit::emu_test::failures;
using saekit::emu_test::fmt;
using saekit::emu_test::randn;
using saekit::emu_test::rel_err;
namespace cu = saekit::cuda;

namespace {

std::string shape(int rows, int d, int L, int k) {
  return "rows " + std::to_string(rows) + " d_in " + std::to_string(d) + " d_sae " + std::to_string(L) + " k " + std::to_string(k);
}

// ---- Kernels against float64 -------------------------------------------------------------

/** Random slots: per row up to K distinct latents ascending, positive values. */
void random_slots(std::mt19937& rng, int rows, int L, int k, std::vector<int32_t>& idx, std::vector<float>& val, std::vector<int32_t>& cnt, bool full) {
  idx.assign(static_cast<size_t>(rows) * k, 0);
  val.assign(static_cast<size_t>(rows) * k, 0.f);
  cnt.assign(rows, 0);
  std::uniform_real_distribution<float> u(0.05f, 2.f);
  for (int r = 0; r < rows; ++r) {
    std::vector<int32_t> all(L);
    for (int j = 0; j < L; ++j) all[j] = j;
    std::shuffle(all.begin(), all.end(), rng);
    const int n = full ? k : static_cast<int>(rng() % (k + 1));
    std::sort(all.begin(), all.begin() + n);
    for (int p = 0; p < n; ++p) idx[r * k + p] = all[p], val[r * k + p] = u(rng);
    cnt[r] = n;
  }
}

/** CSR selection (CSR): the slots are packed (row n at offsets[n]) and dL/dpre gains a per-latent term, as standard's L1 does. */
void test_residual(std::mt19937& rng, int rows, int d, int L, int k, bool aux, bool csr = false) {
  auto W = randn(rng, static_cast<size_t>(L) * d), sub = randn(rng, static_cast<size_t>(rows) * d);
  auto base = aux ? randn(rng, static_cast<size_t>(rows) * d) : randn(rng, d);
  std::vector<int32_t> idx, cnt;
  std::vector<float> val;
  random_slots(rng, rows, L, k, idx, val, cnt, false);
  std::vector<uint32_t> offsets(rows + 1, 0);
  std::vector<int32_t> pidx;
  std::vector<float> pval;
  for (int n = 0; n < rows; ++n) {
    for (int p = 0; p < cnt[n]; ++p) pidx.push_back(idx[n * k + p]), pval.push_back(val[n * k + p]);
    offsets[n + 1] = static_cast<uint32_t>(pidx.size());
  }
  const auto add = randn(rng, L, 0.1f);
  std::vector<float> pdpre(std::max<size_t>(1, pidx.size()), 0.f);
  std::vector<double> mean(d, 0.0);
  for (int n = 0; n < rows; ++n)
    for (int c = 0; c < d; ++c) mean[c] += sub[n * d + c] / rows;
  std::vector<float> E(static_cast<size_t>(rows) * d), U(E.size()), dpre(idx.size(), 0.f);
  std::vector<double> err2(rows), dev2(rows);
  const float gs = 2.f / rows;
  const cu::RowSlots slots{static_cast<const int32_t*>(cnt.data()), k, csr ? static_cast<const uint32_t*>(offsets.data()) : nullptr};
  launch(dim3(std::min(rows, 3)), dim3(32), cu::train_residual_kernel, static_cast<const float*>(base.data()), static_cast<int64_t>(aux ? d : 0),
         aux ? static_cast<const float*>(nullptr) : static_cast<const float*>(sub.data()), aux ? static_cast<const double*>(nullptr) : static_cast<const double*>(mean.data()),
         static_cast<const float*>(W.data()), static_cast<const int32_t*>(csr ? pidx.data() : idx.data()), static_cast<const float*>(csr ? pval.data() : val.data()), slots,
         rows, d, gs, csr ? static_cast<const float*>(add.data()) : static_cast<const float*>(nullptr), aux ? static_cast<float*>(nullptr) : E.data(), U.data(), err2.data(),
         aux ? static_cast<double*>(nullptr) : dev2.data(), csr ? pdpre.data() : dpre.data());
  if (csr)
    for (int n = 0; n < rows; ++n)
      for (int p = 0; p < cnt[n]; ++p) dpre[n * k + p] = pdpre[offsets[n] + p];
  std::vector<double> rU(U.size()), rerr(rows), rdev(rows, 0.0), rdp(idx.size(), 0.0);
  std::vector<double> gotdp(idx.size(), 0.0);
  for (int n = 0; n < rows; ++n) {
    double s = 0, dv = 0;
    for (int c = 0; c < d; ++c) {
      double r = base[(aux ? n * d : 0) + c];
      for (int p = 0; p < cnt[n]; ++p) r += static_cast<double>(val[n * k + p]) * W[static_cast<size_t>(idx[n * k + p]) * d + c];
      if (!aux) r -= sub[n * d + c], dv += (sub[n * d + c] - mean[c]) * (sub[n * d + c] - mean[c]);
      rU[n * d + c] = gs * r;
      s += r * r;
    }
    rerr[n] = s;
    rdev[n] = dv;
    for (int p = 0; p < cnt[n]; ++p) {
      double dot = 0;
      for (int c = 0; c < d; ++c) dot += rU[n * d + c] * W[static_cast<size_t>(idx[n * k + p]) * d + c];
      rdp[n * k + p] = dot + (csr ? add[idx[n * k + p]] : 0.0);
      gotdp[n * k + p] = dpre[n * k + p];
    }
  }
  const double eu = rel_err(U, rU), ee = rel_err(err2, rerr), ed = rel_err(gotdp, rdp), ev = aux ? 0.0 : rel_err(dev2, rdev);
  const double tol = 1e-5 * (k + 4);
  check(eu <= tol && ee <= tol && ed <= tol * 4 && ev <= 1e-12, std::string("train_residual ") + (aux ? "auxk " : "") + (csr ? "csr + per-latent dL/dpre term " : "") + shape(rows, d, L, k) + ": U " + fmt(eu) +
                                                                    ", ||e||^2 " + fmt(ee) + ", dL/dpre " + fmt(ed) + (aux ? "" : ", dev2 " + fmt(ev)) + " (float64 reference)");
}

/** L1: standard's penalty term (no projection: its decoder rows are free), with one zero decoder row. */
void test_latent_grads(std::mt19937& rng, int rows, int d, int L, int k, bool l1 = false) {
  auto W = randn(rng, static_cast<size_t>(L) * d), U = randn(rng, static_cast<size_t>(2 * rows) * d), XP = randn(rng, static_cast<size_t>(rows) * d);
  std::vector<int32_t> idx, cnt;
  std::vector<float> val;
  random_slots(rng, rows, L, k, idx, val, cnt, false);
  auto dp = randn(rng, val.size());
  // Entries sorted by latent, rows ascending; the odd rows' entries use the second block of U (as AuxK's do).
  std::vector<int32_t> off(L + 1, 0), ur, xr, sl;
  for (int n = 0; n < rows; ++n)
    for (int p = 0; p < cnt[n]; ++p) ++off[idx[n * k + p] + 1];
  for (int j = 0; j < L; ++j) off[j + 1] += off[j];
  ur.resize(off[L]), xr.resize(off[L]), sl.resize(off[L]);
  std::vector<int32_t> cur(off.begin(), off.end() - 1);
  for (int n = 0; n < rows; ++n)
    for (int p = 0; p < cnt[n]; ++p) {
      const int at = cur[idx[n * k + p]]++;
      ur[at] = n % 2 ? rows + n : n, xr[at] = n, sl[at] = n * k + p;
    }
  std::vector<float> gd(static_cast<size_t>(L) * d, 7.f), ge(gd.size(), 7.f), gb(L, 7.f), norm(L);
  std::vector<double> sq(L, 7.0);
  if (l1) std::fill(W.begin(), W.begin() + d, 0.f);  // a zero row: no L1 term there
  for (int j = 0; j < L; ++j) {
    double s2 = 0;
    for (int c = 0; c < d; ++c) s2 += static_cast<double>(W[j * d + c]) * W[j * d + c];
    norm[j] = static_cast<float>(std::sqrt(s2));
  }
  const float l1_scale = 0.03f;
  launch(dim3(std::min(L, 5)), dim3(32), cu::train_latent_grads_kernel, static_cast<const int32_t*>(off.data()), static_cast<const int32_t*>(ur.data()),
         static_cast<const int32_t*>(xr.data()), static_cast<const int32_t*>(sl.data()), static_cast<const float*>(val.data()), static_cast<const float*>(dp.data()),
         static_cast<const float*>(U.data()), static_cast<const float*>(XP.data()), static_cast<const float*>(W.data()), L, d, l1 ? 0 : 1,
         l1 ? static_cast<const float*>(norm.data()) : static_cast<const float*>(nullptr), l1_scale, gd.data(), ge.data(), gb.data(), sq.data());
  std::vector<double> rd(gd.size(), 0.0), re(gd.size(), 0.0), rb(L, 0.0), rs(L, 0.0);
  for (int j = 0; j < L; ++j) {
    for (int e = off[j]; e < off[j + 1]; ++e) {
      for (int c = 0; c < d; ++c) {
        rd[static_cast<size_t>(j) * d + c] += static_cast<double>(val[sl[e]]) * U[static_cast<size_t>(ur[e]) * d + c];
        re[static_cast<size_t>(j) * d + c] += static_cast<double>(dp[sl[e]]) * XP[static_cast<size_t>(xr[e]) * d + c];
      }
      rb[j] += dp[sl[e]];
    }
    if (l1 && off[j] < off[j + 1] && norm[j] > 0) {
      double fs = 0;
      for (int e = off[j]; e < off[j + 1]; ++e) fs += val[sl[e]];
      for (int c = 0; c < d; ++c) rd[j * d + c] += l1_scale * fs / norm[j] * W[j * d + c];
    }
    double gw = 0, ww = 0;
    for (int c = 0; c < d; ++c) gw += rd[j * d + c] * W[j * d + c], ww += static_cast<double>(W[j * d + c]) * W[j * d + c];
    if (!l1)
      for (int c = 0; c < d; ++c) rd[j * d + c] -= gw / ww * W[j * d + c];
    for (int c = 0; c < d; ++c) rs[j] += rd[j * d + c] * rd[j * d + c] + re[j * d + c] * re[j * d + c];
    rs[j] += rb[j] * rb[j];
  }
  int untouched = 0;
  for (int j = 0; j < L; ++j) untouched += off[j] == off[j + 1];
  const double a = rel_err(gd, rd), b = rel_err(ge, re), c = rel_err(gb, rb), s = rel_err(sq, rs);
  const double tol = 2e-5 * (rows + 4);
  check(a <= tol && b <= tol && c <= 1e-6 && s <= tol, "train_latent_grads " + shape(rows, d, L, k) + " (" + std::to_string(untouched) + " latents without entries): dW_dec " +
                                                           fmt(a) + (l1 ? " (L1 term, zero row, no projection)" : " (projected)") + ", dW_enc " + fmt(b) + ", db_enc " + fmt(c) + ", row norms " + fmt(s) + " (float64 reference)");
}

void test_bdec(std::mt19937& rng, int rows, int d, int L) {
  auto U = randn(rng, static_cast<size_t>(rows) * d), gb = randn(rng, L), We = randn(rng, static_cast<size_t>(d) * L);
  std::vector<float> g(d);
  std::vector<double> sq(d);
  launch(dim3(std::min(d, 4)), dim3(64), cu::train_bdec_grad_kernel, static_cast<const float*>(U.data()), rows, static_cast<const float*>(gb.data()),
         static_cast<const float*>(We.data()), L, d, g.data(), sq.data());
  std::vector<double> r(d, 0.0);
  for (int c = 0; c < d; ++c) {
    for (int n = 0; n < rows; ++n) r[c] += U[n * d + c];
    for (int j = 0; j < L; ++j) r[c] -= static_cast<double>(gb[j]) * We[static_cast<size_t>(c) * L + j];
  }
  const double e = rel_err(g, r);
  check(e <= 1e-6, "train_bdec_grad rows " + std::to_string(rows) + " d_in " + std::to_string(d) + " d_sae " + std::to_string(L) + ": " + fmt(e) + " (float64 reference)");
}

void test_pair_dots_norms(std::mt19937& rng, int rows, int d, int L, int m) {
  auto U = randn(rng, static_cast<size_t>(rows) * d), W = randn(rng, static_cast<size_t>(L) * d);
  std::vector<int32_t> ur(m), lat(m);
  for (int q = 0; q < m; ++q) ur[q] = static_cast<int32_t>(rng() % rows), lat[q] = static_cast<int32_t>(rng() % L);
  std::vector<float> out(std::max(m, 1), 7.f), norm(L, 7.f);
  launch(dim3(std::min(std::max(m, 1), 3)), dim3(32), cu::train_pair_dots_kernel, static_cast<const float*>(U.data()), static_cast<const float*>(W.data()),
         static_cast<const int32_t*>(ur.data()), static_cast<const int32_t*>(lat.data()), m, d, out.data());
  launch(dim3(std::min(L, 3)), dim3(64), cu::train_row_norms_kernel, static_cast<const float*>(W.data()), L, d, norm.data());
  std::vector<double> rd(m), rn(L);
  std::vector<float> got(out.begin(), out.begin() + m);
  for (int q = 0; q < m; ++q)
    for (int c = 0; c < d; ++c) rd[q] += static_cast<double>(U[static_cast<size_t>(ur[q]) * d + c]) * W[static_cast<size_t>(lat[q]) * d + c];
  for (int j = 0; j < L; ++j) {
    double s2 = 0;
    for (int c = 0; c < d; ++c) s2 += static_cast<double>(W[j * d + c]) * W[j * d + c];
    rn[j] = std::sqrt(s2);
  }
  const double e = m > 0 ? rel_err(got, rd) : 0.0, en = rel_err(norm, rn);
  check(e <= 1e-5 * (d / 32 + 4) && en <= 1e-6, "train_pair_dots " + std::to_string(m) + " pairs d_in " + std::to_string(d) + ": " + fmt(e) + "; train_row_norms " +
                                                    std::to_string(L) + " rows: " + fmt(en) + " (float64 reference)");
}

void test_transpose_sum(std::mt19937& rng, int rows, int cols) {
  auto in = randn(rng, static_cast<size_t>(rows) * cols);
  std::vector<float> out(in.size(), -1.f);
  const int tiles = ((rows + 31) / 32) * ((cols + 31) / 32);
  launch(dim3(std::min(tiles, 2)), dim3(32, 8), cu::train_transpose_kernel, static_cast<const float*>(in.data()), rows, cols, out.data());
  bool same = true;
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) same = same && out[static_cast<size_t>(c) * rows + r] == in[static_cast<size_t>(r) * cols + c];
  std::vector<double> v(static_cast<size_t>(rows) * cols);
  double ref = 0;
  for (size_t i = 0; i < v.size(); ++i) v[i] = in[i], ref += in[i];
  double got = 0;
  launch(dim3(1), dim3(256), cu::train_sum_kernel, static_cast<const double*>(v.data()), static_cast<int64_t>(v.size()), &got);
  check(same && std::fabs(got - ref) <= 1e-12 * (1 + std::fabs(ref)) * v.size(),
        "train_transpose " + std::to_string(rows) + " x " + std::to_string(cols) + (same ? ": exact" : ": WRONG") + "; train_sum " + fmt(std::fabs(got - ref)));
}

void test_adam_renorm(std::mt19937& rng, int L, int d) {
  // Three segments of odd sizes (one empty), a clip scale, t = 3.
  const int64_t n0 = static_cast<int64_t>(L) * d, n1 = L, n2 = 0;
  auto p0 = randn(rng, n0), m0 = randn(rng, n0, 0.01f), g0 = randn(rng, n0, 0.1f), p1 = randn(rng, n1), m1 = randn(rng, n1, 0.01f), g1 = randn(rng, n1, 0.1f);
  std::vector<float> v0(n0), v1(n1), e2(1);
  for (auto& x : v0) x = 1e-4f * static_cast<float>(rng() % 100);
  for (auto& x : v1) x = 1e-4f * static_cast<float>(rng() % 100);
  auto P0 = p0, M0 = m0, V0 = v0, P1 = p1, M1 = m1, V1 = v1;
  cu::AdamSegments s{};
  s.s[0] = {P0.data(), M0.data(), V0.data(), g0.data(), n0};
  s.s[1] = {P1.data(), M1.data(), V1.data(), g1.data(), n1};
  s.s[2] = {e2.data(), e2.data(), e2.data(), e2.data(), n2};
  s.count = 3;
  // The constants as the kernel sees them (float), so the reference tests the formula, not 0.999f's rounding.
  const double lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, gscale = 0.7f;
  const int t = 3;
  const float ic1 = static_cast<float>(1 / (1 - std::pow(b1, t))), ic2 = static_cast<float>(1 / (1 - std::pow(b2, t)));
  launch(dim3(3), dim3(64), cu::train_adam_kernel, s, static_cast<float>(gscale), static_cast<float>(lr), static_cast<float>(b1), static_cast<float>(b2), ic1, ic2,
         static_cast<float>(eps));
  double worst_p = 0, worst_m = 0, worst_v = 0;
  auto ref = [&](const std::vector<float>& p, const std::vector<float>& m, const std::vector<float>& v, const std::vector<float>& g, const std::vector<float>& P,
                 const std::vector<float>& M, const std::vector<float>& V) {
    for (size_t i = 0; i < p.size(); ++i) {
      const double gg = g[i] * gscale, mi = b1 * m[i] + (1 - b1) * gg, vi = b2 * v[i] + (1 - b2) * gg * gg;
      const double pi = p[i] - lr * (mi / (1 - std::pow(b1, t))) / (std::sqrt(vi / (1 - std::pow(b2, t))) + eps);
      worst_p = std::max(worst_p, std::fabs(P[i] - pi) / lr);
      // Relative to the terms' magnitudes (b1 m and (1 - b1) g may cancel).
      worst_m = std::max(worst_m, std::fabs(M[i] - mi) / (std::fabs(b1 * m[i]) + std::fabs((1 - b1) * gg) + 1e-30));
      worst_v = std::max(worst_v, std::fabs(V[i] - vi) / (std::fabs(vi) + 1e-30));
    }
  };
  ref(p0, m0, v0, g0, P0, M0, V0);
  ref(p1, m1, v1, g1, P1, M1, V1);
  // Renorm: rows to unit norm, a zero row stays zero.
  std::fill(P0.begin(), P0.begin() + d, 0.f);
  launch(dim3(2), dim3(32), cu::train_renorm_kernel, P0.data(), L, d);
  double worst_n = 0;
  bool zero_row = true;
  for (int j = 0; j < L; ++j) {
    double s = 0;
    for (int c = 0; c < d; ++c) s += static_cast<double>(P0[j * d + c]) * P0[j * d + c];
    if (j == 0) zero_row = s == 0;
    else worst_n = std::max(worst_n, std::fabs(std::sqrt(s) - 1));
  }
  // Parameters: fp32 rounding of p itself (|p| ~ 3, 2^-24 |p| ~ 2e-7, i.e. ~2e-4 lr) dominates.
  check(worst_p <= 1e-3 && worst_m <= 1e-5 && worst_v <= 1e-5 && worst_n <= 1e-6 && zero_row,
        "train_adam (one launch, segments " + std::to_string(n0) + ", " + std::to_string(n1) + ", 0; clip scale, t = 3) + train_renorm " + std::to_string(L) + " x " +
            std::to_string(d) + ": params " + fmt(worst_p) + " lr, m " + fmt(worst_m) + ", v " + fmt(worst_v) + ", |row| - 1 " + fmt(worst_n) +
            (zero_row ? ", zero row kept" : ", ZERO ROW CHANGED"));
}

void test_aux_topk(std::mt19937& rng, int rows, int d, int L, int D, int k) {
  auto x = randn(rng, static_cast<size_t>(rows) * d), W = randn(rng, static_cast<size_t>(d) * L, 0.3f), b = randn(rng, L, 0.2f);
  std::vector<int32_t> all(L);
  for (int j = 0; j < L; ++j) all[j] = j;
  std::shuffle(all.begin(), all.end(), rng);
  std::vector<int32_t> dead(all.begin(), all.begin() + D);
  std::sort(dead.begin(), dead.end());
  const bool every = k == D;
  std::vector<int32_t> oi(static_cast<size_t>(rows) * k, -1), oc(rows, -1);
  std::vector<float> ov(oi.size());
  launch(dim3(std::min(rows, 2)), dim3(32), cu::train_aux_topk_kernel, static_cast<const float*>(x.data()), static_cast<const float*>(W.data()),
         static_cast<const float*>(b.data()), static_cast<const int32_t*>(dead.data()), D, rows, d, L, k, every ? 1 : 0, oi.data(), ov.data(), oc.data());
  bool ok = true;
  std::string why;
  for (int r = 0; r < rows && ok; ++r) {
    std::vector<std::pair<double, int>> pre;
    for (int j : dead) {
      double s = b[j];
      for (int i = 0; i < d; ++i) s += static_cast<double>(x[r * d + i]) * W[static_cast<size_t>(i) * L + j];
      pre.push_back({s, j});
    }
    std::stable_sort(pre.begin(), pre.end(), [](auto& a, auto& c) { return a.first > c.first; });
    std::vector<int> want;
    for (int q = 0; q < k; ++q)
      if (pre[q].first > 0) want.push_back(pre[q].second);
    std::sort(want.begin(), want.end());
    if (oc[r] != static_cast<int>(want.size())) ok = false, why = "row " + std::to_string(r) + " count " + std::to_string(oc[r]) + " vs " + std::to_string(want.size());
    for (int p = 0; p < oc[r] && ok; ++p) {
      if (oi[r * k + p] != want[p]) ok = false, why = "row " + std::to_string(r) + " latent " + std::to_string(oi[r * k + p]) + " vs " + std::to_string(want[p]);
      double ref = 0;
      for (auto& q : pre)
        if (q.second == want[p]) ref = q.first;
      if (ok && std::fabs(ov[r * k + p] - ref) > 1e-4 * (1 + std::fabs(ref))) ok = false, why = "value";
    }
  }
  check(ok, "train_aux_topk rows " + std::to_string(rows) + " d_in " + std::to_string(d) + " d_sae " + std::to_string(L) + " dead " + std::to_string(D) + " k_aux " +
                std::to_string(k) + (every ? " (every dead latent)" : "") + (ok ? "" : ": " + why));
}

// ---- The whole step against the CPU trainer ----------------------------------------------

struct Init {
  std::vector<float> W_enc, b_enc, W_dec, b_dec;
};

Init random_init(std::mt19937& rng, int d, int L) {
  Init p;
  p.W_dec = randn(rng, static_cast<size_t>(L) * d);
  for (int j = 0; j < L; ++j) {
    double s = 0;
    for (int c = 0; c < d; ++c) s += static_cast<double>(p.W_dec[j * d + c]) * p.W_dec[j * d + c];
    for (int c = 0; c < d; ++c) p.W_dec[j * d + c] = static_cast<float>(p.W_dec[j * d + c] / std::sqrt(s));
  }
  p.W_enc.resize(static_cast<size_t>(d) * L);
  for (int j = 0; j < L; ++j)
    for (int c = 0; c < d; ++c) p.W_enc[static_cast<size_t>(c) * L + j] = p.W_dec[j * d + c];
  p.b_enc = randn(rng, L, 0.05f);
  p.b_dec = randn(rng, d, 0.1f);
  return p;
}

saekit::TrainParamsView view(const Init& p) {
  saekit::TrainParamsView v;
  v.W_enc = p.W_enc.data();
  v.b_enc = p.b_enc.data();
  v.W_dec = p.W_dec.data();
  v.b_dec = p.b_dec.data();
  return v;
}

std::vector<float> state(const saekit::BackendTrainer& t, const std::string& name) {
  std::vector<float> v(t.state_size(name));
  t.get_state(name, v.data());
  return v;
}


/** Each architecture's own options, as the CLI's defaults would set them (larger bandwidth: the window must hold entries at these sizes). */
void arch_options(saekit::TrainArch arch, saekit::TrainStepOptions* o) {
  if (arch == saekit::TrainArch::Standard) o->l1_coeff = 0.5;
  if (arch == saekit::TrainArch::JumpReLU) o->l0_coeff = 0.05, o->bandwidth = 0.2;
}

/** jumprelu's thresholds: exp(log_threshold) around 0.3, where pre-activations are dense. */
std::vector<float> random_log_threshold(std::mt19937& rng, int L) {
  auto v = randn(rng, L, 0.3f);
  for (auto& x : v) x += std::log(0.3f);
  return v;
}

void test_step_vs_cpu(std::mt19937& rng, int B, int d, int L, int k, int k_aux, int n_dead, int steps, saekit::TrainArch arch = saekit::TrainArch::TopK) {
  saekit::TrainSpec spec;
  spec.d_in = d, spec.d_sae = L, spec.k = k, spec.k_aux = k_aux, spec.arch = arch;
  Init p = random_init(rng, d, L);
  const auto logth = random_log_threshold(rng, L);
  saekit::TrainParamsView v = view(p);
  if (arch == saekit::TrainArch::JumpReLU) v.log_threshold = logth.data();
  auto cpu = saekit::cpu_backend().trainer(spec, v);
  saekit::CudaTrainer gpu(spec, v);
  // Dead latents: set their since_fired past dead_tokens on both sides.
  std::vector<double> since(L, 0.0);
  for (int q = 0; q < n_dead; ++q) since[(q * 7 + 3) % L] = 1e9;
  cpu->set_state("since_fired", since.data());
  gpu.set_state("since_fired", since.data());
  saekit::TrainStepOptions o;
  o.lr = 1e-3, o.aux_coeff = n_dead > 0 ? 1.0 / 32 : 0, o.dead_tokens = 1e6, o.input_scale = 0.8f;
  arch_options(arch, &o);
  double worst_g = 0, worst_m = 0, worst_v = 0, worst_p = 0, worst_s = 0, theta_grad = 0, sparsity_loss = 0;
  bool same_sel = true;
  int64_t dead = -1;
  double aux_loss = 0;
  for (int s = 1; s <= steps; ++s) {
    o.t = s;
    o.clip = s == 2 ? 1e-3 : 0;  // one clipped step
    const auto x = randn(rng, static_cast<size_t>(B) * d);
    const saekit::TrainStepStats a = cpu->step(x.data(), nullptr, B, o), b = gpu.step(x.data(), nullptr, B, o);
    for (bool aux : {false, true}) {
      std::vector<uint32_t> pa, pb;
      std::vector<int32_t> ia, ib;
      cpu->last_selection(&pa, &ia, aux);
      gpu.last_selection(&pb, &ib, aux);
      same_sel = same_sel && pa == pb && ia == ib;
    }
    auto rel = [](double u, double v) { return std::fabs(u - v) / (std::fabs(v) + 1e-12); };
    worst_s = std::max({worst_s, rel(b.mse, a.mse), rel(b.fvu, a.fvu), rel(b.l0, a.l0), rel(b.aux_loss, a.aux_loss), rel(b.grad_norm, a.grad_norm),
                        rel(b.l1_loss, a.l1_loss)});
    double ta = 0, tb = 0;
    cpu->get_state("batch_threshold", &ta);
    gpu.get_state("batch_threshold", &tb);
    worst_s = std::max(worst_s, rel(tb, ta));
    if (arch == saekit::TrainArch::BatchTopK && !(ta > 0)) same_sel = false;  // the running threshold must move
    if (a.dead != b.dead) same_sel = false;
    dead = b.dead;
    aux_loss = b.aux_loss;
    sparsity_loss = b.l1_loss;
    for (float g : state(*cpu, "grad.log_threshold")) theta_grad = std::max(theta_grad, static_cast<double>(std::fabs(g)));
    for (const char* name : {"W_enc", "b_enc", "W_dec", "b_dec", "log_threshold"}) {
      const std::string n(name);
      worst_g = std::max(worst_g, rel_err(state(gpu, "grad." + n), state(*cpu, "grad." + n)));
      worst_m = std::max(worst_m, rel_err(state(gpu, "adam_m." + n), state(*cpu, "adam_m." + n)));
      worst_v = std::max(worst_v, rel_err(state(gpu, "adam_v." + n), state(*cpu, "adam_v." + n)));
      const auto pg = state(gpu, n), pc = state(*cpu, n);
      for (size_t i = 0; i < pg.size(); ++i) worst_p = std::max(worst_p, std::fabs(pg[i] - pc[i]) / o.lr);
    }
  }
  std::vector<double> fa(L), fb(L), sa(L), sb(L);
  cpu->get_state("fires", fa.data());
  gpu.get_state("fires", fb.data());
  cpu->get_state("since_fired", sa.data());
  gpu.get_state("since_fired", sb.data());
  const bool counters = fa == fb && sa == sb;
  const bool exercised = (arch != saekit::TrainArch::JumpReLU || theta_grad > 0) && (arch == saekit::TrainArch::TopK || arch == saekit::TrainArch::BatchTopK || sparsity_loss > 0);
  const bool ok = same_sel && counters && exercised && worst_g <= 1e-4 && worst_m <= 1e-4 && worst_v <= 2e-4 && worst_p <= 1e-2 && worst_s <= 1e-4;
  const std::string extra = arch == saekit::TrainArch::JumpReLU ? " |dL/dlog_threshold| max " + fmt(theta_grad) + ", L0 loss " + fmt(sparsity_loss)
                            : arch == saekit::TrainArch::Standard ? " L1 loss " + fmt(sparsity_loss)
                                                                  : "";
  check(ok, std::string("CudaTrainer ") + saekit::train_arch_name(arch) + " step vs CPU trainer " + shape(B, d, L, k) + " k_aux " + std::to_string(k_aux) + " dead " + std::to_string(dead) +
                " aux_loss " + fmt(aux_loss) + extra + ", " +
                std::to_string(steps) + " steps: selections " + (same_sel ? "identical" : "DIFFER") + ", counters " + (counters ? "identical" : "DIFFER") +
                "; grads " + fmt(worst_g) + ", adam_m " + fmt(worst_m) + ", adam_v " + fmt(worst_v) + ", params " + fmt(worst_p) + " lr, stats " + fmt(worst_s));
}

// Same seed and data twice: bit-identical weights (no atomics, fixed orders).
void test_deterministic(std::mt19937& rng, saekit::TrainArch arch) {
  saekit::TrainSpec spec;
  spec.d_in = 24, spec.d_sae = 50, spec.k = 4, spec.k_aux = 8, spec.arch = arch;
  const Init p = random_init(rng, 24, 50);
  const auto logth = random_log_threshold(rng, 50);
  saekit::TrainParamsView v = view(p);
  v.log_threshold = logth.data();
  const auto x = randn(rng, 16 * 24);
  std::vector<float> first;
  bool same = true;
  for (int run = 0; run < 2; ++run) {
    saekit::CudaTrainer t(spec, v);
    std::vector<double> since(50, 0.0);
    for (int j = 0; j < 50; j += 3) since[j] = 1e9;
    t.set_state("since_fired", since.data());
    saekit::TrainStepOptions o;
    o.lr = 1e-2, o.aux_coeff = 1.0 / 32, o.dead_tokens = 1e6;
    arch_options(arch, &o);
    for (int s = 1; s <= 3; ++s) o.t = s, t.step(x.data(), nullptr, 16, o);
    std::vector<float> all;
    for (const char* n : {"W_enc", "b_enc", "W_dec", "b_dec", "log_threshold", "adam_v.W_enc"}) {
      const auto w = state(t, n);
      all.insert(all.end(), w.begin(), w.end());
    }
    if (run == 0) first = all;
    else same = all == first;
  }
  check(same, std::string("CudaTrainer ") + saekit::train_arch_name(arch) + " deterministic: two runs of 3 steps from one state " + (same ? "bit-identical" : "DIFFER"));
}

// What a checkpoint holds (src/train/trainer.ts, stateNamesOf, for an SAE): every trained
// tensor, its Adam moments, the firing counters and batchtopk's running threshold.
std::vector<std::string> checkpoint_names() {
  std::vector<std::string> names;
  for (const char* prefix : {"", "adam_m.", "adam_v."})
    for (const char* t : {"W_enc", "b_enc", "W_dec", "b_dec", "log_threshold"}) names.push_back(std::string(prefix) + t);
  for (const char* n : {"fires", "since_fired", "batch_threshold"}) names.push_back(n);
  return names;
}

void copy_state(const saekit::BackendTrainer& from, saekit::BackendTrainer& to) {
  for (const std::string& n : checkpoint_names()) {
    if (from.state_size(n) != to.state_size(n) || from.state_is_f64(n) != to.state_is_f64(n)) throw std::runtime_error("state '" + n + "' differs in size or type");
    std::vector<double> buf(from.state_size(n));  // room for either element type
    from.get_state(n, buf.data());
    to.set_state(n, buf.data());
  }
}

/**
 * Checkpoint and resume (issue 20): K steps on the CUDA trainer, its state copied into a fresh
 * CUDA trainer and into a CPU trainer (and a CPU trainer's into a fresh CUDA trainer); all go on
 * for M more steps on the same batches. Same device: bit-identical to the uninterrupted run
 * (batchtopk's cut hint is not saved: it never changes the selection). Across devices: the
 * selections stay identical and the weights within the step test's tolerance.
 */
void test_resume(std::mt19937& rng, saekit::TrainArch arch) {
  const int d = 20, L = 45, B = 12, K = 3, M = 3;
  saekit::TrainSpec spec;
  spec.d_in = d, spec.d_sae = L, spec.k = 3, spec.k_aux = 6, spec.arch = arch;
  const Init p = random_init(rng, d, L);
  const auto logth = random_log_threshold(rng, L);
  saekit::TrainParamsView v = view(p);
  v.log_threshold = logth.data();
  std::vector<std::vector<float>> xs;
  for (int s = 0; s < K + M; ++s) xs.push_back(randn(rng, static_cast<size_t>(B) * d));
  saekit::TrainStepOptions o;
  o.lr = 3e-3, o.aux_coeff = 1.0 / 32, o.dead_tokens = 2.0 * B;  // latents die during the run: AuxK and the counters matter
  arch_options(arch, &o);
  auto run = [&](saekit::BackendTrainer& t, int from, int to) {
    for (int s = from; s < to; ++s) o.t = s + 1, t.step(xs[s].data(), nullptr, B, o);
  };
  saekit::CudaTrainer gpu(spec, v);
  auto cpu = saekit::cpu_backend().trainer(spec, v);
  run(gpu, 0, K);
  run(*cpu, 0, K);
  saekit::CudaTrainer gpu_resumed(spec, v), gpu_from_cpu(spec, v);
  auto cpu_from_gpu = saekit::cpu_backend().trainer(spec, v);
  copy_state(gpu, gpu_resumed);
  copy_state(gpu, *cpu_from_gpu);
  copy_state(*cpu, gpu_from_cpu);
  run(gpu, K, K + M);
  run(gpu_resumed, K, K + M);
  run(*cpu_from_gpu, K, K + M);
  run(*cpu, K, K + M);
  run(gpu_from_cpu, K, K + M);
  bool exact = true;
  double cross = 0, cross_back = 0;
  for (const std::string& n : checkpoint_names()) {
    if (gpu.state_is_f64(n)) {
      std::vector<double> a(gpu.state_size(n)), b(a.size()), c(a.size()), e(a.size());
      gpu.get_state(n, a.data()), gpu_resumed.get_state(n, b.data()), cpu_from_gpu->get_state(n, c.data()), gpu_from_cpu.get_state(n, e.data());
      std::vector<double> f(a.size());
      cpu->get_state(n, f.data());
      exact = exact && a == b;
      // Counters are integers: identical across devices when the selections are.
      cross = std::max(cross, rel_err(c, a)), cross_back = std::max(cross_back, rel_err(e, f));
      continue;
    }
    const auto a = state(gpu, n), b = state(gpu_resumed, n), c = state(*cpu_from_gpu, n), e = state(gpu_from_cpu, n), f = state(*cpu, n);
    exact = exact && a == b;
    const bool param = n.find('.') == std::string::npos;
    if (param) {
      for (size_t i = 0; i < a.size(); ++i) cross = std::max(cross, std::fabs(c[i] - a[i]) / o.lr), cross_back = std::max(cross_back, std::fabs(e[i] - f[i]) / o.lr);
    } else {
      cross = std::max(cross, rel_err(c, a) * 1e-2), cross_back = std::max(cross_back, rel_err(e, f) * 1e-2);  // moments: 1e-4 relative maps to 1e-2 here
    }
  }
  const bool ok = exact && cross <= 1e-2 && cross_back <= 1e-2;
  check(ok, std::string("CudaTrainer ") + saekit::train_arch_name(arch) + " checkpoint resume (" + std::to_string(K) + " + " + std::to_string(M) + " steps): CUDA -> CUDA " +
                (exact ? "bit-identical" : "DIFFERS") + "; CUDA -> CPU within " + fmt(cross) + ", CPU -> CUDA within " + fmt(cross_back) +
                " (params in lr units, moments 1e-2 x relative, counters relative)");
}

/**
 * A non-finite value fails the step with the CPU trainer's message, naming its row and column,
 * and changes nothing: the next good step gives the same state as a trainer that never saw the
 * bad batch. The bad row sits in the third staging chunk (64 floats = 3 rows under emulation),
 * after two chunks' copies were already queued.
 */
void test_bad_input(std::mt19937& rng) {
  const int d = 20, L = 31, B = 10;
  saekit::TrainSpec spec;
  spec.d_in = d, spec.d_sae = L, spec.k = 3, spec.k_aux = 4;
  const Init p = random_init(rng, d, L);
  saekit::CudaTrainer a(spec, view(p)), b(spec, view(p));
  saekit::TrainStepOptions o;
  o.lr = 1e-2;
  auto bad = randn(rng, static_cast<size_t>(B) * d);
  bad[7 * d + 4] = std::numeric_limits<float>::quiet_NaN();
  std::string msg;
  try {
    a.step(bad.data(), nullptr, B, o);
  } catch (const saekit::InputError& e) {
    msg = e.what();
  }
  const auto good = randn(rng, static_cast<size_t>(B) * d);
  a.step(good.data(), nullptr, B, o);
  b.step(good.data(), nullptr, B, o);
  bool same = true;
  for (const std::string& n : checkpoint_names())
    if (!a.state_is_f64(n)) same = same && state(a, n) == state(b, n);
  const bool named = msg == "training batch row 7 has a non-finite value at column 4";
  check(named && same, "CudaTrainer non-finite input: " + (msg.empty() ? std::string("NOT REFUSED") : "'" + msg + "'") + ", then " +
                           (same ? "state identical to a trainer that never saw it" : "STATE CHANGED"));
}

/** SAEKIT_TRAIN_PROFILE: the time per phase, every phase named, the shares summing to 100%. */
void test_phase_report(std::mt19937& rng) {
  const int d = 20, L = 31, B = 8;
  saekit::TrainSpec spec;
  spec.d_in = d, spec.d_sae = L, spec.k = 3, spec.k_aux = 4;
  const Init p = random_init(rng, d, L);
  setenv("SAEKIT_TRAIN_PROFILE", "1", 1);
  saekit::CudaTrainer t(spec, view(p));
  unsetenv("SAEKIT_TRAIN_PROFILE");
  saekit::CudaTrainer quiet(spec, view(p));
  saekit::TrainStepOptions o;
  o.lr = 1e-2;
  const auto x = randn(rng, static_cast<size_t>(B) * d);
  for (int s = 1; s <= 2; ++s) o.t = s, t.step(x.data(), nullptr, B, o), quiet.step(x.data(), nullptr, B, o);
  const std::string r = t.phase_report();
  bool named = true;
  for (const char* ph : {"input check + upload", "prep", "selection", "residuals", "auxk", "download + stats", "entry sort", "gradients", "adam + renorm"})
    named = named && r.find(std::string(ph) + " ") != std::string::npos;
  double pct = 0;
  for (size_t at = r.find('('); at != std::string::npos; at = r.find('(', at + 1)) pct += std::strtod(r.c_str() + at + 1, nullptr);
  const bool ok = named && std::fabs(pct - 100) < 1 && quiet.phase_report().empty();
  check(ok, "CudaTrainer phase report (SAEKIT_TRAIN_PROFILE): " + r + "; shares sum " + fmt(pct) + (quiet.phase_report().empty() ? "; off without the variable" : "; ON WITHOUT IT"));
}

/**
 * The self-test that gates device 'auto' for training (trainer_self_test): it passes for the
 * CUDA trainer, and it can fail: a trainer that differs (the CPU trainer with k + 1, a thrower)
 * is caught and named.
 */
void test_self_test() {
  using Spec = saekit::TrainSpec;
  using View = saekit::TrainParamsView;
  const std::string good = saekit::trainer_self_test([](const Spec& s, const View& v) { return std::unique_ptr<saekit::BackendTrainer>(new saekit::CudaTrainer(s, v)); });
  const std::string wrong = saekit::trainer_self_test([](const Spec& s, const View& v) {
    Spec t = s;
    t.k += 1;
    return saekit::cpu_backend().trainer(t, v);
  });
  const std::string thrown = saekit::trainer_self_test([](const Spec&, const View&) -> std::unique_ptr<saekit::BackendTrainer> { throw saekit::Error("no device here"); });
  const bool ok = good.empty() && wrong.rfind("topk: step 1: the main selection differs", 0) == 0 && thrown == "topk: no device here";
  check(ok, "trainer self-test (gates device 'auto' for training): CUDA trainer " + (good.empty() ? std::string("passes") : "FAILS: " + good) + "; a wrong trainer: '" +
                wrong + "'; a throwing one: '" + thrown + "'");
}

void test_refusals() {
  const Init p = [] {
    std::mt19937 r(1);
    return random_init(r, 8, 16);
  }();
  int refused = 0;
  std::string msgs;
  for (int c = 0; c < 3; ++c) {
    saekit::TrainSpec s;
    s.d_in = 8, s.d_sae = 16, s.k = 2;
    if (c == 0) s.transcoder = true, s.d_out = 8;
    if (c == 1) s.transcoder = true, s.skip = true, s.d_out = 8;
    if (c == 2) s.arch = saekit::TrainArch::BatchTopK, s.matryoshka_widths = {8, 16};
    try {
      saekit::CudaTrainer t(s, view(p));
    } catch (const std::exception& e) {
      ++refused;
      const std::string m = e.what();
      const bool named = m.find(c == 2 ? "matryoshka" : c == 1 ? "skip transcoders" : "transcoders") != std::string::npos && m.find("device 'cpu'") != std::string::npos;
      if (!named) msgs += " [" + m + "]";
    }
  }
  check(refused == 3 && msgs.empty(), "CudaTrainer refuses transcoders, skip transcoders, matryoshka by name, pointing to device 'cpu' (" + std::to_string(refused) + "/3)" + msgs);
}

// ---- Planted features ---------------------------------------------------------------------

void test_planted(unsigned seed, saekit::TrainArch arch) {
  const int d = 24, F = 32, L = 48, k = 3, B = 32, steps = 50;
  std::mt19937 rng(seed ^ 0x5eedu);
  std::vector<float> feat = randn(rng, static_cast<size_t>(F) * d);
  for (int f = 0; f < F; ++f) {
    double s = 0;
    for (int c = 0; c < d; ++c) s += static_cast<double>(feat[f * d + c]) * feat[f * d + c];
    for (int c = 0; c < d; ++c) feat[f * d + c] = static_cast<float>(feat[f * d + c] / std::sqrt(s));
  }
  saekit::TrainSpec spec;
  spec.d_in = d, spec.d_sae = L, spec.k = k, spec.k_aux = d / 2, spec.arch = arch;
  const Init p = random_init(rng, d, L);
  const auto logth = random_log_threshold(rng, L);
  saekit::TrainParamsView v = view(p);
  v.log_threshold = logth.data();
  auto cpu = saekit::cpu_backend().trainer(spec, v);
  saekit::CudaTrainer gpu(spec, v);
  saekit::TrainStepOptions o;
  o.lr = 2e-2, o.aux_coeff = 1.0 / 32, o.dead_tokens = 5.0 * B;
  arch_options(arch, &o);
  if (arch == saekit::TrainArch::Standard) o.l1_coeff = 0.05;  // a lighter penalty: 50 steps must still reconstruct
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  std::vector<double> la, lb;
  double first = 0;
  for (int s = 1; s <= steps; ++s) {
    std::vector<float> x(static_cast<size_t>(B) * d, 0.f);
    for (int n = 0; n < B; ++n)
      for (int a = 0; a < 2; ++a) {
        const int f = static_cast<int>(rng() % F);
        const float c = u(rng);
        for (int i = 0; i < d; ++i) x[n * d + i] += c * feat[f * d + i];
      }
    o.t = s;
    const auto a = cpu->step(x.data(), nullptr, B, o), b = gpu.step(x.data(), nullptr, B, o);
    if (s == 1) first = a.mse;
    la.push_back(a.mse), lb.push_back(b.mse);
  }
  auto tail = [&](const std::vector<double>& v) {
    double s = 0;
    for (int i = steps - 10; i < steps; ++i) s += v[i];
    return s / 10;
  };
  auto recovered = [&](const saekit::BackendTrainer& t) {
    const auto W = state(t, "W_dec");
    int n = 0;
    for (int f = 0; f < F; ++f) {
      double best = 0;
      for (int j = 0; j < L; ++j) {
        double c = 0;
        for (int i = 0; i < d; ++i) c += static_cast<double>(W[j * d + i]) * feat[f * d + i];
        best = std::max(best, c);
      }
      n += best > 0.9;
    }
    return n;
  };
  const double ta = tail(la), tb = tail(lb);
  const int ra = recovered(*cpu), rb = recovered(gpu);
  // Loosely: the curves fall together (last-10 mean within 25% of each other, both below half the
  // first step's) and the CUDA trainer recovers about as many planted features as the CPU's.
  const bool ok = std::fabs(tb - ta) <= 0.25 * ta && tb < 0.5 * first && ta < 0.5 * first && rb >= ra - F / 8;
  check(ok, std::string("CudaTrainer ") + saekit::train_arch_name(arch) + " planted features (d_in " + std::to_string(d) + ", " + std::to_string(F) + " features, d_sae " + std::to_string(L) + ", k " + std::to_string(k) + ", " +
                std::to_string(steps) + " steps of " + std::to_string(B) + "): mse first " + fmt(first) + ", last-10 mean CPU " + fmt(ta) + " CUDA " + fmt(tb) +
                "; features recovered (cos > 0.9) CPU " + std::to_string(ra) + " CUDA " + std::to_string(rb) + " of " + std::to_string(F));
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned seed = argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10)) : 1u;
  const std::string only = argc > 2 ? argv[2] : "";
  auto want = [&](const char* g) { return only.empty() || std::string(g).find(only) != std::string::npos; };
  std::printf("training kernel emulation tests, seed %u\n", seed);
  std::mt19937 rng(seed);
  try {
    if (want("kernels")) {
      // Awkward sizes: 1 row, d_in not a multiple of 32, odd d_sae, k = 1, k = d_sae.
      test_residual(rng, 1, 45, 37, 1, false);
      test_residual(rng, 7, 33, 9, 9, false);
      test_residual(rng, 5, 70, 101, 7, true);
      test_residual(rng, 6, 33, 40, 40, false, true);
      test_latent_grads(rng, 1, 45, 37, 1);
      test_latent_grads(rng, 9, 33, 11, 11);
      test_latent_grads(rng, 13, 70, 101, 7);
      test_latent_grads(rng, 11, 33, 29, 29, true);
      test_bdec(rng, 1, 45, 37);
      test_bdec(rng, 70, 33, 101);
      test_pair_dots_norms(rng, 7, 45, 37, 19);
      test_pair_dots_norms(rng, 1, 1, 3, 0);
      test_transpose_sum(rng, 37, 45);
      test_transpose_sum(rng, 1, 70);
      test_adam_renorm(rng, 37, 45);
      test_aux_topk(rng, 1, 45, 37, 13, 1);
      test_aux_topk(rng, 6, 33, 101, 41, 7);
      test_aux_topk(rng, 5, 20, 40, 9, 9);
      test_aux_topk(rng, 3, 17, 70, 70, 35);
    }
    if (want("step")) {
      using A = saekit::TrainArch;
      test_step_vs_cpu(rng, 1, 45, 37, 1, 4, 5, 2);
      test_step_vs_cpu(rng, 19, 33, 101, 7, 16, 23, 3);
      test_step_vs_cpu(rng, 9, 20, 31, 31, 8, 0, 2);
      test_step_vs_cpu(rng, 12, 40, 65, 5, 40, 9, 2);  // k_aux > dead: every dead latent's positive value
      // batchtopk: 1 row (the cut is a per-row top-k), k = d_sae (every positive value), AuxK on.
      test_step_vs_cpu(rng, 1, 45, 37, 3, 4, 5, 2, A::BatchTopK);
      test_step_vs_cpu(rng, 19, 33, 101, 7, 16, 23, 4, A::BatchTopK);
      test_step_vs_cpu(rng, 6, 20, 31, 31, 8, 4, 2, A::BatchTopK);
      test_step_vs_cpu(rng, 1, 45, 37, 0, 0, 0, 2, A::Standard);
      test_step_vs_cpu(rng, 17, 33, 101, 0, 0, 9, 3, A::Standard);
      test_step_vs_cpu(rng, 1, 45, 37, 0, 0, 0, 2, A::JumpReLU);
      test_step_vs_cpu(rng, 17, 33, 101, 0, 0, 9, 3, A::JumpReLU);
      for (A a : {A::TopK, A::BatchTopK, A::Standard, A::JumpReLU}) test_deterministic(rng, a);
      for (A a : {A::TopK, A::BatchTopK, A::Standard, A::JumpReLU}) test_resume(rng, a);
      test_bad_input(rng);
      test_self_test();
      test_phase_report(rng);
      test_refusals();
    }
    if (want("planted"))
      for (saekit::TrainArch a : {saekit::TrainArch::TopK, saekit::TrainArch::BatchTopK, saekit::TrainArch::Standard, saekit::TrainArch::JumpReLU}) test_planted(seed, a);
  } catch (const std::exception& e) {
    check(false, std::string("exception: ") + e.what());
  }
  std::printf("%s\n", failures == 0 ? "all passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
