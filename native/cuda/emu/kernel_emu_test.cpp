// Runs the CUDA kernels under CPU emulation (cuda_emu.h) against float64 references, and the
// CUDA backend's model against the CPU backend, at small and awkward shapes: the CI check of the GPU kernel source on a machine without a GPU. Also
// checks the emulation's own warp intrinsics on a test kernel. Prints one line per case and
// exits 1 on the first mismatch. Seeded from argv[1] (fresh seed per run from the test).
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../cuda_model.h"
#include "../kernels/mma.cuh"
#include "../kernels/encode_screened.cuh"
#include "../parity.h"
#include "emu_test_util.h"

using saekit::emu::dim3;
using saekit::emu_test::check;
using saekit::emu_test::failures;
using saekit::emu_test::fmt;

namespace {

// A test kernel for the emulated warp intrinsics: butterfly sum, broadcast, ballot.
__global__ void warp_probe_kernel(const int* in, int* sum_out, int* bcast_out, unsigned* ballot_out) {
  const int t = static_cast<int>(threadIdx.x + blockIdx.x * blockDim.x);
  int v = in[t];
  for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  sum_out[t] = v;
  bcast_out[t] = __shfl_sync(0xffffffffu, in[t], 5);
  ballot_out[t] = __ballot_sync(0xffffffffu, in[t] % 3 == 0);
}

void test_warp_intrinsics(std::mt19937& rng) {
  const int blocks = 2, threads = 96;
  const int n = blocks * threads;
  std::vector<int> in(n), sum(n, -1), bcast(n, -1);
  std::vector<unsigned> ballot(n, 0xdeadbeef);
  for (auto& x : in) x = static_cast<int>(rng() % 1000);
  saekit::emu::launch(saekit::emu::dim3(blocks), saekit::emu::dim3(threads), warp_probe_kernel, in.data(), sum.data(), bcast.data(), ballot.data());
  bool ok = true;
  for (int w = 0; w < n / 32; ++w) {
    int s = 0;
    unsigned b = 0;
    for (int l = 0; l < 32; ++l) {
      s += in[w * 32 + l];
      if (in[w * 32 + l] % 3 == 0) b |= 1u << l;
    }
    for (int l = 0; l < 32; ++l) {
      ok = ok && sum[w * 32 + l] == s && bcast[w * 32 + l] == in[w * 32 + 5] && ballot[w * 32 + l] == b;
    }
  }
  check(ok, "warp intrinsics: __shfl_xor_sync butterfly sum, __shfl_sync broadcast, __ballot_sync (2 blocks x 3 warps)");
}

void test_decode(std::mt19937& rng, int rows, int d_in, int d_sae, int max_nnz, int grid, int block) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> W(static_cast<size_t>(d_sae) * d_in), b(d_in);
  for (auto& x : W) x = normal(rng);
  for (auto& x : b) x = normal(rng);
  std::vector<uint32_t> indptr(rows + 1, 0);
  std::vector<int32_t> indices;
  std::vector<float> values;
  for (int r = 0; r < rows; ++r) {
    const int nnz = max_nnz == 0 ? 0 : static_cast<int>(rng() % (max_nnz + 1));
    std::vector<int32_t> picked;
    while (static_cast<int>(picked.size()) < std::min(nnz, d_sae)) {
      const int32_t f = static_cast<int32_t>(rng() % d_sae);
      bool seen = false;
      for (auto p : picked) seen = seen || p == f;
      if (!seen) picked.push_back(f);
    }
    std::sort(picked.begin(), picked.end());
    for (auto f : picked) {
      indices.push_back(f);
      values.push_back(std::fabs(normal(rng)) + 0.01f);
    }
    indptr[r + 1] = static_cast<uint32_t>(indices.size());
  }
  std::vector<float> out(static_cast<size_t>(rows) * d_in, std::nanf(""));  // poisoned
  saekit::emu::launch(saekit::emu::dim3(grid), saekit::emu::dim3(block), saekit::cuda::sparse_decode_kernel, W.data(), b.data(),
                      indptr.data(), indices.data(), values.data(), rows, d_in, out.data());
  double worst = 0;
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < d_in; ++j) {
      double ref = b[j];
      double mag = std::fabs(b[j]);
      for (uint32_t e = indptr[r]; e < indptr[r + 1]; ++e) {
        ref += static_cast<double>(values[e]) * W[static_cast<size_t>(indices[e]) * d_in + j];
        mag += std::fabs(static_cast<double>(values[e]) * W[static_cast<size_t>(indices[e]) * d_in + j]);
      }
      const double got = out[static_cast<size_t>(r) * d_in + j];
      const double err = std::isfinite(got) ? std::fabs(got - ref) / (1e-30 + mag) : INFINITY;
      if (err > worst) worst = err;
    }
  }
  // fp32 accumulation of at most max_nnz + 1 terms: relative to the sum of magnitudes.
  const bool ok = worst <= 1e-6 * (max_nnz + 2);
  check(ok, "sparse_decode rows " + std::to_string(rows) + " d_in " + std::to_string(d_in) + " d_sae " + std::to_string(d_sae) + " nnz<=" +
                std::to_string(max_nnz) + " grid " + std::to_string(grid) + " block " + std::to_string(block) + ": worst error " + fmt(worst));
}

// Top-k encode vs a float64 reference: the chosen set may differ from the reference's only
// between values within fp32 rounding of the k-th value; values match to fp32 accuracy;
// indices ascend; zeros (ReLU) are dropped.
void test_encode_topk(std::mt19937& rng, int rows, int d_in, int d_sae, int k, int grid, bool ties) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows) * d_in), W(static_cast<size_t>(d_in) * d_sae), be(d_sae), bd(d_in);
  for (auto& v : x) v = normal(rng);
  for (auto& v : W) v = normal(rng) * 0.2f;
  for (auto& v : be) v = normal(rng) * 0.1f;
  for (auto& v : bd) v = normal(rng) * 0.1f;
  if (ties) {
    // Many identical latents: duplicated W_enc columns and biases (exact ties at every rank).
    for (int j = 1; j < d_sae; j += 2)
      for (int i = 0; i < d_in; ++i) W[static_cast<size_t>(i) * d_sae + j] = W[static_cast<size_t>(i) * d_sae + j - 1];
    for (int j = 1; j < d_sae; j += 2) be[j] = be[j - 1];
  }
  std::vector<int32_t> oi(static_cast<size_t>(rows) * k, -7), oc(rows, -7);
  std::vector<float> ov(static_cast<size_t>(rows) * k, std::nanf(""));
  saekit::emu::launch(saekit::emu::dim3(grid), saekit::emu::dim3(32 * saekit::cuda::ENCODE_WARPS_PER_BLOCK), saekit::cuda::encode_topk_f32_kernel, x.data(), W.data(),
                      be.data(), bd.data(), 1, rows, d_in, d_sae, k, oi.data(), ov.data(), oc.data());
  bool ok = true;
  std::string why;
  for (int r = 0; r < rows && ok; ++r) {
    std::vector<double> pre(d_sae);
    double scale = 0;
    for (int j = 0; j < d_sae; ++j) {
      double acc = be[j], mag = std::fabs(be[j]);
      for (int i = 0; i < d_in; ++i) {
        const double xi = static_cast<double>(x[static_cast<size_t>(r) * d_in + i]) - bd[i];
        acc += xi * W[static_cast<size_t>(i) * d_sae + j];
        mag += std::fabs(xi * W[static_cast<size_t>(i) * d_sae + j]);
      }
      pre[j] = acc;
      scale = std::max(scale, mag);
    }
    const double tol = 4e-7 * (d_in + 2) * scale;
    std::vector<double> sorted(pre);
    std::sort(sorted.begin(), sorted.end(), std::greater<double>());
    const double kth = sorted[k - 1];
    const int n = oc[r];
    std::vector<bool> chosen(d_sae);
    for (int e = 0; e < n; ++e) {
      const int j = oi[static_cast<size_t>(r) * k + e];
      const float v = ov[static_cast<size_t>(r) * k + e];
      if (j < 0 || j >= d_sae || (e > 0 && oi[static_cast<size_t>(r) * k + e - 1] >= j)) { ok = false; why = "indices not ascending/in range"; break; }
      if (!(v > 0) || std::fabs(v - pre[j]) > tol) { ok = false; why = "value " + fmt(v) + " vs " + fmt(pre[j]); break; }
      if (pre[j] < kth - tol) { ok = false; why = "latent " + std::to_string(j) + " below the k-th value"; break; }
      chosen[j] = true;
    }
    // Every latent clearly above the k-th value and positive must be there.
    for (int j = 0; j < d_sae && ok; ++j)
      if (!chosen[j] && pre[j] > kth + tol && pre[j] > tol) { ok = false; why = "missed latent " + std::to_string(j); }
    // The kept count: positive values among the top k (up to ties at zero).
    int positives = 0;
    for (int t = 0; t < k; ++t) positives += sorted[t] > tol;
    if (ok && (n < positives || n > k)) { ok = false; why = "count " + std::to_string(n) + " vs about " + std::to_string(positives); }
    // Exact ties: of equal values at the boundary the lower index wins.
    if (ok && ties) {
      for (int j = 1; j < d_sae; j += 2)
        if (chosen[j] && !chosen[j - 1] && pre[j - 1] > tol) { ok = false; why = "tie broken toward the higher index " + std::to_string(j); }
    }
  }
  check(ok, "encode_topk_f32 rows " + std::to_string(rows) + " d_in " + std::to_string(d_in) + " d_sae " + std::to_string(d_sae) + " k " + std::to_string(k) +
                " grid " + std::to_string(grid) + (ties ? " (exact ties)" : "") + (ok ? "" : ": " + why));
}

// Standard / jumprelu encode, count-then-fill, vs float64: every latent kept or dropped as the
// reference says, except within fp32 rounding of the cut (0 or the threshold).
void test_encode_threshold(std::mt19937& rng, int rows, int d_in, int d_sae, bool jump, int grid) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows) * d_in), W(static_cast<size_t>(d_in) * d_sae), be(d_sae), bd(d_in), th(d_sae);
  for (auto& v : x) v = normal(rng);
  for (auto& v : W) v = normal(rng) * 0.2f;
  for (auto& v : be) v = normal(rng) * 0.3f - 0.2f;
  for (auto& v : bd) v = normal(rng) * 0.1f;
  for (auto& v : th) v = std::fabs(normal(rng)) * 0.5f;
  const dim3 block(32 * saekit::cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK);
  std::vector<int32_t> count(rows, -1);
  saekit::emu::launch(dim3(grid), block, saekit::cuda::encode_threshold_f32_kernel, x.data(), W.data(), be.data(), bd.data(),
                      jump ? static_cast<const float*>(th.data()) : static_cast<const float*>(nullptr), 1, rows, d_in, d_sae,
                      static_cast<const uint32_t*>(nullptr), count.data(), static_cast<int32_t*>(nullptr), static_cast<float*>(nullptr));
  std::vector<uint32_t> indptr(rows + 1, 0);
  for (int r = 0; r < rows; ++r) indptr[r + 1] = indptr[r] + static_cast<uint32_t>(count[r]);
  std::vector<int32_t> idx(indptr[rows], -7);
  std::vector<float> val(indptr[rows], std::nanf(""));
  saekit::emu::launch(dim3(grid), block, saekit::cuda::encode_threshold_f32_kernel, x.data(), W.data(), be.data(), bd.data(),
                      jump ? static_cast<const float*>(th.data()) : static_cast<const float*>(nullptr), 1, rows, d_in, d_sae,
                      static_cast<const uint32_t*>(indptr.data()), static_cast<int32_t*>(nullptr), idx.data(), val.data());
  bool ok = true;
  std::string why;
  for (int r = 0; r < rows && ok; ++r) {
    std::vector<int> got(idx.begin() + indptr[r], idx.begin() + indptr[r + 1]);
    for (size_t e = 1; e < got.size(); ++e)
      if (got[e - 1] >= got[e]) { ok = false; why = "indices not ascending"; }
    size_t e = 0;
    for (int j = 0; j < d_sae && ok; ++j) {
      double acc = be[j], mag = std::fabs(be[j]);
      for (int i = 0; i < d_in; ++i) {
        const double xi = static_cast<double>(x[static_cast<size_t>(r) * d_in + i]) - bd[i];
        acc += xi * W[static_cast<size_t>(i) * d_sae + j];
        mag += std::fabs(xi * W[static_cast<size_t>(i) * d_sae + j]);
      }
      const double cut = jump ? std::max(0.0, static_cast<double>(th[j])) : 0.0;
      const double tol = 4e-7 * (d_in + 2) * mag;
      const bool present = e < got.size() && got[e] == j;
      if (present) {
        if (std::fabs(val[indptr[r] + e] - acc) > tol) { ok = false; why = "value of latent " + std::to_string(j); }
        ++e;
      }
      if (present && acc < cut - tol) { ok = false; why = "kept latent " + std::to_string(j) + " below the cut"; }
      if (!present && acc > cut + tol) { ok = false; why = "dropped latent " + std::to_string(j) + " above the cut"; }
    }
  }
  check(ok, std::string("encode_") + (jump ? "jumprelu" : "standard") + "_f32 rows " + std::to_string(rows) + " d_in " + std::to_string(d_in) + " d_sae " +
                std::to_string(d_sae) + " grid " + std::to_string(grid) + " (count then fill)" + (ok ? "" : ": " + why));
}

// The CUDA backend's model itself (cuda_model.h: uploads, chunking, launches, CSR assembly),
// emulated, through the backend interface against the CPU backend.
void test_model_parity(std::mt19937& rng) {
  auto cases = saekit::parity::small_cases();
  cases.push_back({"topk layer_norm rows", saekit::Activation::TopK, 9, 40, 100, 8, saekit::Normalization::LayerNorm});
  cases.push_back({"jumprelu constant_norm_rescale rows", saekit::Activation::JumpReLU, 9, 40, 100, 0, saekit::Normalization::ConstantNormRescale});
  cases.push_back({"topk 30 rows in chunks of 4 (two slots in flight, CSR in order)", saekit::Activation::TopK, 30, 24, 90, 5});
  cases.push_back({"standard 30 rows in chunks of 4", saekit::Activation::Standard, 30, 24, 90, 0});
  cases.push_back({"transcoder topk d_out 37, 30 rows in chunks of 4", saekit::Activation::TopK, 30, 24, 90, 5, saekit::Normalization::None, 37});
  for (const auto& c : cases) {
    const bool chunked = std::string(c.name).find("chunks of 4") != std::string::npos;
    if (chunked) setenv("SAEKIT_CUDA_CHUNK_ROWS", "4", 1);
    std::string why;
    const bool ok = saekit::parity::check_case(
        c, rng, [](const saekit::SaeSpec& s, const saekit::SaeWeightsView& v) { return std::unique_ptr<saekit::BackendModel>(new saekit::CudaModel(s, v)); }, &why);
    if (chunked) unsetenv("SAEKIT_CUDA_CHUNK_ROWS");
    check(ok, std::string("CudaModel vs CPU backend: ") + c.name + (ok ? "" : ": " + why));
  }
}

void test_mma(std::mt19937& rng, int K, int N) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<uint16_t> X(16 * K), W(static_cast<size_t>(K) * N);
  for (auto& v : X) v = saekit::cuda::bf16_bits(normal(rng));
  for (auto& v : W) v = saekit::cuda::bf16_bits(normal(rng));
  std::vector<float> out(16 * N, std::nanf(""));
  saekit::emu::launch(dim3(1), dim3(32), saekit::cuda::mma_tile_probe_kernel, X.data(), W.data(), out.data(), K, N);
  double worst = 0;
  for (int r = 0; r < 16; ++r)
    for (int n = 0; n < N; ++n) {
      double ref = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        const double p = static_cast<double>(saekit::cuda::bf16_to_float(X[r * K + k])) * saekit::cuda::bf16_to_float(W[static_cast<size_t>(k) * N + n]);
        ref += p;
        mag += std::fabs(p);
      }
      const double got = out[r * N + n];
      const double err = std::isfinite(got) ? std::fabs(got - ref) / (1e-30 + mag) : INFINITY;
      worst = std::max(worst, err);
    }
  check(worst <= 2e-6 * K, "mma m16n8k16 bf16 (emulated fragments) 16 x " + std::to_string(K) + " x " + std::to_string(N) + ": worst error " + fmt(worst));
  // bf16 rounding is to nearest even: 1 + 2^-8 is halfway between two bf16 values.
  const bool rne = saekit::cuda::bf16_bits(1.0f + 1.0f / 256) == saekit::cuda::bf16_bits(1.0f) &&
                   saekit::cuda::bf16_bits(1.0f + 3.0f / 256) == saekit::cuda::bf16_bits(1.0f + 4.0f / 256);
  check(rne, "bf16 conversion rounds to nearest even");
}

// The screened (bf16 mma + bound + fp32 rescoring) top-k must give exactly what the fp32
// baseline kernel gives (both rescore with the same fp32 pre-activation), candidates per row
// must stay few, and a tiny candidate cap must fall back (overflow) and still be exact.
enum class ScreenData { Random, Ties, NearTies, Aligned };

void test_encode_screened(std::mt19937& rng, int rows, int d_in, int d_sae, int k, int cap, ScreenData mode = ScreenData::Random, int parts = 1) {
  const bool ties = mode == ScreenData::Ties, near_ties = mode == ScreenData::NearTies, aligned = mode == ScreenData::Aligned;
  using namespace saekit::cuda;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows) * d_in), W(static_cast<size_t>(d_in) * d_sae), be(d_sae), bd(d_in);
  for (auto& v : x) v = normal(rng);
  const float ws = 1.f / std::sqrt(static_cast<float>(d_in));
  for (auto& v : W) v = normal(rng) * ws;
  for (auto& v : be) v = normal(rng) * 0.1f;
  for (auto& v : bd) v = normal(rng) * 0.1f;
  if (ties) {
    for (int j = 1; j < d_sae; j += 2) {
      for (int i = 0; i < d_in; ++i) W[static_cast<size_t>(i) * d_sae + j] = W[static_cast<size_t>(i) * d_sae + j - 1];
      be[j] = be[j - 1];
    }
  }
  if (aligned) {
    // Worst case for the bound: rows 2^e p (p = +-1, exact in bf16, so x' - x~ = 0; e from
    // -20 to 20: tiny and huge norms), no biases. One latent in six belongs to a group sharing
    // a bf16 vector v (|v_i| in [0.6, 0.9): one binade, ulp 2^-8; signs of p) up to +-3 ulps
    // in eight elements (screened values spread by up to ~0.1 ||x'|| / 8), plus an error term
    // a_j 0.9 2^-9 p that bf16 rounds away (below half an ulp) and that is parallel to every
    // row, so Cauchy-Schwarz is tight: the exact values differ from the screened ones by
    // +-||x'|| ||w_j - w~_j|| exactly, as much as the screened spread, reordering the top k. The other latents are decoys
    // (-v: far below), admitted by the early tiles and compacted away.
    std::uniform_real_distribution<float> u(-1.f, 1.f), mag(0.6f, 0.9f);
    std::vector<float> p(d_in), v(d_in);
    for (auto& e : p) e = rng() % 2 ? 1.f : -1.f;
    for (int i = 0; i < d_in; ++i) v[i] = saekit::cuda::bf16_to_float(saekit::cuda::bf16_bits(p[i] * mag(rng)));  // p.v > 0 > p.(-v)
    for (int r = 0; r < rows; ++r) {
      const float scale = std::ldexp(1.f, static_cast<int>(rng() % 41) - 20);
      for (int i = 0; i < d_in; ++i) x[static_cast<size_t>(r) * d_in + i] = scale * p[i];
    }
    for (auto& e : bd) e = 0.f;
    for (int j = 0; j < d_sae; ++j) {
      be[j] = 0.f;
      const bool member = j % 6 == 0;
      const float a = u(rng);
      const int ulps = static_cast<int>(rng() % 7) - 3;
      for (int i = 0; i < d_in; ++i) {
        float w = member ? v[i] : -v[i];
        if (member && i < 8) w += static_cast<float>(ulps) * 0.00390625f * p[i];
        if (member) w += a * 0.9f * 0.001953125f * p[i];
        W[static_cast<size_t>(i) * d_sae + j] = w;
      }
    }
  }
  if (near_ties) {
    // Pairs of latents closer than bf16 can tell apart: the screen alone cannot order them, so
    // only the bound keeps the right one among the candidates.
    std::uniform_real_distribution<float> u(-1.f, 1.f);
    for (int j = 1; j < d_sae; j += 2) {
      for (int i = 0; i < d_in; ++i) W[static_cast<size_t>(i) * d_sae + j] = W[static_cast<size_t>(i) * d_sae + j - 1] * (1.f + 1e-3f * u(rng));
      be[j] = be[j - 1];
    }
  }
  const ScreenWeights p = screen_pack_weights(W.data(), false, d_in, d_sae);
  const int rows_pad = (rows + SCREEN_BM - 1) / SCREEN_BM * SCREEN_BM;
  std::vector<uint16_t> xb(static_cast<size_t>(rows_pad) * p.Kp, 0xdead);
  std::vector<float> rnorm(rows_pad, std::nanf("")), rerr(rows_pad, std::nanf(""));
  saekit::emu::launch(dim3(2), dim3(64), screen_prep_rows_kernel, x.data(), bd.data(), 1, rows, rows_pad, d_in, p.Kp, xb.data(), rnorm.data(), rerr.data());
  std::vector<float> cand_d(static_cast<size_t>(parts) * rows_pad * cap, std::nanf(""));
  std::vector<int32_t> cand_j(static_cast<size_t>(parts) * rows_pad * cap, -1), ncand(static_cast<size_t>(parts) * rows_pad, -7);
  // Two row tiles on one block when there are two: the grid-stride loop and the shared state
  // reset. PARTS > 1: the latent split (grid.y), then the merge.
  saekit::emu::launch(dim3(1, parts), dim3(SCREEN_THREADS), screen_candidates_kernel, static_cast<const uint16_t*>(xb.data()), static_cast<const uint16_t*>(p.Wt.data()),
                      static_cast<const float*>(be.data()), static_cast<const float*>(rnorm.data()), static_cast<const float*>(rerr.data()),
                      static_cast<const float*>(p.werr.data()), static_cast<const float*>(p.wtil.data()), static_cast<const float*>(nullptr), rows, rows_pad, d_in, p.Kp, d_sae, p.Np, k, cap, cand_d.data(),
                      cand_j.data(), ncand.data());
  std::vector<int32_t> merged(static_cast<size_t>(rows_pad) * cap, -1);
  if (parts > 1) {
    saekit::emu::launch(dim3(2), dim3(64), screen_merge_kernel, static_cast<const float*>(cand_d.data()), static_cast<const int32_t*>(cand_j.data()),
                        ncand.data(), parts, rows, rows_pad, cap, k, d_in, static_cast<const float*>(be.data()), static_cast<const float*>(p.werr.data()),
                        static_cast<const float*>(p.wtil.data()), static_cast<const float*>(rnorm.data()), static_cast<const float*>(rerr.data()), merged.data());
    cand_j = merged;
  }
  std::vector<int32_t> si(static_cast<size_t>(rows) * k, -7), sc(rows, -7), fi(static_cast<size_t>(rows) * k, -7), fc(rows, -7);
  std::vector<float> sv(static_cast<size_t>(rows) * k, std::nanf("")), fv(static_cast<size_t>(rows) * k, std::nanf(""));
  saekit::emu::launch(dim3(2), dim3(128), screen_rescore_kernel, static_cast<const float*>(x.data()), static_cast<const float*>(p.WT.data()),
                      static_cast<const float*>(be.data()), static_cast<const float*>(bd.data()), 1, rows, d_in, d_sae, k, cap,
                      static_cast<const int32_t*>(cand_j.data()), static_cast<const int32_t*>(ncand.data()), si.data(), sv.data(), sc.data());
  saekit::emu::launch(dim3(2), dim3(32 * ENCODE_WARPS_PER_BLOCK), encode_topk_f32_kernel, x.data(), W.data(), be.data(), bd.data(), 1, rows, d_in, d_sae, k,
                      fi.data(), fv.data(), fc.data());
  bool same = true;
  long total = 0;
  int overflow = 0;
  for (int r = 0; r < rows; ++r) {
    if (ncand[r] > cap) ++overflow;
    else total += ncand[r];
    same = same && sc[r] == fc[r];
    for (int e = 0; same && e < fc[r]; ++e)
      same = si[static_cast<size_t>(r) * k + e] == fi[static_cast<size_t>(r) * k + e] && sv[static_cast<size_t>(r) * k + e] == fv[static_cast<size_t>(r) * k + e];
  }
  bool lists_ok = true;
  for (int r = 0; r < rows; ++r) {
    if (ncand[r] > cap) continue;
    std::vector<int32_t> l(cand_j.begin() + static_cast<size_t>(r) * cap, cand_j.begin() + static_cast<size_t>(r) * cap + ncand[r]);
    std::sort(l.begin(), l.end());
    lists_ok = lists_ok && std::adjacent_find(l.begin(), l.end()) == l.end() && (l.empty() || (l.front() >= 0 && l.back() < d_sae));
  }
  same = same && lists_ok;
  const int screened = rows - overflow;
  check(same, "encode_screened_bf16 rows " + std::to_string(rows) + " d_in " + std::to_string(d_in) + " d_sae " + std::to_string(d_sae) + " k " +
                  std::to_string(k) + " cap " + std::to_string(cap) + (ties ? " (exact ties)" : "") + (near_ties ? " (near ties below bf16 resolution)" : "") +
                  (aligned ? " (errors parallel to the rows: Cauchy-Schwarz tight, norms 2^-20..2^20)" : "") +
                  (parts > 1 ? " latent split in " + std::to_string(parts) + " + merge" : "") + ": identical to the fp32 kernel" + (lists_ok ? "" : " (BAD candidate lists)") + "; candidates/row " +
                  (screened ? fmt(static_cast<double>(total) / screened) : std::string("-")) + ", overflow rows " + std::to_string(overflow));
}

// The threshold screen (standard / jumprelu: candidates up >= max(threshold, 0), fp32
// rescoring count then fill) must give exactly the fp32 threshold kernel's codes once each row
// is sorted by latent; CAP below a row's admissions forces the overflow path (every latent).
void test_encode_screened_threshold(std::mt19937& rng, int rows, int d_in, int d_sae, bool jump, int cap, int parts) {
  using namespace saekit::cuda;
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows) * d_in), W(static_cast<size_t>(d_in) * d_sae), be(d_sae), bd(d_in), th(d_sae), admit(d_sae);
  for (auto& v : x) v = normal(rng);
  const float ws = 1.f / std::sqrt(static_cast<float>(d_in));
  for (auto& v : W) v = normal(rng) * ws;
  for (auto& v : be) v = normal(rng) * 0.3f - 0.4f;
  for (auto& v : bd) v = normal(rng) * 0.1f;
  for (auto& v : th) v = std::fabs(normal(rng)) * 0.5f;
  // Latents whose exact value sits within bf16 error of the threshold: the screen cannot decide them.
  for (int j = 0; j < d_sae; j += 7) th[j] = 0.1f;
  for (int j = 0; j < d_sae; ++j) admit[j] = jump ? std::max(th[j], 0.f) : 0.f;
  const ScreenWeights p = screen_pack_weights(W.data(), false, d_in, d_sae);
  const int rows_pad = (rows + SCREEN_BM - 1) / SCREEN_BM * SCREEN_BM;
  std::vector<uint16_t> xb(static_cast<size_t>(rows_pad) * p.Kp);
  std::vector<float> rnorm(rows_pad), rerr(rows_pad);
  saekit::emu::launch(dim3(2), dim3(64), screen_prep_rows_kernel, x.data(), bd.data(), 1, rows, rows_pad, d_in, p.Kp, xb.data(), rnorm.data(), rerr.data());
  std::vector<float> cand_d(static_cast<size_t>(parts) * rows_pad * cap, std::nanf(""));
  std::vector<int32_t> cand_j(static_cast<size_t>(parts) * rows_pad * cap, -1), ncand(static_cast<size_t>(parts) * rows_pad, -7);
  saekit::emu::launch(dim3(1, parts), dim3(SCREEN_THREADS), screen_candidates_kernel, static_cast<const uint16_t*>(xb.data()),
                      static_cast<const uint16_t*>(p.Wt.data()), static_cast<const float*>(be.data()), static_cast<const float*>(rnorm.data()),
                      static_cast<const float*>(rerr.data()), static_cast<const float*>(p.werr.data()), static_cast<const float*>(p.wtil.data()),
                      static_cast<const float*>(admit.data()), rows, rows_pad, d_in, p.Kp, d_sae, p.Np, 0, cap, cand_d.data(), cand_j.data(), ncand.data());
  if (parts > 1) {
    std::vector<int32_t> merged(static_cast<size_t>(rows_pad) * cap, -1);
    saekit::emu::launch(dim3(2), dim3(64), screen_merge_kernel, static_cast<const float*>(cand_d.data()), static_cast<const int32_t*>(cand_j.data()),
                        ncand.data(), parts, rows, rows_pad, cap, INT_MAX, d_in, static_cast<const float*>(be.data()), static_cast<const float*>(p.werr.data()),
                        static_cast<const float*>(p.wtil.data()), static_cast<const float*>(rnorm.data()), static_cast<const float*>(rerr.data()), merged.data());
    cand_j = merged;
  }
  const float* thp = jump ? th.data() : nullptr;
  auto run = [&](bool screened, std::vector<uint32_t>& ip, std::vector<int32_t>& idx, std::vector<float>& val) {
    std::vector<int32_t> count(rows, -1);
    ip.assign(rows + 1, 0);
    for (int pass = 0; pass < 2; ++pass) {
      const uint32_t* ipp = pass ? ip.data() : nullptr;
      int32_t* cnt = pass ? nullptr : count.data();
      if (pass) {
        for (int r = 0; r < rows; ++r) ip[r + 1] = ip[r] + static_cast<uint32_t>(count[r]);
        idx.assign(ip[rows], -7);
        val.assign(ip[rows], std::nanf(""));
      }
      if (screened)
        saekit::emu::launch(dim3(2), dim3(128), screen_rescore_threshold_kernel, static_cast<const float*>(x.data()), static_cast<const float*>(p.WT.data()),
                            static_cast<const float*>(be.data()), static_cast<const float*>(bd.data()), thp, 1, rows, d_in, d_sae, cap,
                            static_cast<const int32_t*>(cand_j.data()), static_cast<const int32_t*>(ncand.data()), ipp, cnt, pass ? idx.data() : nullptr,
                            pass ? val.data() : nullptr);
      else
        saekit::emu::launch(dim3(2), dim3(32 * ENCODE_THRESHOLD_WARPS_PER_BLOCK), encode_threshold_f32_kernel, static_cast<const float*>(x.data()),
                            static_cast<const float*>(W.data()), static_cast<const float*>(be.data()), static_cast<const float*>(bd.data()), thp, 1, rows, d_in,
                            d_sae, ipp, cnt, pass ? idx.data() : nullptr, pass ? val.data() : nullptr);
    }
  };
  std::vector<uint32_t> sip, fip;
  std::vector<int32_t> si, fi;
  std::vector<float> sv, fv;
  run(true, sip, si, sv);
  run(false, fip, fi, fv);
  bool same = sip == fip;
  long cands = 0;
  int overflow = 0;
  for (int r = 0; r < rows && same; ++r) {
    if (ncand[r] > cap) ++overflow;
    else cands += ncand[r];
    std::vector<std::pair<int32_t, float>> a, b;
    for (uint32_t e = sip[r]; e < sip[r + 1]; ++e) a.push_back({si[e], sv[e]});
    for (uint32_t e = fip[r]; e < fip[r + 1]; ++e) b.push_back({fi[e], fv[e]});
    std::sort(a.begin(), a.end(), [](const auto& u, const auto& v) { return u.first < v.first; });
    same = a == b;
  }
  const int screened = rows - overflow;
  check(same, std::string("encode_screened_threshold ") + (jump ? "jumprelu" : "standard") + " rows " + std::to_string(rows) + " d_in " + std::to_string(d_in) +
                  " d_sae " + std::to_string(d_sae) + " cap " + std::to_string(cap) + (parts > 1 ? " latent split in " + std::to_string(parts) + " + merge" : "") +
                  ": identical to the fp32 kernel; candidates/row " + (screened ? fmt(static_cast<double>(cands) / screened) : std::string("-")) +
                  ", overflow rows " + std::to_string(overflow));
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned seed = argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10)) : 1u;
  std::printf("kernel emulation tests, seed %u\n", seed);
  // argv[2], optional: run only the groups whose name contains it (decode, topk, threshold, model, mma, screened).
  const std::string only = argc > 2 ? argv[2] : "";
  auto want = [&](const char* group) { return only.empty() || std::string(group).find(only) != std::string::npos; };
  std::mt19937 rng(seed);
  if (want("warp")) test_warp_intrinsics(rng);
  // Awkward shapes: one row, odd widths (scalar path), d_in < threads, more nonzeros than one
  // shared-memory chunk (64), fewer blocks than rows (grid-stride), empty rows, k = d_sae.
  if (want("decode")) test_decode(rng, 1, 768, 1000, 32, 1, 128);
  if (want("decode")) test_decode(rng, 5, 33, 40, 40, 2, 64);
  if (want("decode")) test_decode(rng, 7, 4, 9, 9, 3, 32);
  if (want("decode")) test_decode(rng, 3, 1, 5, 5, 3, 32);
  if (want("decode")) test_decode(rng, 6, 96, 300, 150, 4, 32);
  if (want("decode")) test_decode(rng, 4, 130, 200, 0, 4, 64);
  if (want("decode")) test_decode(rng, 9, 2051, 70, 70, 4, 96);
  // Encode: 1 row, odd d_in, d_sae not a multiple of 32, k = 1, k = d_sae, rows > warps in
  // the grid (grid-stride), and exact ties at the k-th value.
  if (want("topk")) test_encode_topk(rng, 1, 64, 96, 8, 1, false);
  if (want("topk")) test_encode_topk(rng, 7, 33, 70, 1, 1, false);
  if (want("topk")) test_encode_topk(rng, 5, 17, 45, 45, 2, false);
  if (want("topk")) test_encode_topk(rng, 13, 50, 200, 32, 2, false);
  if (want("topk")) test_encode_topk(rng, 6, 24, 64, 9, 1, true);
  if (want("threshold")) test_encode_threshold(rng, 1, 40, 70, false, 1);
  if (want("threshold")) test_encode_threshold(rng, 9, 33, 100, false, 2);
  if (want("threshold")) test_encode_threshold(rng, 9, 33, 100, true, 2);
  if (want("threshold")) test_encode_threshold(rng, 3, 7, 32, true, 1);
  if (want("model")) test_model_parity(rng);
  if (want("mma")) test_mma(rng, 16, 8);
  if (want("mma")) test_mma(rng, 48, 40);
  // Caps: the default (one latent tile + 2 max(k, 32)); SCREEN_BN + 4, below k, forces every
  // row to overflow (rescored over all latents). Shapes: several latent tiles with a partial
  // last one, d_in not a multiple of 32 (padded k-step), k = 1, k = d_sae, two row tiles.
  using saekit::cuda::screen_default_cap;
  using saekit::cuda::SCREEN_BN;
  if (want("screened")) test_encode_screened(rng, 20, 64, 300, 16, screen_default_cap(16));
  if (want("screened")) test_encode_screened(rng, 7, 33, 70, 1, screen_default_cap(1));
  if (want("screened")) test_encode_screened(rng, 5, 50, 45, 45, screen_default_cap(45));
  if (want("screened")) test_encode_screened(rng, 17, 40, 96, 8, screen_default_cap(8), ScreenData::Ties);
  if (want("screened")) test_encode_screened(rng, 9, 64, 200, 12, SCREEN_BN + 4);
  if (want("screened")) test_encode_screened(rng, 48, 64, 256, 16, screen_default_cap(16), ScreenData::NearTies);
  if (want("screened")) test_encode_screened(rng, 130, 40, 520, 64, screen_default_cap(64));
  if (want("screened")) test_encode_screened(rng, 12, 64, 300, 8, screen_default_cap(8), ScreenData::Aligned);
  // The latent split: 3 parts over 5 latent tiles (uneven), 4 parts over 3 tiles (one part
  // empty), the adversarial data split over parts, and an overflow in one part.
  if (want("screened")) test_encode_screened(rng, 20, 40, 600, 16, screen_default_cap(16), ScreenData::Random, 3);
  if (want("screened")) test_encode_screened(rng, 9, 33, 300, 5, screen_default_cap(5), ScreenData::Ties, 4);
  if (want("screened")) test_encode_screened(rng, 12, 64, 300, 8, screen_default_cap(8), ScreenData::Aligned, 2);
  if (want("screened")) test_encode_screened(rng, 9, 64, 400, 12, SCREEN_BN + 4, ScreenData::Random, 2);
  // The threshold screen: jumprelu and standard, a latent split, and a cap that overflows.
  if (want("screened")) test_encode_screened_threshold(rng, 20, 40, 300, true, saekit::cuda::SCREEN_THRESHOLD_CAP, 1);
  if (want("screened")) test_encode_screened_threshold(rng, 9, 33, 400, false, saekit::cuda::SCREEN_THRESHOLD_CAP, 3);
  if (want("screened")) test_encode_screened_threshold(rng, 9, 64, 300, true, SCREEN_BN + 2, 2);
  std::printf("%s\n", failures == 0 ? "all passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
