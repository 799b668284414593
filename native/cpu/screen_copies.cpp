// The low-precision copies of W_enc behind the exact screened encode (screen.h): how each
// screen packs the weights at load and a block's rows per call, and the per-row margin that
// makes its screen exact. The candidate rule, rescoring and fallback are shared (cpu_model.h).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "../error.h"
#include "../thread_pool.h"
#include "aligned.h"
#include "screen.h"

namespace saekit::cpu {

struct ScreenWork {
  AlignedFloats a;  // packed rows (uint32 elements)
  int64_t capacity = 0;
  std::vector<float> row_scale;  // int8: sx per row, padded to whole micro-panels with 0
  uint32_t* rows(int64_t words) {
    if (words > capacity) a = aligned_floats(capacity = words);
    std::memset(a.get(), 0, sizeof(uint32_t) * words);
    return reinterpret_cast<uint32_t*>(a.get());
  }
};

ScreenWork& thread_screen_work() {
  thread_local ScreenWork work;
  return work;
}

namespace {

// bf16 pairs: B [n_panels][pairs][32] (two bf16 per uint32), A [micro][pairs][14].
class Bf16Screen final : public ScreenCopy {
 public:
  Bf16Screen(const float* wt, int64_t d_in, int64_t d_sae, double b_max)
      : d_in_(d_in), pairs_((d_in + 1) / 2), n_panels_((d_sae + kPanel - 1) / kPanel), b_max_(b_max) {
    b16_ = aligned_floats(n_panels_ * pairs_ * kPanel);
    auto* b16 = reinterpret_cast<uint32_t*>(b16_.get());
    std::vector<double> err(d_sae), qnorm(d_sae);
    parallel_for(n_panels_, [&](int64_t p, int) {
      for (int j = 0; j < kPanel; ++j) {
        const int64_t l = p * kPanel + j;
        const bool real = l < d_sae;
        double e2 = 0, q2 = 0;
        for (int64_t i2 = 0; i2 < pairs_; ++i2) {
          float v[2] = {0.0f, 0.0f};
          for (int h = 0; h < 2; ++h)
            if (real && 2 * i2 + h < d_in) v[h] = wt[l * d_in + 2 * i2 + h];
          const uint32_t pr = bf16_pair(v[0], v[1]);
          b16[(p * pairs_ + i2) * kPanel + j] = pr;
          for (int h = 0; h < 2; ++h) {
            const double q = from_bf16(static_cast<uint16_t>(pr >> (16 * h)));
            e2 += (v[h] - q) * (v[h] - q);
            q2 += q * q;
          }
        }
        if (real) err[l] = std::sqrt(e2), qnorm[l] = std::sqrt(q2);
      }
    });
    w_err_max_ = *std::max_element(err.begin(), err.end());
    wq_norm_max_ = *std::max_element(qnorm.begin(), qnorm.end());
  }

  bool ok() const { return std::isfinite(w_err_max_) && std::isfinite(wq_norm_max_); }
  Screen kind() const override { return Screen::Bf16; }
  int64_t bytes() const override { return n_panels_ * pairs_ * kPanel * 4; }

  void pack(const float* xr, int rows, ScreenWork& work, float* margins) const override {
    constexpr int MR = kMrAvx512;
    const int64_t d = d_in_, n_micro = (rows + MR - 1) / MR;
    uint32_t* a16 = work.rows(n_micro * MR * pairs_);
    for (int r = 0; r < rows; ++r) {
      const float* xp = xr + r * d;
      double x2 = 0, e2 = 0, q2 = 0;
      uint32_t* dst = a16 + (r / MR) * pairs_ * MR + (r % MR);
      for (int64_t i2 = 0; i2 < pairs_; ++i2) {
        const float v0 = xp[2 * i2], v1 = 2 * i2 + 1 < d ? xp[2 * i2 + 1] : 0.0f;
        const uint32_t pr = bf16_pair(v0, v1);
        dst[i2 * MR] = pr;
        const double q0 = from_bf16(static_cast<uint16_t>(pr)), q1 = from_bf16(static_cast<uint16_t>(pr >> 16));
        x2 += static_cast<double>(v0) * v0 + static_cast<double>(v1) * v1;
        e2 += (v0 - q0) * (v0 - q0) + (v1 - q1) * (v1 - q1);
        q2 += q0 * q0 + q1 * q1;
      }
      margins[r] = screen_margin(std::sqrt(x2), std::sqrt(e2), std::sqrt(q2), w_err_max_, wq_norm_max_, b_max_, d);
    }
  }

  void run(const ScreenWork& work, int rows, EncodeBlockArgs args) const override {
    args.a_packed = work.a.get();
    args.rows = rows;
    args.d_in = pairs_;
    args.b_packed = b16_.get() + args.panel0 * pairs_ * kPanel;
    encode_block_bf16(args);
  }

 private:
  int64_t d_in_, pairs_, n_panels_;
  double b_max_, w_err_max_ = 0, wq_norm_max_ = 0;
  AlignedFloats b16_;
};

// Symmetric scale for values of largest magnitude amax: amax / 127, nudged off zero for
// nonzero amax so quotients stay finite (the margin uses the actual errors either way).
float int8_scale(double amax) {
  if (amax == 0) return 0.0f;
  const float s = static_cast<float>(amax / 127.0);
  return s > 0 ? s : std::numeric_limits<float>::denorm_min();
}

int int8_round(double v, float scale) {
  if (scale == 0) return 0;
  const double q = std::nearbyint(v / scale);
  return static_cast<int>(std::min(127.0, std::max(-127.0, q)));
}

// int8 quads: B [n_panels][quads][32] (four s8 per uint32), A [micro][quads][MR] u8 = q + 128,
// MR 14 for the AVX-512 VNNI kernel, 6 for the AVX-VNNI one (same B).
class Int8Screen final : public ScreenCopy {
 public:
  Int8Screen(const float* wt, int64_t d_in, int64_t d_sae, double b_max, bool wide)
      : d_in_(d_in), quads_((d_in + 3) / 4), n_panels_((d_sae + kPanel - 1) / kPanel), b_max_(b_max), wide_(wide) {
    b8_ = aligned_floats(n_panels_ * quads_ * kPanel);
    scale_ = aligned_floats(n_panels_ * kPanel);
    sum128_ = aligned_floats(n_panels_ * kPanel);
    auto* b8 = reinterpret_cast<uint32_t*>(b8_.get());
    auto* sum128 = reinterpret_cast<int32_t*>(sum128_.get());
    std::vector<double> err(d_sae), qnorm(d_sae);
    parallel_for(n_panels_, [&](int64_t p, int) {
      for (int j = 0; j < kPanel; ++j) {
        const int64_t l = p * kPanel + j;
        const bool real = l < d_sae;
        const float* w = real ? wt + l * d_in : wt;
        double amax = 0;
        for (int64_t i = 0; real && i < d_in; ++i) amax = std::max(amax, std::fabs(static_cast<double>(w[i])));
        const float sw = int8_scale(amax);
        double e2 = 0, q2 = 0;
        int64_t colsum = 0;
        for (int64_t i4 = 0; i4 < quads_; ++i4) {
          uint32_t word = 0;
          for (int h = 0; h < 4; ++h) {
            const int64_t i = 4 * i4 + h;
            if (!real || i >= d_in) continue;
            const int q = int8_round(w[i], sw);
            const double wq = static_cast<double>(sw) * q;
            e2 += (w[i] - wq) * (w[i] - wq);
            q2 += wq * wq;
            colsum += q;
            word |= static_cast<uint32_t>(static_cast<uint8_t>(static_cast<int8_t>(q))) << (8 * h);
          }
          b8[(p * quads_ + i4) * kPanel + j] = word;
        }
        scale_[l] = sw;
        sum128[l] = static_cast<int32_t>(128 * colsum);
        if (real) err[l] = std::sqrt(e2), qnorm[l] = std::sqrt(q2);
      }
    });
    w_err_max_ = *std::max_element(err.begin(), err.end());
    wq_norm_max_ = *std::max_element(qnorm.begin(), qnorm.end());
  }

  // int32 sums exact: every |u8 x s8| <= 255 x 127, 4 per quad.
  static bool fits(int64_t d_in) { return 4 * ((d_in + 3) / 4) * 255.0 * 127.0 < 2147483648.0; }

  bool ok() const { return std::isfinite(w_err_max_) && std::isfinite(wq_norm_max_); }
  Screen kind() const override { return wide_ ? Screen::Int8 : Screen::Int8x256; }
  int64_t bytes() const override { return n_panels_ * (quads_ + 2) * kPanel * 4; }

  void pack(const float* xr, int rows, ScreenWork& work, float* margins) const override {
    const int MR = wide_ ? kMrAvx512 : kMrInt8x256;
    const int64_t d = d_in_, n_micro = (rows + MR - 1) / MR;
    uint32_t* a8 = work.rows(n_micro * MR * quads_);
    work.row_scale.assign(n_micro * MR, 0.0f);
    for (int r = 0; r < rows; ++r) {
      const float* xp = xr + r * d;
      double amax = 0, x2 = 0, e2 = 0, q2 = 0;
      for (int64_t i = 0; i < d; ++i) amax = std::max(amax, std::fabs(static_cast<double>(xp[i])));
      const float sx = int8_scale(amax);
      uint32_t* dst = a8 + (r / MR) * quads_ * MR + (r % MR);
      for (int64_t i4 = 0; i4 < quads_; ++i4) {
        uint32_t word = 0;
        for (int h = 0; h < 4; ++h) {
          const int64_t i = 4 * i4 + h;
          int q = 0;  // padding: u8 128, times a zero weight
          if (i < d) {
            q = int8_round(xp[i], sx);
            const double xq = static_cast<double>(sx) * q;
            x2 += static_cast<double>(xp[i]) * xp[i];
            e2 += (xp[i] - xq) * (xp[i] - xq);
            q2 += xq * xq;
          }
          word |= static_cast<uint32_t>(q + 128) << (8 * h);
        }
        dst[i4 * MR] = word;
      }
      work.row_scale[r] = sx;
      margins[r] = int8_margin(std::sqrt(x2), std::sqrt(e2), std::sqrt(q2), w_err_max_, wq_norm_max_, b_max_, d);
    }
  }

  void run(const ScreenWork& work, int rows, EncodeBlockArgs args) const override {
    args.a_packed = work.a.get();
    args.rows = rows;
    args.d_in = quads_;
    args.b_packed = b8_.get() + args.panel0 * quads_ * kPanel;
    args.row_scale = work.row_scale.data();
    args.latent_scale = scale_.get() + args.panel0 * kPanel;
    args.latent_sum128 = reinterpret_cast<const int32_t*>(sum128_.get()) + args.panel0 * kPanel;
    if (wide_) encode_block_int8_avx512(args);
    else encode_block_int8_avx256(args);
  }

 private:
  int64_t d_in_, quads_, n_panels_;
  double b_max_, w_err_max_ = 0, wq_norm_max_ = 0;
  bool wide_;
  AlignedFloats b8_, scale_, sum128_;
};


// AMX-BF16 tiles: B [n_panels][ktiles][2][16 pairs][16 latents] (one 1 KiB tile per k-tile
// and latent half), A [rows_pad][ktiles * 16 pairs] row-major. d_in is zero padded to whole
// k-tiles of 32: the padding adds exact zeros, the margin counts it anyway (d_pad).
// emulated: the same kernel source on the scalar tile emulation (amx_tiles.h).
class AmxBf16Screen final : public ScreenCopy {
 public:
  AmxBf16Screen(const float* wt, int64_t d_in, int64_t d_sae, double b_max, bool emulated)
      : d_in_(d_in), ktiles_((d_in + 31) / 32), n_panels_((d_sae + kPanel - 1) / kPanel), b_max_(b_max), emulated_(emulated) {
    b16_ = aligned_floats(n_panels_ * ktiles_ * 512);
    auto* b16 = reinterpret_cast<uint32_t*>(b16_.get());
    std::vector<double> err(d_sae), qnorm(d_sae);
    parallel_for(n_panels_, [&](int64_t p, int) {
      for (int j = 0; j < kPanel; ++j) {
        const int64_t l = p * kPanel + j;
        const bool real = l < d_sae;
        double e2 = 0, q2 = 0;
        for (int64_t i2 = 0; i2 < ktiles_ * 16; ++i2) {
          float v[2] = {0.0f, 0.0f};
          for (int h = 0; h < 2; ++h)
            if (real && 2 * i2 + h < d_in) v[h] = wt[l * d_in + 2 * i2 + h];
          const uint32_t pr = bf16_pair(v[0], v[1]);
          const int64_t t = i2 / 16, row = i2 % 16, half = j / 16, col = j % 16;
          b16[(((p * ktiles_ + t) * 2 + half) * 16 + row) * 16 + col] = pr;
          for (int h = 0; h < 2; ++h) {
            const double q = from_bf16(static_cast<uint16_t>(pr >> (16 * h)));
            e2 += (v[h] - q) * (v[h] - q);
            q2 += q * q;
          }
        }
        if (real) err[l] = std::sqrt(e2), qnorm[l] = std::sqrt(q2);
      }
    });
    w_err_max_ = *std::max_element(err.begin(), err.end());
    wq_norm_max_ = *std::max_element(qnorm.begin(), qnorm.end());
  }

  bool ok() const { return std::isfinite(w_err_max_) && std::isfinite(wq_norm_max_); }
  Screen kind() const override { return emulated_ ? Screen::AmxBf16Emu : Screen::AmxBf16; }
  int64_t bytes() const override { return n_panels_ * ktiles_ * 512 * 4; }
  int row_multiple() const override { return 32; }
  // The packed rows (2 bytes per d_in entry) re-read from L2 for every panel: 256 rows at
  // d_in <= 2048 (1 MiB), fewer above, never under 64.
  int block_rows() const override {
    const int64_t fit = (int64_t{1} << 20) / (ktiles_ * 64);
    return static_cast<int>(std::max<int64_t>(64, std::min<int64_t>(256, fit / 32 * 32)));
  }

  void pack(const float* xr, int rows, ScreenWork& work, float* margins) const override {
    const int64_t d = d_in_, words = ktiles_ * 16, rows_pad = (rows + 31) / 32 * 32;
    uint32_t* a16 = work.rows(rows_pad * words);
    for (int r = 0; r < rows; ++r) {
      const float* xp = xr + r * d;
      double x2 = 0, e2 = 0, q2 = 0;
      uint32_t* dst = a16 + r * words;
      for (int64_t i2 = 0; 2 * i2 < d; ++i2) {
        const float v0 = xp[2 * i2], v1 = 2 * i2 + 1 < d ? xp[2 * i2 + 1] : 0.0f;
        const uint32_t pr = bf16_pair(v0, v1);
        dst[i2] = pr;
        const double q0 = from_bf16(static_cast<uint16_t>(pr)), q1 = from_bf16(static_cast<uint16_t>(pr >> 16));
        x2 += static_cast<double>(v0) * v0 + static_cast<double>(v1) * v1;
        e2 += (v0 - q0) * (v0 - q0) + (v1 - q1) * (v1 - q1);
        q2 += q0 * q0 + q1 * q1;
      }
      margins[r] = screen_margin(std::sqrt(x2), std::sqrt(e2), std::sqrt(q2), w_err_max_, wq_norm_max_, b_max_, ktiles_ * 32);
    }
  }

  void run(const ScreenWork& work, int rows, EncodeBlockArgs args) const override {
    AmxBlockArgs a;
    a.a = reinterpret_cast<const uint32_t*>(work.a.get());
    a.rows = rows;
    a.ktiles = ktiles_;
    a.b = reinterpret_cast<const uint32_t*>(b16_.get()) + args.panel0 * ktiles_ * 512;
    a.bias = args.bias;
    a.admit = args.admit;
    a.n_panels = args.n_panels;
    a.sink = args.sink;
    if (emulated_) encode_block_amx_bf16_emu(a);
    else encode_block_amx_bf16(a);
  }

 private:
  int64_t d_in_, ktiles_, n_panels_;
  double b_max_, w_err_max_ = 0, wq_norm_max_ = 0;
  bool emulated_;
  AlignedFloats b16_;
};

}  // namespace

std::unique_ptr<ScreenCopy> make_screen_copy(Screen kind, const float* wt, int64_t d_in, int64_t d_sae, double b_max) {
  if (kind == Screen::Bf16) {
    auto s = std::make_unique<Bf16Screen>(wt, d_in, d_sae, b_max);
    if (s->ok()) return s;
  } else if (kind == Screen::AmxBf16 || kind == Screen::AmxBf16Emu) {
    auto s = std::make_unique<AmxBf16Screen>(wt, d_in, d_sae, b_max, kind == Screen::AmxBf16Emu);
    if (s->ok()) return s;
  } else if (kind == Screen::Int8 || kind == Screen::Int8x256) {
    if (!Int8Screen::fits(d_in)) return nullptr;
    auto s = std::make_unique<Int8Screen>(wt, d_in, d_sae, b_max, kind == Screen::Int8);
    if (s->ok()) return s;
  }
  return nullptr;
}

}  // namespace saekit::cpu
