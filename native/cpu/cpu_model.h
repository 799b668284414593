// CpuModel: the CPU backend's loaded SAE (see cpu_backend.cpp for the work split).
// The CPU backend packs W_enc into latent panels at load, and drives the ISA-specific
// micro-kernels over token blocks on the process-wide thread pool.
//
// Work split. Rows are cut into blocks of ~256 for the fp32 kernel (~168 for the screens): a
// block's packed A is re-read for every W_enc panel while each panel streams past it once
// (~128 FLOPs per byte of W_enc read from memory); 256 rows measured best on Zen 5 at d_in 768
// to 4096 (bench/NOTES.md). The block count is a multiple of the thread
// count so no thread idles at the end. When there are fewer blocks than threads (small batches,
// where the encode is bound by streaming W_enc anyway) the latent panels are split as well and
// each row's partial results are merged.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "../backend.h"
#include "../error.h"
#include "../thread_pool.h"
#include "aligned.h"
#include "decode_kernels.h"
#include "gemm.h"
#include "encode_kernels.h"
#include "isa.h"
#include "kernel_choice.h"
#include "screen.h"
#include "../normalization.h"
#include "sinks.h"

namespace saekit::cpu {


constexpr int kTargetBlockRows = 168;
// Rows per block of the plain fp32 kernel (the screens keep kTargetBlockRows or their own).
// Measured on Zen 5 in one process, candidates interleaved (bench/NOTES.md): 256-row blocks
// beat ~150-row blocks at d_in 768 (+0.5-2 points of the FMA peak), 2304 and 4096 (+6-7), and
// 512-row blocks at all three.
constexpr int kFp32BlockRows = 256;

struct Variant {
  int mr;
  void (*encode_block)(const EncodeBlockArgs&);
  void (*decode_rows)(const DecodeArgs&, int64_t, int64_t);
};

inline Variant variant(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return {kMrAvx512, encode_block_avx512, decode_rows_avx512};
    case Isa::Avx2: return {kMrAvx2, encode_block_avx2, decode_rows_avx2};
    default: return {kMrGeneric, encode_block_generic, decode_rows_generic};
  }
}

// Per-thread packing buffer for a block of A, grown on demand and kept: at most ~168 x d_in
// floats per kernel thread.
inline float* thread_workspace(int64_t floats) {
  thread_local AlignedFloats buf;
  thread_local int64_t capacity = 0;
  if (floats > capacity) {
    buf = aligned_floats(floats);
    capacity = floats;
  }
  return buf.get();
}

// Per-thread ||x'|| of the rows of the block being encoded.
inline float* thread_norms(int64_t rows) {
  thread_local std::vector<float> norms;
  if (static_cast<int64_t>(norms.size()) < rows) norms.resize(rows);
  return norms.data();
}

// A packed SAE on the CPU. Also the trainer's forward pass (built without a decoder there, its
// encoder repacked after every optimizer step by set_encoder).
class CpuModel final : public BackendModel {
 public:
  // screening: the encode may run a low-precision screen (the kernel measured at the first
  // encode, kernel_choice.h, or forced by SAEKIT_ENCODE_KERNEL) from a copy of W_enc and an
  // fp32 latent-major copy for the exact rescoring (screen.h). The AuxK sub-encoder and the
  // trainer's non-topk forwards pass false.
  CpuModel(const SaeSpec& spec, const SaeWeightsView& w, bool screening = true)
      : spec_(spec), n_panels_((spec.d_sae + kPanel - 1) / kPanel) {
    const int64_t d_in = spec.d_in, d_sae = spec.d_sae, d_out = spec.out_width();
    SAEKIT_CHECK(d_out == d_in || !spec.apply_b_dec_to_input, "a transcoder (d_out != d_in) cannot subtract b_dec from its input");
    b_packed_ = aligned_floats(n_panels_ * d_in * kPanel);
    bias_ = aligned_floats(n_panels_ * kPanel);
    admit_ = aligned_floats(n_panels_ * kPanel);
    if (w.W_dec != nullptr) W_dec_ = aligned_floats(d_sae * d_out);
    b_dec_ = aligned_floats(d_out);
    float* bp = b_packed_.get();
    parallel_for(n_panels_, [&](int64_t p, int) {
      float* dst = bp + p * d_in * kPanel;
      for (int64_t i = 0; i < d_in; ++i) {
        for (int j = 0; j < kPanel; ++j) {
          const int64_t l = p * kPanel + j;
          float v = 0.0f;
          if (l < d_sae) v = w.enc_transposed ? w.W_enc[l * d_in + i] : w.W_enc[i * d_sae + l];
          dst[i * kPanel + j] = v;
        }
      }
    });
    const float inf = std::numeric_limits<float>::infinity();
    for (int64_t l = 0; l < n_panels_ * kPanel; ++l) {
      const bool real = l < d_sae;
      bias_[l] = real ? w.b_enc[l] : -inf;  // padding latents never pass
      float admit = 0.0f;                   // relu: only positive values are ever nonzero
      if (real && spec.activation == Activation::JumpReLU) admit = std::max(w.threshold[l], 0.0f);
      admit_[l] = real ? admit : inf;
    }
    if (w.W_dec != nullptr) std::memcpy(W_dec_.get(), w.W_dec, sizeof(float) * d_sae * d_out);
    if (w.b_dec != nullptr) std::memcpy(b_dec_.get(), w.b_dec, sizeof(float) * d_out);
    else std::fill(b_dec_.get(), b_dec_.get() + d_out, 0.0f);
    if (spec.skip) {
      // Kept as W_skip^T [d_in, d_out]: the [K, N] operand sgemm streams row by row.
      SAEKIT_CHECK(w.W_skip != nullptr, "a skip transcoder needs W_skip");
      W_skip_t_ = aligned_floats(d_in * d_out);
      float* t = W_skip_t_.get();
      parallel_for(d_in, [&](int64_t i, int) {
        for (int64_t o = 0; o < d_out; ++o) t[i * d_out + o] = w.W_skip[o * d_in + i];
      });
    }
    // The kernel is chosen by measurement at the first encode of each batch size class
    // (kernel_choice.h); nothing is built for it here. A kernel forced by
    // SAEKIT_ENCODE_KERNEL (or SAEKIT_SCREEN) at load has its copy built now, so an SAE it
    // cannot hold, or a kernel this CPU cannot run, is an error at load.
    screening_allowed_ = screening;
    if (screening && spec.activation != Activation::Standard) {
      const KernelRequest req = kernel_request_from_env();
      if (req.forced && req.kernel != Screen::Off) screen_copy(req.kernel, true);
      // Weights exactly representable in bf16 (an SAE stored as bf16) have no bf16 weight
      // error: a shape class of their own.
      bf16_weights_ = true;
      for (int64_t i = 0; i < n_panels_ * d_in * kPanel && bf16_weights_; ++i) {
        uint32_t u;
        std::memcpy(&u, b_packed_.get() + i, 4);
        bf16_weights_ = (u & 0xFFFFu) == 0;
      }
    }
  }


  // Screening counters since load: rows screened, candidates rescored, rows sent to fp32.
  void screen_stats(int64_t* rows, int64_t* candidates, int64_t* fallbacks) const override {
    *rows = screen_rows_.load();
    *candidates = screen_candidates_.load();
    *fallbacks = screen_fallbacks_.load();
  }

  const char* last_screen() const override { return screen_name(static_cast<Screen>(last_screen_.load())); }

  // The measured kernel decisions of this model so far (kernel_choice.h), as a JSON array.
  std::string kernel_report() const override {
    std::lock_guard<std::mutex> lock(choice_mutex_);
    std::string out = "[";
    for (const auto& [key, d] : decisions_) out += (out.size() > 1 ? "," : "") + decision_json(d);
    return out + "]";
  }

  int64_t bytes() const override {
    int64_t screen = wt32_ ? sizeof(float) * (spec_.d_sae * spec_.d_in + 2 * n_panels_ * kPanel) : 0;
    for (int s = 0; s < kScreenKinds; ++s)
      if (auto c = std::atomic_load(&screens_[s])) screen += c->bytes();
    const int64_t d_out = spec_.out_width();
    return sizeof(float) * (n_panels_ * spec_.d_in * kPanel + 2 * n_panels_ * kPanel + (W_dec_ ? spec_.d_sae * d_out : 0) + d_out +
                            (W_skip_t_ ? spec_.d_in * d_out : 0)) + screen;
  }

  int64_t hint_misses() const override { return misses_.load(); }

  // Switches the selection rule without repacking: the trainer's batch top-k alternates a
  // per-row top-k with a global-threshold pass (JumpReLU with one threshold for every latent).
  void set_selection(Activation activation, int64_t k, float admit) {
    spec_.activation = activation;
    spec_.k = k;
    for (int64_t l = 0; l < spec_.d_sae; ++l) admit_[l] = std::max(admit, 0.0f);
  }

  // Per-latent admission thresholds (clamped at 0: only positive values are ever admitted).
  void set_admit(const float* admit) {
    for (int64_t l = 0; l < spec_.d_sae; ++l) admit_[l] = std::max(admit[l], 0.0f);
  }

  // Repacks the encoder from Wt [d_sae, d_in] (latent-major, as the trainer keeps it) and
  // b_enc, keeping the learned top-k hint: a training step moves weights only slightly, and a
  // stale hint costs a re-encode, never exactness.
  void set_encoder(const float* Wt, const float* b_enc) {
    const int64_t d_in = spec_.d_in, d_sae = spec_.d_sae;
    float* bp = b_packed_.get();
    parallel_for(n_panels_, [&](int64_t p, int) {
      float* dst = bp + p * d_in * kPanel;
      const int64_t live = std::min<int64_t>(kPanel, d_sae - p * kPanel);
      for (int j = 0; j < live; ++j) {
        const float* src = Wt + (p * kPanel + j) * d_in;
        for (int64_t i = 0; i < d_in; ++i) dst[i * kPanel + j] = src[i];
      }
      for (int64_t l = p * kPanel; l < p * kPanel + live; ++l) bias_[l] = b_enc[l];
    });
    // A screening trainer forward (topk): every low-precision copy is stale now and is
    // rebuilt at the next encode for the kernel in use only; the fp32 latent-major copy is
    // Wt itself. (Callers never encode concurrently with set_encoder.)
    if (screening_allowed_) {
      std::lock_guard<std::mutex> lock(screen_mutex_);
      for (int s = 0; s < kScreenKinds; ++s) {
        std::atomic_store(&screens_[s], std::shared_ptr<const ScreenCopy>());
        cannot_hold_[s] = false;
      }
      if (wt32_) {
        float* w = wt32_.get();
        parallel_for(n_panels_, [&](int64_t p, int) {
          const int64_t l0 = p * kPanel, live = std::min<int64_t>(kPanel, d_sae - l0);
          std::memcpy(w + l0 * d_in, Wt + l0 * d_in, sizeof(float) * live * d_in);
        });
        refresh_screen_arrays();
      }
    }
  }

  void encode(const float* x, int64_t rows, SparseCodes* out, CancelFlag cancel = {}) override {
    encode_with(kernel_for_call(x, rows), x, rows, out, cancel);
  }

  // One encode with the given kernel (Off: the plain fp32 kernel). Every kernel gives the
  // same codes bit for bit; a screen that cannot run here or hold this SAE runs as fp32.
  void encode_with(Screen kernel, const float* x, int64_t rows, SparseCodes* out, CancelFlag cancel = {}) {
    const Variant var = variant(current_isa());
    const int mr = var.mr;
    const int T = threads();
    // Screening (exact, see screen.h) where a variant that can rescore runs (avx512; avx2 too
    // for the int8-256 screen and the AMX emulation).
    std::shared_ptr<const ScreenCopy> copy;
    if (screening_allowed_ && spec_.activation != Activation::Standard && kernel != Screen::Off) {
      const bool avx2_ok = kernel == Screen::Int8x256 || kernel == Screen::AmxBf16Emu;
      const bool isa_ok = current_isa() == Isa::Avx512 || (avx2_ok && current_isa() == Isa::Avx2);
      if (isa_ok && !screen_off_[static_cast<int>(kernel)].load(std::memory_order_relaxed)) copy = screen_copy(kernel, false);
    }
    // The work split: blocks of ~kTargetBlockRows rows in whole micro-panels, or the screen's
    // own block size and row multiple (AMX: 32-row tile pairs).
    const int split_mr = copy && copy->row_multiple() > 0 ? copy->row_multiple() : mr;
    // SAEKIT_BLOCK_ROWS overrides the rows per block (bench experiments: bench/NOTES.md).
    const char* block_env = std::getenv("SAEKIT_BLOCK_ROWS");
    const int64_t target_rows = block_env != nullptr && std::atoi(block_env) > 0 ? std::atoi(block_env)
                                : copy && copy->block_rows() > 0 ? copy->block_rows()
                                : copy                           ? kTargetBlockRows
                                                                 : kFp32BlockRows;
    const int64_t n_micro = (rows + split_mr - 1) / split_mr;
    const int64_t target_micro = (target_rows + split_mr - 1) / split_mr;
    int64_t n_blocks = ((n_micro + T * target_micro - 1) / (T * target_micro)) * T;
    n_blocks = std::max<int64_t>(1, std::min(n_blocks, n_micro));
    const int64_t n_splits = n_blocks >= T ? 1 : std::min<int64_t>(n_panels_, (T + n_blocks - 1) / n_blocks);
    auto block_micro_begin = [&](int64_t b) { return b * n_micro / n_blocks; };
    auto split_panel_begin = [&](int64_t s) { return s * n_panels_ / n_splits; };

    const bool per_row = spec_.normalization != Normalization::None;
    out->row_scale.assign(per_row ? rows : 0, 1.0f);
    out->row_shift.assign(per_row ? rows : 0, 0.0f);

    // SAEKIT_HINT_SCALE multiplies the top-k hints: tests set it high to force the re-encode
    // path. Read once per call, not per block.
    const char* scale_env = std::getenv("SAEKIT_HINT_SCALE");
    const float hint_scale = scale_env ? std::strtof(scale_env, nullptr) : 1.0f;
    // SAEKIT_SCREEN_CAP caps candidates per row (tests force the fp32 fallback with a small
    // cap). The default cap grows with d_sae: a candidate costs one d_in-long dot product, the
    // screen saves about half of d_sae of them. SAEKIT_SCREEN_APPROX=1: the approximate mode
    // (topk only, screen.h): no rescoring.
    const bool screen = copy != nullptr;
    const char* approx_env = std::getenv("SAEKIT_SCREEN_APPROX");
    const bool approx = approx_env != nullptr && std::strcmp(approx_env, "1") == 0 && spec_.activation == Activation::TopK;
    const char* cap_env = std::getenv("SAEKIT_SCREEN_CAP");
    // jumprelu keeps every active latent: its default cap is d_sae / 16 (rescoring a candidate
    // costs several times screening one latent: a gathered row and a dot product).
    // The int8 screens' margin is ~4x bf16's (8-bit absmax steps vs bf16's 8-bit mantissas),
    // so their rows carry several times the candidates: a fallback (a whole fp32 row on top of
    // the screen) costs as much as ~d_sae / 8 rescored candidates, so their cap is d_sae / 16.
    const bool int8 = copy != nullptr && (copy->kind() == Screen::Int8 || copy->kind() == Screen::Int8x256);
    const int64_t default_cap = spec_.activation == Activation::TopK
                                    ? std::max({4 * spec_.k, spec_.k + 256, spec_.d_sae / (int8 ? 16 : 64)})
                                    : std::max<int64_t>(256, spec_.d_sae / 16);
    const int64_t screen_cap = std::min<int64_t>(
        spec_.d_sae, std::max<int64_t>(std::max<int64_t>(spec_.k, 1), cap_env ? std::strtoll(cap_env, nullptr, 10) : default_cap));

    std::vector<TaskCodes> results(n_blocks * n_splits);
    std::atomic<bool> skipped{false};
    parallel_for(n_blocks * n_splits, [&](int64_t task, int) {
      if (cancel.requested()) {
        skipped.store(true, std::memory_order_relaxed);
        return;
      }
      const int64_t b = task / n_splits, s = task % n_splits;
      const int64_t row0 = block_micro_begin(b) * split_mr;
      const int64_t row1 = std::min(rows, block_micro_begin(b + 1) * split_mr);
      const int block_rows = static_cast<int>(row1 - row0);
      const int64_t micro = (block_rows + mr - 1) / mr;
      float* a = thread_workspace(micro * mr * spec_.d_in);
      float* norms = thread_norms(block_rows);
      // The screened path packs its own rows; with a latent split each part screens its own
      // panel range (the union of the parts' candidates holds the row's: see encode_screened).
      const bool screened = screen;
      if (!screened) pack_rows(x, row0, block_rows, mr, a, s == 0 && per_row ? out : nullptr, norms);

      const int64_t p0 = split_panel_begin(s), p1 = split_panel_begin(s + 1);
      EncodeBlockArgs args;
      args.a_packed = a;
      args.rows = block_rows;
      args.d_in = spec_.d_in;
      args.b_packed = b_packed_.get() + p0 * spec_.d_in * kPanel;
      args.bias = bias_.get() + p0 * kPanel;
      args.admit = admit_.get() + p0 * kPanel;
      args.n_panels = p1 - p0;
      // Kernels number latents from the start of their panel range: shift them back after.
      TaskCodes& res = results[task];
      if (screened) {
        encode_screened(*copy, x, row0, block_rows, var, args, p0, n_splits > 1, s == 0 && per_row ? out : nullptr, screen_cap,
                        approx, res);
      } else if (spec_.activation == Activation::TopK && n_splits == 1) {
        encode_topk_block(x, row0, block_rows, mr, var, args, norms, hint_scale, res);
      } else if (spec_.activation == Activation::TopK) {
        thread_local TopKSink sink;
        sink.reset(block_rows, spec_.k);
        args.sink = &sink;
        var.encode_block(args);
        sink.finish(res);
      } else {
        thread_local ListSink sink;
        sink.reset(block_rows);
        args.sink = &sink;
        var.encode_block(args);
        sink.finish(res);
      }
      const int32_t shift = static_cast<int32_t>(p0 * kPanel);
      for (int32_t& idx : res.indices) idx += shift;
    });
    if (skipped.load()) throw Cancelled("encode: aborted by the caller");
    assemble(results, n_blocks, n_splits, rows, out);
  }

  void decode(const SparseCodesView& codes, float* out, CancelFlag cancel = {}) override {
    SAEKIT_CHECK(W_dec_ != nullptr, "this model was built without a decoder");
    const Variant var = variant(current_isa());
    DecodeArgs args{&codes, W_dec_.get(), b_dec_.get(), spec_.out_width(), out};
    constexpr int64_t kRowsPerTask = 16;
    const int64_t tasks = (codes.rows + kRowsPerTask - 1) / kRowsPerTask;
    std::atomic<bool> skipped{false};
    parallel_for(tasks, [&](int64_t t, int) {
      // Polled every 64 tasks (1024 rows): a decode row is cheap, the flag read is not free.
      if (t % 64 == 0 && cancel.requested()) skipped.store(true, std::memory_order_relaxed);
      if (skipped.load(std::memory_order_relaxed)) return;
      var.decode_rows(args, t * kRowsPerTask, std::min(codes.rows, (t + 1) * kRowsPerTask));
    });
    if (skipped.load()) throw Cancelled("decode: aborted by the caller");
  }

  void add_skip(const float* x, int64_t rows, float* out, CancelFlag cancel = {}) override {
    if (!W_skip_t_) throw Error("this SAE has no skip connection");
    const int64_t d_in = spec_.d_in, d_out = spec_.out_width();
    // Blocks of rows so an abort lands within one: sgemm itself runs on the pool.
    constexpr int64_t kRows = 1024;
    for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
      if (cancel.requested()) throw Cancelled("skip: aborted by the caller");
      const int64_t n = std::min(kRows, rows - r0);
      sgemm(n, d_out, d_in, x + r0 * d_in, d_in, false, W_skip_t_.get(), d_out, out + r0 * d_out, d_out, true);
    }
  }

 private:
  // Writes rows [row0, row0 + n) of x into micro-panels of mr rows (zero padded); their norms
  // ||x'|| go to `norms`.
  void pack_rows(const float* x, int64_t row0, int n, int mr, float* a, SparseCodes* stats, float* norms) const {
    const int64_t micro = (n + mr - 1) / mr;
    std::memset(a, 0, sizeof(float) * micro * mr * spec_.d_in);
    for (int r = 0; r < n; ++r) norms[r] = pack_row(x, row0 + r, r, mr, a, stats);
  }

  // Packs one row into slot `slot` of the micro-panels at `a`: normalized, minus b_dec, with
  // non-finite input rejected and per-row normalization stats recorded. Returns ||x'||.
  float pack_row(const float* x, int64_t row, int slot, int mr, float* a, SparseCodes* stats) const {
    const int64_t d_in = spec_.d_in;
    const float* b_dec = spec_.apply_b_dec_to_input ? b_dec_.get() : nullptr;
    const float* xr = x + row * d_in;
    double sum = 0, sumsq = 0;
    float probe = 0.0f;  // x - x is 0 for finite x, NaN for inf/NaN
    for (int64_t i = 0; i < d_in; ++i) {
      probe += xr[i] - xr[i];
      sum += xr[i];
      sumsq += static_cast<double>(xr[i]) * xr[i];
    }
    if (probe != 0.0f) {
      int64_t col = 0;
      while (col < d_in && std::isfinite(xr[col])) ++col;
      throw InputError("input row " + std::to_string(row) + " has a non-finite value at column " + std::to_string(col),
                       row, col);
    }
    const RowNormalization norm = row_normalization(spec_.normalization, xr, d_in, sum, sumsq);
    const double shift_d = norm.shift, scale_d = norm.scale;
    if (stats != nullptr) {
      stats->row_scale[row] = norm.out_scale;
      stats->row_shift[row] = norm.out_shift;
    }
    float* dst = a + (slot / mr) * d_in * mr + (slot % mr);
    double norm2 = 0;
    const bool plain = spec_.normalization == Normalization::None;
    for (int64_t i = 0; i < d_in; ++i) {
      float v = plain ? xr[i] : static_cast<float>((xr[i] - shift_d) * scale_d);
      if (b_dec != nullptr) v -= b_dec[i];
      dst[i * mr] = v;
      norm2 += static_cast<double>(v) * v;
    }
    return static_cast<float>(std::sqrt(norm2));
  }

  // Top-k of one block with hinted thresholds. Without a hint a row admits every positive
  // value until its staging area first fills, and its threshold then climbs slowly (~500
  // admissions per row at d_sae 24576, k 32): ~5% of the encode. Each row instead starts at
  // hint = ratio * ||x'||, the ratio learned from earlier rows (0.9 x the smallest k-th value /
  // ||x'|| seen). A row where fewer than k values beat its hint may have lost top-k values
  // below it: those rows are recomputed without a hint. The result is exact either way; a bad
  // hint only costs time, and the ratio adapts down after a miss.
  void encode_topk_block(const float* x, int64_t row0, int rows, int mr, const Variant& var, EncodeBlockArgs args,
                         const float* norms, float hint_scale, TaskCodes& res) {
    thread_local std::vector<float> hints;
    const float ratio = hint_ratio_.load(std::memory_order_relaxed) * hint_scale;
    hints.assign(rows, 0.0f);
    if (ratio > 0)
      for (int r = 0; r < rows; ++r) hints[r] = ratio * norms[r];
    thread_local TopKSink sink;
    sink.reset(rows, spec_.k, hints.data());
    args.sink = &sink;
    var.encode_block(args);

    thread_local std::vector<int> missed;
    missed.clear();
    for (int r = 0; r < rows; ++r) {
      sink.finalize(r);
      if (!sink.complete(r)) missed.push_back(r);
    }
    thread_local TopKSink retry;
    if (!missed.empty()) {
      const int n = static_cast<int>(missed.size());
      const int64_t micro = (n + mr - 1) / mr;
      thread_local AlignedFloats buf;
      thread_local int64_t capacity = 0;
      if (micro * mr * spec_.d_in > capacity) {
        capacity = micro * mr * spec_.d_in;
        buf = aligned_floats(capacity);
      }
      std::memset(buf.get(), 0, sizeof(float) * micro * mr * spec_.d_in);
      for (int j = 0; j < n; ++j) pack_row(x, row0 + missed[j], j, mr, buf.get(), nullptr);
      retry.reset(n, spec_.k);
      args.a_packed = buf.get();
      args.rows = n;
      args.sink = &retry;
      var.encode_block(args);
      for (int j = 0; j < n; ++j) retry.finalize(j);
      misses_.fetch_add(n, std::memory_order_relaxed);
    }

    // Emit in row order and learn the next ratio from every row with k entries.
    float next = std::numeric_limits<float>::infinity();
    bool short_row = false;
    size_t m = 0;
    for (int r = 0; r < rows; ++r) {
      const bool was_missed = m < missed.size() && missed[m] == r;
      const TopKSink& from = was_missed ? retry : sink;
      const int fr = was_missed ? static_cast<int>(m++) : r;
      from.emit(fr, res);
      if (from.entries(fr) < spec_.k) {
        short_row = short_row || was_missed || ratio <= 0;
        continue;
      }
      if (norms[r] > 0) next = std::min(next, from.kth(fr) / norms[r]);
    }
    // Rows with fewer than k positive values defeat any hint: stop hinting for this SAE.
    if (short_row) hints_off_.store(true, std::memory_order_relaxed);
    const bool off = hints_off_.load(std::memory_order_relaxed);
    hint_ratio_.store(off || !std::isfinite(next) ? 0.0f : 0.9f * next, std::memory_order_relaxed);
  }

  // The kernel for this call: forced by SAEKIT_ENCODE_KERNEL / SAEKIT_SCREEN, else this
  // shape class's measured decision (kernel_choice.h): from memory, from the disk cache, or
  // measured now on the call's first rows (once per class; concurrent calls wait for it).
  Screen kernel_for_call(const float* x, int64_t rows) {
    if (!screening_allowed_ || spec_.activation == Activation::Standard) return Screen::Off;
    const KernelRequest req = kernel_request_from_env();
    if (req.forced) return req.kernel;
    const std::vector<Screen> candidates = encode_kernel_candidates();
    if (candidates.size() == 1) return Screen::Off;
    const BatchClass cls = batch_class(rows);
    const std::string key = choice_key(spec_, cls, bf16_weights_, threads());
    std::lock_guard<std::mutex> lock(choice_mutex_);
    if (auto it = decisions_.find(key); it != decisions_.end()) return it->second.kernel;
    KernelDecision d;
    if (!load_cached_decision(key, &d)) {
      const int64_t sample = calibration_rows(spec_, rows);
      SparseCodes scratch;
      d = measure_kernels(candidates, sample, [&](Screen k) {
        if (k != Screen::Off && !screen_copy(k, false)) return -1.0;  // cannot hold this SAE
        const auto t0 = std::chrono::steady_clock::now();
        encode_with(k, x, sample, &scratch);
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      });
      d.key = key;
      save_decision(d);
    }
    d.key = key;
    decisions_[key] = d;
    // Copies no decision uses are freed (a screen's copy is up to a W_enc's worth of memory);
    // an encode still holding one keeps it alive until it returns.
    for (Screen s : candidates) {
      bool used = false;
      for (const auto& [k, dec] : decisions_) used = used || dec.kernel == s;
      if (s != Screen::Off && !used) std::atomic_store(&screens_[static_cast<int>(s)], std::shared_ptr<const ScreenCopy>());
    }
    return d.kernel;
  }

  // The copy of screen `kind`, built on first use (the fp32 latent-major W_enc, the screen's
  // bias and admission arrays are shared by all screens). Null where the screen cannot hold
  // this SAE; with `required` (a kernel forced at load) that is an error instead.
  std::shared_ptr<const ScreenCopy> screen_copy(Screen kind, bool required) {
    const int s = static_cast<int>(kind);
    if (auto c = std::atomic_load(&screens_[s])) return c;
    std::lock_guard<std::mutex> lock(screen_mutex_);
    auto c = std::atomic_load(&screens_[s]);
    if (!c && !cannot_hold_[s]) {
      if (!wt32_) build_screen_common();
      c = make_screen_copy(kind, wt32_.get(), spec_.d_in, spec_.d_sae, b_max_);
      cannot_hold_[s] = !c;
      std::atomic_store(&screens_[s], c);
    }
    if (!c && required)
      throw Error(std::string("SAEKIT_ENCODE_KERNEL=") + screen_name(kind) + ": this SAE cannot be screened that way (" +
                  (kind == Screen::Int8 || kind == Screen::Int8x256
                       ? "d_in " + std::to_string(spec_.d_in) + " is too large for exact int32 sums, or non-finite weight norms"
                       : std::string("non-finite weight norms")) + ")");
    return c;
  }

  // The fp32 latent-major W_enc for rescoring (from the fp32 panels), and the bias and
  // admission arrays every screening kernel uses.
  void build_screen_common() {
    const int64_t d_in = spec_.d_in, d_sae = spec_.d_sae;
    AlignedFloats wt = aligned_floats(d_sae * d_in);
    const float* bp = b_packed_.get();
    float* w = wt.get();
    parallel_for(n_panels_, [&](int64_t p, int) {
      const int64_t live = std::min<int64_t>(kPanel, d_sae - p * kPanel);
      for (int j = 0; j < live; ++j)
        for (int64_t i = 0; i < d_in; ++i) w[(p * kPanel + j) * d_in + i] = bp[(p * d_in + i) * kPanel + j];
    });
    wt32_ = std::move(wt);
    screen_admit_ = aligned_floats(n_panels_ * kPanel);
    screen_bias_ = aligned_floats(n_panels_ * kPanel);
    refresh_screen_arrays();
  }

  // The screens' bias and admission arrays and the bias bound, from bias_ and admit_.
  void refresh_screen_arrays() {
    const int64_t d_sae = spec_.d_sae;
    // jumprelu screens s_j - a_j against -m, a_j = max(threshold_j, 0) its admission: the
    // kernel adds b_j - a_j (rounded once here, once in the add: counted twice in b_max_).
    b_max_ = 0;
    const bool jump = spec_.activation == Activation::JumpReLU;
    for (int64_t l = 0; l < n_panels_ * kPanel; ++l) {
      const bool real = l < d_sae;
      screen_admit_[l] = real ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity();
      screen_bias_[l] = !real ? -std::numeric_limits<float>::infinity() : jump ? bias_[l] - admit_[l] : bias_[l];
      if (real) b_max_ = std::max(b_max_, std::fabs(static_cast<double>(bias_[l])) + (jump ? 2.0 * std::fabs(admit_[l]) + std::fabs(bias_[l]) : 0.0));
    }
  }

  // One block through a screen (screen.h): screen every latent, keep the candidates the
  // margin cannot rule out, rescore them in fp32 and apply the exact rule. topk: the top k of
  // the candidates. jumprelu: the candidates are s_j > a_j - m (a_j = max(threshold_j, 0),
  // its admission), no cuts, and the rescored pre_j > a_j are kept. Rows with too many
  // candidates go through the plain fp32 kernel. approx (topk only): the top k of the
  // candidates by their screened values, which are returned as they are (no rescoring).
  //
  // Latent split (small batches, split = true): this task screens panels [p0, p0 + n_panels)
  // only. Its candidates are every latent of the range whose exact value can reach the
  // range's own k-th largest, a superset of those that can reach the row's (the row's k-th is
  // at least the range's), so each part's exact top k holds the row's top k among its latents
  // and assemble() takes the k best of the parts' union: exact. Codes come out numbered from
  // the range's first latent, as from the plain kernels. Split parts learn their own hints
  // (a range's k-th value is lower than the row's).
  void encode_screened(const ScreenCopy& copy, const float* x, int64_t row0, int rows, const Variant& var,
                       EncodeBlockArgs args, int64_t p0, bool split, SparseCodes* stats, int64_t cap, bool approx,
                       TaskCodes& res) {
    const bool topk = spec_.activation == Activation::TopK;
    const int kind = static_cast<int>(copy.kind());
    const int hint_slot = kind + (split ? kScreenKinds : 0);
    const int32_t lat0 = static_cast<int32_t>(p0 * kPanel);
    const int64_t d = spec_.d_in;
    // jumprelu: a "k" no row reaches, so the sink never cuts (it only caps).
    const int64_t k = topk ? spec_.k : spec_.d_sae + 1;
    thread_local AlignedFloats xr_buf;
    thread_local int64_t xr_cap = 0;
    if (rows * d > xr_cap) xr_buf = aligned_floats(xr_cap = rows * d);
    float* xr = xr_buf.get();
    thread_local std::vector<float> margins;
    margins.resize(rows);
    // Starting thresholds from earlier rows (as in encode_topk_block): 0.9 x the smallest
    // k-th screened value / ||x'|| seen, minus 2m. Without them a row admits every value above
    // -m until its first cuts (~10% of the screened encode).
    thread_local std::vector<float> hints, norms;
    hints.resize(rows);
    norms.resize(rows);
    const float ratio = topk ? screen_hint_ratio_[hint_slot].load(std::memory_order_relaxed) : 0.0f;
    for (int r = 0; r < rows; ++r) norms[r] = pack_row(x, row0 + r, r, 1, xr, stats);  // x' row-major (mr = 1)
    ScreenWork& work = thread_screen_work();
    copy.pack(xr, rows, work, margins.data());
    for (int r = 0; r < rows; ++r)
      hints[r] = ratio > 0 ? ratio * norms[r] - 2.0f * margins[r] : -std::numeric_limits<float>::infinity();
    thread_local MarginSink sink;
    sink.reset(rows, k, cap, margins.data(), hints.data());
    EncodeBlockArgs sa = args;
    sa.bias = screen_bias_.get() + p0 * kPanel;
    sa.admit = screen_admit_.get() + p0 * kPanel;
    sa.panel0 = p0;
    sa.sink = &sink;
    copy.run(work, rows, sa);

    // Rescore the candidates in fp32, latent by latent across the block: a latent is a
    // candidate in ~1-2 rows of a block, so ordering the pairs by latent reads each W_enc row
    // once per block instead of once per pair (the x' rows of the block stay in cache).
    thread_local std::vector<std::vector<std::pair<float, int32_t>>> chosen;
    if (static_cast<int>(chosen.size()) < rows) chosen.resize(rows);
    thread_local std::vector<int> fallback;
    thread_local std::vector<ScreenPair> pairs_by_latent;
    thread_local std::vector<float> rescored;
    fallback.clear();
    pairs_by_latent.clear();
    int64_t n_cand = 0, overflows = 0;
    float next = std::numeric_limits<float>::infinity();
    bool short_row = false;
    for (int r = 0; r < rows; ++r) {
      chosen[r].clear();
      if (!sink.finish_row(r)) {
        fallback.push_back(r);
        overflows += sink.overflowed(r);
        continue;
      }
      if (topk && sink.candidates(r) < k) short_row = true;
      else if (topk && norms[r] > 0) next = std::min(next, sink.kth(r) / norms[r]);
      const int64_t n = sink.candidates(r);
      n_cand += n;
      const int32_t* ix = sink.row_indices(r);
      if (approx) {  // the screened values as they are (staged in ascending latent order)
        const float* sv = sink.row_values(r);
        for (int64_t e = 0; e < n; ++e)
          if (sv[e] > 0) chosen[r].emplace_back(sv[e], ix[e]);
        continue;
      }
      for (int64_t e = 0; e < n; ++e) pairs_by_latent.push_back({ix[e] + lat0, r});
    }
    std::sort(pairs_by_latent.begin(), pairs_by_latent.end(),
              [](const ScreenPair& a, const ScreenPair& b) { return a.latent != b.latent ? a.latent < b.latent : a.row < b.row; });
    rescored.resize(pairs_by_latent.size());
    if (current_isa() == Isa::Avx512)
      rescore_avx512(xr, wt32_.get(), d, pairs_by_latent.data(), static_cast<int64_t>(pairs_by_latent.size()), bias_.get(), rescored.data());
    else
      rescore_fma(xr, wt32_.get(), d, pairs_by_latent.data(), static_cast<int64_t>(pairs_by_latent.size()), bias_.get(), rescored.data());
    for (size_t t = 0; t < pairs_by_latent.size(); ++t) {
      const auto [j, r] = pairs_by_latent[t];
      if (rescored[t] > admit_[j]) chosen[r].emplace_back(rescored[t], j - lat0);  // topk: admit 0 (relu); jumprelu: max(threshold, 0)
    }
    for (int r = 0; r < rows; ++r) {
      auto& c = chosen[r];  // ascending latent order already (pairs sorted by latent, staging in order)
      if (topk) keep_top_k_sorted(c, k);
    }
    thread_local TopKSink retry;
    thread_local ListSink retry_list;
    thread_local TaskCodes retry_codes;
    if (!fallback.empty()) {
      const int n = static_cast<int>(fallback.size());
      const int mr = var.mr;
      const int64_t micro = (n + mr - 1) / mr;
      thread_local AlignedFloats buf;
      thread_local int64_t capacity = 0;
      if (micro * mr * d > capacity) buf = aligned_floats(capacity = micro * mr * d);
      std::memset(buf.get(), 0, sizeof(float) * micro * mr * d);
      for (int j = 0; j < n; ++j) pack_row(x, row0 + fallback[j], j, mr, buf.get(), nullptr);
      args.a_packed = buf.get();
      args.rows = n;
      if (topk) {
        retry.reset(n, k);
        args.sink = &retry;
        var.encode_block(args);
        for (int j = 0; j < n; ++j) retry.finalize(j);
      } else {
        retry_list.reset(n);
        args.sink = &retry_list;
        var.encode_block(args);
        retry_codes = TaskCodes{};
        retry_list.finish(retry_codes);
      }
    }
    size_t f = 0;
    size_t list_pos = 0;
    for (int r = 0; r < rows; ++r) {
      if (f < fallback.size() && fallback[f] == r) {
        const size_t first = res.values.size();
        if (topk) {
          retry.emit(static_cast<int>(f), res);
        } else {
          const uint32_t cnt = retry_codes.counts[f];
          res.counts.push_back(cnt);
          res.indices.insert(res.indices.end(), retry_codes.indices.begin() + list_pos, retry_codes.indices.begin() + list_pos + cnt);
          res.values.insert(res.values.end(), retry_codes.values.begin() + list_pos, retry_codes.values.begin() + list_pos + cnt);
          list_pos += cnt;
        }
        // No recomputation: the rescoring sums in the fp32 kernel's order (rescore.cpp), so
        // whether a row fell back does not change its values' bits.
        (void)first;
        ++f;
        continue;
      }
      res.counts.push_back(static_cast<uint32_t>(chosen[r].size()));
      for (const auto& [v, j] : chosen[r]) {
        res.indices.push_back(j);
        res.values.push_back(v);
      }
    }
    // Rows with fewer than k candidates defeat any hint: stop hinting for this SAE.
    if (short_row) screen_hints_off_[hint_slot].store(true, std::memory_order_relaxed);
    const bool off = screen_hints_off_[hint_slot].load(std::memory_order_relaxed);
    screen_hint_ratio_[hint_slot].store(off || !std::isfinite(next) || next <= 0 ? 0.0f : 0.9f * next, std::memory_order_relaxed);
    // Most rows over the candidate cap (e.g. a jumprelu SAE with thousands of active latents
    // per row): the screen only adds work, so this SAE uses the fp32 kernel from now on.
    // (Fallbacks for a defeated hint do not count: the hint relearns.)
    if (rows >= 16 && 2 * overflows > rows) screen_off_[kind].store(true, std::memory_order_relaxed);
    last_screen_.store(kind, std::memory_order_relaxed);
    if (p0 == 0) screen_rows_.fetch_add(rows, std::memory_order_relaxed);  // a latent split's rows once
    screen_candidates_.fetch_add(n_cand, std::memory_order_relaxed);
    screen_fallbacks_.fetch_add(static_cast<int64_t>(fallback.size()), std::memory_order_relaxed);
  }

  // Concatenates task results into one CSR, merging latent splits of the same block per row.
  void assemble(std::vector<TaskCodes>& results, int64_t n_blocks, int64_t n_splits, int64_t rows,
                SparseCodes* out) const {
    out->indptr.assign(rows + 1, 0);
    out->indices.clear();
    out->values.clear();
    uint64_t total = 0;
    for (const auto& r : results) total += r.indices.size();
    if (total > UINT32_MAX) throw Error("encode produced more than 2^32-1 nonzeros: encode fewer rows per call");
    out->indices.reserve(total);
    out->values.reserve(total);
    int64_t row = 0;
    std::vector<std::pair<float, int32_t>> cand;
    for (int64_t b = 0; b < n_blocks; ++b) {
      const TaskCodes* split = &results[b * n_splits];
      const size_t block_rows = split[0].counts.size();
      std::vector<size_t> cursor(n_splits, 0);
      for (size_t r = 0; r < block_rows; ++r, ++row) {
        cand.clear();
        for (int64_t s = 0; s < n_splits; ++s) {
          for (uint32_t e = 0; e < split[s].counts[r]; ++e, ++cursor[s])
            cand.emplace_back(split[s].values[cursor[s]], split[s].indices[cursor[s]]);
        }
        // Each split kept its own top-k; the row's top-k is among their union.
        if (n_splits > 1 && spec_.activation == Activation::TopK) keep_top_k_sorted(cand, spec_.k);
        for (const auto& [v, i] : cand) {
          out->indices.push_back(i);
          out->values.push_back(v);
        }
        out->indptr[row + 1] = static_cast<uint32_t>(out->indices.size());
      }
    }
  }

  SaeSpec spec_;
  int64_t n_panels_;
  AlignedFloats b_packed_, bias_, admit_, W_dec_, b_dec_, W_skip_t_;
  // Screening (screen.h): one low-precision copy per screen kind built so far, the fp32
  // latent-major W_enc for rescoring, -inf admission for real latents.
  bool screening_allowed_ = false;
  bool bf16_weights_ = false;  // every W_enc value exactly a bf16 (part of the shape class)
  std::shared_ptr<const ScreenCopy> screens_[kScreenKinds];  // atomic_load / atomic_store
  bool cannot_hold_[kScreenKinds] = {};                      // make_screen_copy said no (under screen_mutex_)
  std::mutex screen_mutex_;
  // Measured kernel decisions by shape-class key (kernel_choice.h).
  mutable std::mutex choice_mutex_;
  std::map<std::string, KernelDecision> decisions_;
  std::atomic<int> last_screen_{0};
  AlignedFloats wt32_, screen_admit_, screen_bias_;
  double b_max_ = 0;
  std::atomic<int64_t> screen_rows_{0}, screen_candidates_{0}, screen_fallbacks_{0};
  std::atomic<float> screen_hint_ratio_[2 * kScreenKinds] = {};  // [kind], then [kind] of latent-split parts
  std::atomic<bool> screen_hints_off_[2 * kScreenKinds] = {};
  std::atomic<bool> screen_off_[kScreenKinds] = {};  // set when most rows fell back: fp32 from then on
  std::atomic<float> hint_ratio_{0.0f};  // 0: no hint yet
  std::atomic<bool> hints_off_{false};
  std::atomic<int64_t> misses_{0};       // rows recomputed after a failed hint (for tests/bench)
};

}  // namespace saekit::cpu
