// Exact top-k through a low-precision screen (bf16 or int8), the pieces cpu_model.h assembles.
//
// Why it is exact. For a row x' and latent j with low-precision copies x~ and w~_j, the fp32
// value the screening kernel produces, s_j, differs from the exact pre-activation x'.w_j + b_j
// by at most
//   |x'.w_j - x~.w~_j|  <=  ||x'|| ||w_j - w~_j||  +  ||x' - x~|| ||w~_j||      (Cauchy-Schwarz)
//   + the rounding of the kernel's arithmetic (per screen, below).
// Taking the maxima over latents of ||w_j - w~_j||, ||w~_j|| and |b_j| gives one margin m per
// row (rounded up). Every exact value lies in [s_j - m, s_j + m], so the k-th largest exact
// value is at least t = (k-th largest s) - m, and a latent can only be among the top k (or
// positive at all) if s_j + m >= max(t, 0): the candidates are s_j >= max(kth(s) - 2m, -m).
// They are rescored in fp32 from the original weights, summed in the plain fp32 kernels'
// order (one fma chain over d_in from 0, then + b_j: rescore.cpp), so their values are the
// plain encode's bit for bit, and the top k taken among them by the same rule (value, then
// lower index). Rows with too many candidates to pay off are encoded by the plain fp32 kernel.
//
// bf16 (vdpbf16ps, encode_bf16.cpp). The kernel's rounding: fp32 accumulation, d_in roundings
// of a sum whose terms total at most ||x~|| ||w~_j||: gamma = (d_in + 4) 2^-24 times that; the
// bias add, one rounding, 2^-24 (||x~|| ||w~_j|| + |b_j|). bf16 values that would be subnormal
// are flushed to zero here, because vdpbf16ps treats subnormal inputs as zero: the norms above
// then describe exactly what the kernel multiplies.
//
// int8 (vpdpbusd, encode_int8*.cpp). W_enc is stored as s8 p_ij in [-127, 127] with a scale
// per latent, w~_ij = sw_j p_ij (sw_j = max_i |w_ij| / 127); a row as u8 = q_i + 128 with
// q_i = round(x'_i / sx) in [-127, 127], x~_i = sx q_i (sx = max_i |x'_i| / 127). vpdpbusd sums
// u8 x s8 products into int32, so I_j = dot(u8, p_j) - 128 colsum_j = sum_i q_i p_ij exactly
// (colsum_j = sum_i p_ij, kept per latent): |dot| <= 4 ceil(d_in / 4) 255 127 < 2^31 is checked
// at load (d_in up to ~66,000), else the SAE gets no int8 screen. The kernel then computes in
// fp32 s_j = fma(float(I_j), fl(sx sw_j), b_j), whose exact counterpart is
// E_j + b_j, E_j = sx sw_j I_j = x~.w~_j, |E_j| <= ||x~|| ||w~_j||. Three roundings (the
// conversion, the scale product, the fma) with |fl(a) - a| <= u|a| + eta (u = 2^-24,
// eta = 2^-150 for an underflowing result) give
//   |s_j - (E_j + b_j)| <= (3u + O(u^2)) |E_j| + u |b_j| + (1 + u)^2 |I_j| eta + eta
//                       <= 4u ||x~|| ||w~_j|| + 2u |b_j| + (127^2 d_in + 2) 2^-149,
// the O(u^2) and the jumprelu bias shift (b_j - a_j rounded once at load) inside the doubled
// terms. The margin is made infinite (the row goes to fp32) where ||x~|| ||w~||max + |b|max
// could overflow fp32. The quantization terms use the errors of the actual x~ and w~_j, so
// any choice of scales is rigorous; the absmax scales only make them small.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <vector>

#include "encode_kernels.h"
#include "isa.h"
#include "sinks.h"

namespace saekit::cpu {

// float -> bf16, round to nearest even, subnormal results flushed to (signed) zero. Inputs are
// finite (validated before they get here).
inline uint16_t to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7FFFu + ((u >> 16) & 1u);
  uint16_t h = static_cast<uint16_t>(u >> 16);
  if ((h & 0x7F80u) == 0) h &= 0x8000u;
  return h;
}

inline float from_bf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline uint32_t bf16_pair(float even, float odd) {
  return static_cast<uint32_t>(to_bf16(even)) | (static_cast<uint32_t>(to_bf16(odd)) << 16);
}

// Per-row margin (see the top of this file), rounded up.
inline float screen_margin(double x_norm, double x_err, double xq_norm, double w_err_max, double wq_norm_max,
                           double b_max, int64_t d_in) {
  const double u = std::ldexp(1.0, -24);
  const double dotq = xq_norm * wq_norm_max;
  const double m = x_norm * w_err_max + x_err * wq_norm_max + (d_in + 4) * u * dotq + u * (dotq + b_max);
  const double safe = m * (1.0 + 1e-6) + 1e-30;
  const float f = static_cast<float>(safe);
  return static_cast<double>(f) >= safe ? f : std::nextafter(f, std::numeric_limits<float>::infinity());
}

// Per-row margin of the int8 screen (see the top of this file), rounded up. xq_norm = ||x~||.
inline float int8_margin(double x_norm, double x_err, double xq_norm, double w_err_max, double wq_norm_max,
                         double b_max, int64_t d_in) {
  const double u = std::ldexp(1.0, -24);
  const double dotq = xq_norm * wq_norm_max;
  if (!(dotq + b_max < 0.5 * std::numeric_limits<float>::max())) return std::numeric_limits<float>::infinity();
  const double m = x_norm * w_err_max + x_err * wq_norm_max + 4 * u * dotq + 2 * u * b_max +
                   (127.0 * 127.0 * static_cast<double>(d_in) + 2) * std::ldexp(1.0, -149);
  const double safe = m * (1.0 + 1e-6) + 1e-30;
  const float f = static_cast<float>(safe);
  return static_cast<double>(f) >= safe ? f : std::nextafter(f, std::numeric_limits<float>::infinity());
}

// Stages the screened values of each row that may belong to its top k: those above
// max(kth - 2m, -m) with kth the row's k-th largest staged value so far. Cuts keep the
// staging in ascending latent order. A row whose candidates exceed `cap` after a cut is
// marked for the fp32 fallback and stops collecting.
class MarginSink final : public TileSink {
 public:
  // hints (may be null): per-row starting thresholds learned from earlier rows; a row whose
  // final cut falls below its hint may have lost candidates and is sent to the fallback.
  void reset(int rows, int64_t k, int64_t cap, const float* margins, const float* hints) {
    rows_ = rows;
    k_ = k;
    cap_ = cap;
    stride = cap + 2 * kPanel;
    if (static_cast<int64_t>(values_.size()) < rows * stride) {
      values_.resize(rows * stride);
      indices_.resize(rows * stride);
    }
    counts_.assign(rows, 0);
    limits_.assign(rows, cap);
    thresholds_.resize(rows);
    margins_.assign(margins, margins + rows);
    fallback_.assign(rows, 0);
    overflowed_.assign(rows, 0);
    start_.resize(rows);
    kth_.assign(rows, 0.0f);
    for (int r = 0; r < rows; ++r) {
      const float floor = below(-margins[r]);
      start_[r] = hints != nullptr ? std::max(floor, hints[r]) : floor;
      thresholds_[r] = start_[r];
      // Inputs beyond bf16's range (or weights so small they flush to zero against them) make
      // screened values inf or NaN and the margin infinite: nothing can be screened.
      if (!std::isfinite(margins[r])) {
        fallback_[r] = 1;
        thresholds_[r] = std::numeric_limits<float>::infinity();
      }
    }
    values = values_.data();
    indices = indices_.data();
    count = counts_.data();
    limit = limits_.data();
    row_threshold = thresholds_.data();
  }

  void flush(int row) override {
    cut(row);
    if (counts_[row] > cap_ * 3 / 4) {  // still too many candidates: not worth screening
      fallback_[row] = 1;
      overflowed_[row] = 1;
      counts_[row] = 0;
      thresholds_[row] = std::numeric_limits<float>::infinity();
    }
  }

  // The final cut; returns false when the row falls back to fp32: too many candidates, or a
  // starting hint above the final threshold (candidates below the hint were never staged).
  bool finish_row(int row) {
    if (fallback_[row]) return false;
    const float floor = below(-margins_[row]);
    if (counts_[row] < k_) return start_[row] <= floor;  // no cut possible: exact only unhinted
    cut(row);
    return start_[row] <= final_keep_;
  }

  // Whether the row fell back because its candidates exceeded the cap (not for a hint).
  bool overflowed(int row) const { return overflowed_[row] != 0; }

  // The row's k-th largest screened value at the final cut (0 when it had fewer than k).
  float kth(int row) const { return kth_[row]; }

  int64_t candidates(int row) const { return counts_[row]; }
  const float* row_values(int row) const { return values_.data() + row * stride; }
  const int32_t* row_indices(int row) const { return indices_.data() + row * stride; }

 private:
  static float below(float v) { return std::nextafter(v, -std::numeric_limits<float>::infinity()); }

  void cut(int row) {
    const int64_t n = counts_[row];
    if (n < k_) return;
    float* v = values_.data() + row * stride;
    int32_t* ix = indices_.data() + row * stride;
    scratch_.assign(v, v + n);
    std::nth_element(scratch_.begin(), scratch_.begin() + (k_ - 1), scratch_.end(), std::greater<float>());
    const float kth = scratch_[k_ - 1];
    const float thr = std::max(kth - 2.0f * margins_[row], -margins_[row]);
    // kth - 2m is computed in float: lower it one step so rounding cannot drop a candidate.
    const float keep = below(below(thr));
    kth_[row] = kth;
    final_keep_ = keep;
    int64_t out = 0;
    for (int64_t e = 0; e < n; ++e) {
      if (v[e] > keep) {
        v[out] = v[e];
        ix[out] = ix[e];
        ++out;
      }
    }
    counts_[row] = out;
    thresholds_[row] = std::max(thresholds_[row], keep);
  }

  int rows_ = 0;
  int64_t k_ = 0, cap_ = 0;
  std::vector<float> values_, scratch_, thresholds_, margins_, start_, kth_;
  float final_keep_ = 0;
  std::vector<int32_t> indices_;
  std::vector<int64_t> counts_, limits_;
  std::vector<uint8_t> fallback_, overflowed_;
};

// A low-precision copy of W_enc and its screening kernel (screen_copies.cpp). CpuModel keeps
// one per screen kind in use; the candidate rule, rescoring and fallback around it are shared
// (cpu_model.h, encode_screened).
struct ScreenWork;  // per-thread packed rows of one block (screen_copies.cpp)
class ScreenCopy {
 public:
  virtual ~ScreenCopy() = default;
  virtual Screen kind() const = 0;
  virtual int64_t bytes() const = 0;
  // Packs the block's rows xr ([rows][d_in], x' in fp32) for the kernel and writes each row's
  // margin.
  virtual void pack(const float* xr, int rows, ScreenWork& work, float* margins) const = 0;
  // Screens the packed rows against every latent into args.sink (args: bias, admit, n_panels
  // and sink set by the caller).
  virtual void run(const ScreenWork& work, int rows, EncodeBlockArgs args) const = 0;
  // Rows per block the kernel prefers (the encode's work split): a multiple of its row
  // blocking, sized for the packed rows to stay in L2. 0: the fp32 kernel's split.
  virtual int block_rows() const { return 0; }
  virtual int row_multiple() const { return 0; }
};

// Thread-local workspace for pack/run.
ScreenWork& thread_screen_work();

// Builds the copy from the fp32 latent-major W_enc wt [d_sae][d_in]. b_max: the bound on |b_j|
// the margin uses. Returns null where the screen cannot hold this SAE (int8: d_in too large
// for exact int32 sums; any: non-finite norms).
std::unique_ptr<ScreenCopy> make_screen_copy(Screen kind, const float* wt, int64_t d_in, int64_t d_sae, double b_max);

// The kernels.
void encode_block_bf16(const EncodeBlockArgs& args);
// AMX-BF16 (encode_amx_bf16.inc): rows x (ktiles x 32 d_in) A against n_panels panels of B.
struct AmxBlockArgs {
  const uint32_t* a = nullptr;  // [ceil(rows / 32) * 32][ktiles * 16] bf16 pairs, zero padded
  int rows = 0;
  int64_t ktiles = 0;
  const uint32_t* b = nullptr;  // [n_panels][ktiles][2][16][16] bf16 pairs
  const float* bias = nullptr;  // [n_panels * 32]
  const float* admit = nullptr; // [n_panels * 32]
  int64_t n_panels = 0;
  TileSink* sink = nullptr;
};
void encode_block_amx_bf16(const AmxBlockArgs& args);      // the tile instructions (amx_usable() only)
void encode_block_amx_bf16_emu(const AmxBlockArgs& args);  // the same source, tiles emulated
void encode_block_int8_avx512(const EncodeBlockArgs& args);
void encode_block_int8_avx256(const EncodeBlockArgs& args);

// Rescoring: one (latent, row) pair to recompute in fp32.
struct ScreenPair {
  int32_t latent, row;
};
// out[t] = the fp32 pre-activation of pair t (x' rows xr [.][d], latent-major wt [.][d]),
// computed as the plain fp32 kernels do: acc = 0; acc = fma(x_i, w_i, acc) for i = 0..d-1;
// acc + bias[latent]: bit-identical to them. AVX-512 (16 pairs at a time, transposed) and an
// AVX2+FMA variant (scalar chains) for CPUs without AVX-512.
void rescore_avx512(const float* xr, const float* wt, int64_t d, const ScreenPair* pairs, int64_t n,
                    const float* bias, float* out);
void rescore_fma(const float* xr, const float* wt, int64_t d, const ScreenPair* pairs, int64_t n,
                 const float* bias, float* out);

}  // namespace saekit::cpu
