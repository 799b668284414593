// CPU vs CUDA-model parity on random data, shared by the emulated check (emu/, in CI) and the
// GPU check (gpu_check.cpp, on a machine with a GPU): the same cases, the same comparison.
#pragma once
#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../backend.h"

namespace saekit::parity {

struct Case {
  const char* name;
  Activation act;
  int64_t rows, d_in, d_sae, k;
  Normalization norm = Normalization::None;
  int64_t d_out = 0;  // a transcoder's decode width (0: an SAE, d_in); b_dec then stays off the input
};

/** Awkward shapes: one row, odd widths, d_sae not a multiple of 32, k = 1 and k = d_sae. */
inline std::vector<Case> small_cases() {
  return {
      {"topk 1 row", Activation::TopK, 1, 64, 96, 8},         {"topk odd, k=1", Activation::TopK, 7, 33, 70, 1},
      {"topk k=d_sae", Activation::TopK, 5, 17, 45, 45},     {"topk several warps", Activation::TopK, 13, 50, 200, 32},
      {"standard odd", Activation::Standard, 9, 33, 100, 0}, {"jumprelu odd", Activation::JumpReLU, 9, 33, 100, 0},
      {"transcoder jumprelu d_out<d_in", Activation::JumpReLU, 9, 33, 100, 0, Normalization::None, 20},
      {"transcoder topk d_out>d_in", Activation::TopK, 7, 24, 96, 8, Normalization::None, 41},
  };
}

struct Weights {
  std::vector<float> W_enc, b_enc, W_dec, b_dec, threshold;
};

inline Weights random_weights(std::mt19937& rng, const Case& c) {
  std::normal_distribution<float> n(0.f, 1.f);
  Weights w;
  w.W_enc.resize(c.d_in * c.d_sae);
  const int64_t d_out = c.d_out > 0 ? c.d_out : c.d_in;
  w.W_dec.resize(c.d_sae * d_out);
  w.b_enc.resize(c.d_sae);
  w.b_dec.resize(d_out);
  w.threshold.resize(c.d_sae);
  const float s = 1.f / std::sqrt(static_cast<float>(c.d_in));
  for (auto& v : w.W_enc) v = n(rng) * s;
  for (auto& v : w.W_dec) v = n(rng) * s;
  for (auto& v : w.b_enc) v = n(rng) * 0.1f - 0.05f;
  for (auto& v : w.b_dec) v = n(rng) * 0.1f;
  for (auto& v : w.threshold) v = std::fabs(n(rng)) * 0.3f;
  return w;
}

/** Per row: the two codes agree except between values within TOL of the row's cut. */
inline bool same_codes(const SparseCodes& a, const SparseCodes& b, int64_t rows, float tol, std::string* why) {
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<std::pair<int, float>> ra, rb;
    for (uint32_t e = a.indptr[r]; e < a.indptr[r + 1]; ++e) ra.push_back({a.indices[e], a.values[e]});
    for (uint32_t e = b.indptr[r]; e < b.indptr[r + 1]; ++e) rb.push_back({b.indices[e], b.values[e]});
    float cut = INFINITY;
    for (auto& p : ra) cut = std::min(cut, p.second);
    for (auto& p : rb) cut = std::min(cut, p.second);
    size_t i = 0, j = 0;
    while (i < ra.size() || j < rb.size()) {
      if (i < ra.size() && j < rb.size() && ra[i].first == rb[j].first) {
        if (std::fabs(ra[i].second - rb[j].second) > tol) {
          *why = "row " + std::to_string(r) + " latent " + std::to_string(ra[i].first) + " values differ";
          return false;
        }
        ++i, ++j;
      } else if (j >= rb.size() || (i < ra.size() && ra[i].first < rb[j].first)) {
        if (ra[i].second > cut + tol && ra[i].second > tol) {
          *why = "row " + std::to_string(r) + " latent " + std::to_string(ra[i].first) + " only on the CPU";
          return false;
        }
        ++i;
      } else {
        if (rb[j].second > cut + tol && rb[j].second > tol) {
          *why = "row " + std::to_string(r) + " latent " + std::to_string(rb[j].first) + " only on the other backend";
          return false;
        }
        ++j;
      }
    }
  }
  return true;
}

using ModelFactory = std::function<std::unique_ptr<BackendModel>(const SaeSpec&, const SaeWeightsView&)>;

/** Encodes and decodes the same random data on the CPU backend and on MAKE_OTHER's model. */
inline bool check_case(const Case& c, std::mt19937& rng, const ModelFactory& make_other, std::string* why) {
  Weights w = random_weights(rng, c);
  SaeSpec spec;
  spec.d_in = c.d_in;
  spec.d_sae = c.d_sae;
  spec.k = c.k;
  spec.activation = c.act;
  spec.normalization = c.norm;
  spec.d_out = c.d_out;
  if (c.d_out > 0) spec.apply_b_dec_to_input = false;
  SaeWeightsView view{w.W_enc.data(), false, w.b_enc.data(), w.W_dec.data(), w.b_dec.data(), c.act == Activation::JumpReLU ? w.threshold.data() : nullptr};
  std::normal_distribution<float> n(0.f, 1.f);
  std::vector<float> x(c.rows * c.d_in);
  for (auto& v : x) v = n(rng);
  try {
    auto cpu_model = cpu_backend().load(spec, view);
    auto other = make_other(spec, view);
    SparseCodes a, b;
    cpu_model->encode(x.data(), c.rows, &a);
    other->encode(x.data(), c.rows, &b);
    if (!same_codes(a, b, c.rows, 1e-4f, why)) return false;
    std::vector<float> ya(c.rows * spec.out_width(), NAN), yb(c.rows * spec.out_width(), NAN);
    const bool per_row = c.norm != Normalization::None;
    if (per_row && (a.row_scale != b.row_scale || a.row_shift != b.row_shift)) {
      *why = "per-row normalization stats differ";
      return false;
    }
    SparseCodesView v{c.rows, a.indptr.data(), a.indices.data(), a.values.data(), per_row ? a.row_scale.data() : nullptr, per_row ? a.row_shift.data() : nullptr};
    cpu_model->decode(v, ya.data());
    other->decode(v, yb.data());
    for (size_t i = 0; i < ya.size(); ++i) {
      if (!(std::fabs(ya[i] - yb[i]) <= 1e-4f * (1.f + std::fabs(ya[i])))) {
        *why = "decode differs at element " + std::to_string(i);
        return false;
      }
    }
  } catch (const std::exception& e) {
    *why = e.what();
    return false;
  }
  return true;
}

}  // namespace saekit::parity
