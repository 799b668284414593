// The CUDA backend's trainer (issue 20): whole optimizer steps of topk, batchtopk, standard and
// jumprelu SAEs on the device, behind the BackendTrainer interface. A header, like
// cuda_model.h, so the same host code is compiled by nvcc into the addon (cuda_backend.cu) and
// by g++ against the CPU emulation (emu/train_emu_test.cpp), where CI runs it against the CPU
// trainer.
//
// The math is the CPU trainer's (native/cpu/cpu_trainer.cpp, header comment). One step:
//   upload x -> prep (xs = s x, x' = xs - b_dec) -> column means (FVU) -> the selection ->
//   residuals, g = 2e/B, dL/dpre per entry -> [AuxK: top-k_aux over dead latents, h, dL/dpre]
//   -> host counting sort of the entries by latent -> per-latent gradients (decoder projection,
//   standard's L1 term) -> db_dec -> dW_enc by transposing the latent-major gradient ->
//   gradient norm -> fused Adam (one kernel, every parameter) -> decoder renorm; the firing
//   counters are updated on the host from the downloaded selection.
// The selection, per architecture (the host rules are native/train_select.h, shared with the
// CPU trainer, so both pick the same entries from the same values):
//   topk       the exact fp32 top-k encode (kernels/encode_topk.cuh), k slots per row;
//   standard   every positive pre (kernels/encode_threshold.cuh, count then fill), CSR;
//   jumprelu   the threshold encode admitting pre > theta - eps/2, downloaded and split on the
//              host into the active entries (uploaded back, CSR) and the estimators' window
//              (its dot products g . W_dec[j] on the device, dL/dlog_threshold on the host);
//   batchtopk  the threshold encode admitting pre > tau (0.9 x the last cut, or the safe tau
//              from a per-row top-k when too few pass), then the exact cut on the host.
// The batch is checked and staged through page-locked memory in chunks, each chunk's copy to
// the device overlapping the host's work on the next (upload_input).
// Everything runs on the legacy default stream, in order; the host round trips per step are the
// selection (also what last_selection() and the dead-latent counters need) and, for the
// threshold architectures, the candidates' counts and values.
//
// Deterministic: no atomics anywhere (kernels/train_step.cuh says where each sum is owned), the
// entry order is fixed by the sort (latent, then main before AuxK, then row), top-k ties go to
// the lower latent, batch top-k ties to the lower row then latent, so the same seed and data
// give the same weights run to run on one card.
//
// Scope: SAEs (d_out = d_in). Transcoders, skip transcoders and matryoshka are refused by name:
// train them with device 'cpu'.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "cuda_model.h"
#include "kernels/train_step.cuh"
#include "../train_select.h"

namespace saekit {
namespace {

/** Threads per block of the per-row / per-latent kernels: 128 on the GPU, one warp under emulation (threads are OS threads there). */
/** And the most blocks of a launch: every kernel is grid-stride, so under emulation two blocks
 *  walk all rows / latents (and exercise the strides) at a fraction of the OS threads. */
#if defined(__CUDACC__)
constexpr int kTrainThreads = 128;
constexpr int kTrainEltThreads = 256;  // elementwise kernels (prep, Adam) and the transpose's 32 x 8
constexpr int64_t kTrainGridCap = 65535;
#else
constexpr int kTrainThreads = 32;
constexpr int kTrainEltThreads = 32;
constexpr int64_t kTrainGridCap = 2;
#endif
static_assert((kTrainThreads & (kTrainThreads - 1)) == 0 && kTrainThreads <= cuda::TRAIN_MAX_THREADS, "reduction trees need a power of two");

inline unsigned train_grid(int64_t items, int64_t cap = kTrainGridCap) { return static_cast<unsigned>(std::max<int64_t>(1, std::min({items, cap, kTrainGridCap}))); }

/**
 * Time per phase of the step (SAEKIT_TRAIN_PROFILE): MARK(name) waits for the device, then
 * charges the time since the previous mark to NAME. Off, it costs nothing and never waits.
 */
class TrainPhases {
 public:
  TrainPhases() : on_(std::getenv("SAEKIT_TRAIN_PROFILE") != nullptr) {}
  bool on() const { return on_; }
  void start() {
    if (on_) sync(), last_ = now();
  }
  void mark(const char* phase) {
    if (!on_) return;
    sync();
    const double t = now();
    auto it = std::find_if(ms_.begin(), ms_.end(), [&](const auto& p) { return p.first == phase; });
    if (it == ms_.end()) ms_.emplace_back(phase, 0.0), it = ms_.end() - 1;
    it->second += (t - last_) * 1e3;
    last_ = t;
  }
  std::string report() const {
    double total = 0;
    for (const auto& p : ms_) total += p.second;
    std::string out;
    for (const auto& p : ms_) {
      char buf[96];
      std::snprintf(buf, sizeof buf, "%s%s %.2f ms (%.1f%%)", out.empty() ? "" : ", ", p.first.c_str(), p.second, total > 0 ? 100.0 * p.second / total : 0.0);
      out += buf;
    }
    return out;
  }

 private:
  static void sync() { SAEKIT_CUDA_CHECK(cudaStreamSynchronize(nullptr)); }
  static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
  bool on_;
  double last_ = 0;
  std::vector<std::pair<std::string, double>> ms_;
};

class CudaTrainer final : public BackendTrainer {
 public:
  CudaTrainer(const TrainSpec& spec, const TrainParamsView& init) : spec_(spec) {
    const std::string cpu = "; train it with device 'cpu'";
    if (spec.transcoder || spec.skip) throw Error(std::string("CUDA trainer: ") + (spec.skip ? "skip transcoders" : "transcoders") + " have no CUDA training kernels yet" + cpu);
    if (!spec.matryoshka_widths.empty()) throw Error("CUDA trainer: matryoshka widths have no CUDA training kernels yet" + cpu);
    if (spec.out_width() != spec.d_in) throw Error("an SAE's output width must equal d_in (set transcoder for d_out != d_in)");
    if (spec.d_in < 1 || spec.d_sae < 1 || spec.d_in > INT32_MAX / 2 || spec.d_sae > INT32_MAX / 2) throw Error("CUDA trainer: d_in and d_sae must be in [1, 2^30]");
    if (uses_k() && (spec.k < 1 || spec.k > spec.d_sae || spec.k > cuda::ENCODE_TOPK_MAX_K))
      throw Error(std::string("CUDA trainer: ") + train_arch_name(spec.arch) + " with k = " + std::to_string(spec.k) + " is not supported (1 <= k <= min(d_sae, " +
                  std::to_string(cuda::ENCODE_TOPK_MAX_K) + "))");
    if (spec.k_aux < 0 || spec.k_aux > spec.d_sae) throw Error("CUDA trainer: k_aux must be in [0, d_sae]");
    d_ = spec.d_in;
    L_ = spec.d_sae;
    kslots_ = spec.arch == TrainArch::TopK ? spec.k : 0;
    SAEKIT_CUDA_CHECK(cudaSetDevice(0));
    const size_t dl = static_cast<size_t>(d_ * L_);
    W_enc_.upload(init.W_enc, dl);
    b_enc_.upload(init.b_enc, L_);
    W_dec_.upload(init.W_dec, dl);
    b_dec_.upload(init.b_dec, d_);
    // Every architecture holds log_threshold (trained by jumprelu only), as the CPU trainer
    // does, so checkpoints carry the same tensors whichever device wrote them.
    if (init.log_threshold != nullptr) logth_.upload(init.log_threshold, L_);
    else zero(logth_, L_);
    for (DeviceBuffer<float>* b : {&mW_enc_, &vW_enc_, &gW_enc_, &gWt_, &mW_dec_, &vW_dec_, &gW_dec_}) zero(*b, dl);
    for (DeviceBuffer<float>* b : {&mb_enc_, &vb_enc_, &gb_enc_, &m_logth_, &v_logth_, &g_logth_}) zero(*b, L_);
    for (DeviceBuffer<float>* b : {&mb_dec_, &vb_dec_, &gb_dec_}) zero(*b, d_);
    fires_.assign(L_, 0.0);
    since_fired_.assign(L_, 0.0);
    sq_.resize(L_ + d_);
    total_.resize(1);
    offsets_.resize(L_ + 1);
    dead_dev_.resize(L_);
    col_mean_.resize(d_);
    admit_.resize(L_);
    dec_norm_dev_.resize(L_);
    dpre_add_.resize(L_);
  }

  int64_t bytes() const override {
    size_t b = 0;
    for (const DeviceBuffer<float>* p : {&W_enc_, &b_enc_, &W_dec_, &b_dec_, &logth_, &mW_enc_, &vW_enc_, &gW_enc_, &gWt_, &mW_dec_, &vW_dec_, &gW_dec_, &mb_enc_,
                                         &vb_enc_, &gb_enc_, &mb_dec_, &vb_dec_, &gb_dec_, &m_logth_, &v_logth_, &g_logth_, &x_, &xs_, &xp_, &E_, &U_, &vals_,
                                         &dpre_, &cand_vals_, &admit_, &dec_norm_dev_, &dpre_add_, &win_df_})
      b += p->bytes();
    for (const DeviceBuffer<int32_t>* p : {&idx_, &aux_idx_, &count_, &aux_count_, &offsets_, &dead_dev_, &ent_urow_, &ent_xrow_, &ent_slot_, &cand_idx_, &win_row_,
                                           &win_lat_})
      b += p->bytes();
    for (const DeviceBuffer<double>* p : {&sq_, &total_, &col_mean_, &err2_, &aux_err2_, &dev2_}) b += p->bytes();
    return static_cast<int64_t>(b + main_off_.bytes() + cand_off_.bytes() + staging_.bytes());
  }

  TrainStepStats step(const float* x, const float* y, int64_t B, const TrainStepOptions& o) override {
    (void)y;
    if (B < 1) throw Error("a training step needs at least one row");
    if (B > INT32_MAX / std::max<int64_t>(1, spec_.k + spec_.k_aux) || B * d_ > (int64_t{1} << 40)) throw Error("CUDA trainer: batch too large");
    phases_.start();
    const int d = static_cast<int>(d_), L = static_cast<int>(L_), rows = static_cast<int>(B);
    reserve(B);
    upload_input(x, B, o.input_scale);
    phases_.mark("input check + upload");
    SAEKIT_LAUNCH(cuda::train_prep_kernel, train_grid((B * d_ + kTrainEltThreads - 1) / kTrainEltThreads, 4096), kTrainEltThreads, stream_, static_cast<const float*>(x_.get()),
                  static_cast<const float*>(b_dec_.get()), B, d, o.input_scale, xs_.get(), xp_.get());
    SAEKIT_LAUNCH(cuda::train_col_mean_kernel, train_grid((d_ + kTrainThreads - 1) / kTrainThreads), kTrainThreads, stream_, static_cast<const float*>(xs_.get()), rows, d, col_mean_.get());
    phases_.mark("prep");

    // Forward: the selection (see the top of the file), then the residuals.
    TrainStepStats st;
    select(B, o);
    phases_.mark("selection");
    const bool l1 = spec_.arch == TrainArch::Standard && o.l1_coeff > 0;
    const float l1_scale = l1 ? static_cast<float>(o.l1_coeff / B) : 0.0f;
    if (l1) {
      // standard: dL/dpre gains l1_scale ||W_dec[j]|| (the CPU's float product, per latent).
      SAEKIT_LAUNCH(cuda::train_row_norms_kernel, train_grid(L_), kTrainThreads, stream_, static_cast<const float*>(W_dec_.get()), L, d, dec_norm_dev_.get());
      dec_norm_.resize(L_);
      dec_norm_dev_.download(dec_norm_.data(), L_);
      std::vector<float> add(L_);
      for (int64_t j = 0; j < L_; ++j) add[j] = l1_scale * dec_norm_[j];
      dpre_add_.upload(add.data(), L_);
    }
    const cuda::RowSlots main_slots{static_cast<const int32_t*>(count_.get()), static_cast<int>(kslots_), kslots_ > 0 ? nullptr : static_cast<const uint32_t*>(main_off_.get())};
    const float g_scale = 2.0f / static_cast<float>(B);
    SAEKIT_LAUNCH(cuda::train_residual_kernel, train_grid(B), kTrainThreads, stream_, static_cast<const float*>(b_dec_.get()), int64_t{0},
                  static_cast<const float*>(xs_.get()), static_cast<const double*>(col_mean_.get()), static_cast<const float*>(W_dec_.get()),
                  static_cast<const int32_t*>(idx_.get()), static_cast<const float*>(vals_.get()), main_slots, rows, d, g_scale,
                  l1 ? static_cast<const float*>(dpre_add_.get()) : static_cast<const float*>(nullptr), E_.get(), U_.get(), err2_.get(), dev2_.get(), dpre_.get());
    phases_.mark("residuals");

    // AuxK over the latents dead before this step (the host keeps the counters): topk and batchtopk.
    dead_.clear();
    if (o.dead_tokens > 0)
      for (int64_t j = 0; j < L_; ++j)
        if (since_fired_[j] >= o.dead_tokens) dead_.push_back(static_cast<int32_t>(j));
    st.dead = static_cast<int64_t>(dead_.size());
    const int64_t D = st.dead;
    aux_k_ = 0;
    double aux_scale = 0;
    if (uses_k() && !dead_.empty() && o.aux_coeff > 0 && spec_.k_aux > 0) {
      aux_k_ = std::min<int64_t>(spec_.k_aux, D);
      const bool all = aux_k_ == D;
      if (!all && aux_k_ > cuda::TRAIN_AUX_MAX_K)
        throw Error("CUDA trainer: k_aux = " + std::to_string(aux_k_) + " below the dead count " + std::to_string(D) + " needs a list longer than " +
                    std::to_string(cuda::TRAIN_AUX_MAX_K) + "; lower k_aux or train with device 'cpu'");
      aux_scale = std::min(static_cast<double>(D) / spec_.k_aux, 1.0);
      dead_dev_.upload(dead_.data(), dead_.size());
      float* aux_vals = vals_.get() + main_slots_;  // AuxK's slots follow the main selection's
      float* aux_dpre = dpre_.get() + main_slots_;
      SAEKIT_LAUNCH(cuda::train_aux_topk_kernel, train_grid(B), 32, stream_, static_cast<const float*>(xp_.get()), static_cast<const float*>(W_enc_.get()),
                    static_cast<const float*>(b_enc_.get()), static_cast<const int32_t*>(dead_dev_.get()), static_cast<int>(D), rows, d, L,
                    static_cast<int>(aux_k_), all ? 1 : 0, aux_idx_.get(), aux_vals, aux_count_.get());
      const float h_scale = static_cast<float>(2.0 * o.aux_coeff * aux_scale / B);
      const cuda::RowSlots aux_slots{static_cast<const int32_t*>(aux_count_.get()), static_cast<int>(aux_k_), nullptr};
      SAEKIT_LAUNCH(cuda::train_residual_kernel, train_grid(B), kTrainThreads, stream_, static_cast<const float*>(E_.get()), static_cast<int64_t>(d_),
                    static_cast<const float*>(nullptr), static_cast<const double*>(nullptr), static_cast<const float*>(W_dec_.get()),
                    static_cast<const int32_t*>(aux_idx_.get()), static_cast<const float*>(aux_vals), aux_slots, rows, d, h_scale,
                    static_cast<const float*>(nullptr), static_cast<float*>(nullptr), U_.get() + B * d_, aux_err2_.get(), static_cast<double*>(nullptr), aux_dpre);
    }
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    phases_.mark("auxk");

    // The selections and the per-row sums come back: stats, CSR, the latent-sorted entry list.
    h_err2_.resize(B);
    h_dev2_.resize(B);
    err2_.download(h_err2_.data(), B);
    dev2_.download(h_dev2_.data(), B);
    if (kslots_ > 0) {
      h_count_.resize(B);
      h_idx_.resize(B * kslots_);
      count_.download(h_count_.data(), B);
      idx_.download(h_idx_.data(), B * kslots_);
      to_csr(B, kslots_, h_count_, h_idx_, &sel_.indptr, &sel_.indices);
    }
    double sum_err = 0, sum_dev = 0;
    for (int64_t n = 0; n < B; ++n) sum_err += h_err2_[n], sum_dev += h_dev2_[n];
    st.mse = sum_err / B;
    st.fvu = sum_dev > 0 ? sum_err / sum_dev : 0.0;
    st.l0 = static_cast<double>(sel_.indices.size()) / B;
    aux_indptr_.assign(B + 1, 0);
    aux_indices_.clear();
    if (aux_k_ > 0) {
      h_aux_count_.resize(B);
      h_aux_idx_.resize(B * aux_k_);
      std::vector<double> aerr(B);
      aux_count_.download(h_aux_count_.data(), B);
      aux_idx_.download(h_aux_idx_.data(), B * aux_k_);
      aux_err2_.download(aerr.data(), B);
      to_csr(B, aux_k_, h_aux_count_, h_aux_idx_, &aux_indptr_, &aux_indices_);
      double total = 0;
      for (double v : aerr) total += v;
      st.aux_loss = o.aux_coeff * aux_scale * total / B;
    }
    if (spec_.arch == TrainArch::JumpReLU) st.l1_loss = threshold_gradient(B, o);
    if (l1) {
      double total = 0;
      for (int64_t n = 0; n < B; ++n) {
        double s = 0;
        for (uint32_t p = sel_.indptr[n]; p < sel_.indptr[n + 1]; ++p) s += double{sel_.values[p]} * dec_norm_[sel_.indices[p]];
        total += s;
      }
      st.l1_loss = o.l1_coeff * total / B;
    }
    phases_.mark("download + stats");
    build_entries(B);
    phases_.mark("entry sort");

    // Backward: per-latent rows (and the decoder projection), db_dec, dW_enc's layout.
    const bool unit_decoder = spec_.arch != TrainArch::Standard;
    SAEKIT_LAUNCH(cuda::train_latent_grads_kernel, train_grid(L_), kTrainThreads, stream_, static_cast<const int32_t*>(offsets_.get()),
                  static_cast<const int32_t*>(ent_urow_.get()), static_cast<const int32_t*>(ent_xrow_.get()), static_cast<const int32_t*>(ent_slot_.get()),
                  static_cast<const float*>(vals_.get()), static_cast<const float*>(dpre_.get()), static_cast<const float*>(U_.get()),
                  static_cast<const float*>(xp_.get()), static_cast<const float*>(W_dec_.get()), L, d, unit_decoder ? 1 : 0,
                  l1 ? static_cast<const float*>(dec_norm_dev_.get()) : static_cast<const float*>(nullptr), l1_scale, gW_dec_.get(), gWt_.get(), gb_enc_.get(),
                  sq_.get());
    SAEKIT_LAUNCH(cuda::train_bdec_grad_kernel, train_grid(d_), kTrainThreads, stream_, static_cast<const float*>(U_.get()), rows,
                  static_cast<const float*>(gb_enc_.get()), static_cast<const float*>(W_enc_.get()), L, d, gb_dec_.get(), sq_.get() + L_);
    const int64_t tiles = ((L_ + 31) / 32) * ((d_ + 31) / 32);
    SAEKIT_LAUNCH(cuda::train_transpose_kernel, train_grid(tiles), dim3(32, kTrainEltThreads / 32), stream_, static_cast<const float*>(gWt_.get()), L, d, gW_enc_.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    phases_.mark("gradients");

    if (o.apply) {
      SAEKIT_LAUNCH(cuda::train_sum_kernel, 1, kTrainThreads * 2, stream_, static_cast<const double*>(sq_.get()), L_ + d_, total_.get());
      double total = 0;
      total_.download(&total, 1);
      if (spec_.arch == TrainArch::JumpReLU)
        for (float g : h_glogth_) total += static_cast<double>(g) * g;
      const double norm = std::sqrt(total);
      st.grad_norm = norm;
      const float gscale = o.clip > 0 && norm > o.clip ? static_cast<float>(o.clip / norm) : 1.0f;
      cuda::AdamSegments segs{};
      segs.s[0] = {W_enc_.get(), mW_enc_.get(), vW_enc_.get(), gW_enc_.get(), d_ * L_};
      segs.s[1] = {W_dec_.get(), mW_dec_.get(), vW_dec_.get(), gW_dec_.get(), d_ * L_};
      segs.s[2] = {b_enc_.get(), mb_enc_.get(), vb_enc_.get(), gb_enc_.get(), L_};
      segs.s[3] = {b_dec_.get(), mb_dec_.get(), vb_dec_.get(), gb_dec_.get(), d_};
      segs.count = 4;
      if (spec_.arch == TrainArch::JumpReLU) segs.s[segs.count++] = {logth_.get(), m_logth_.get(), v_logth_.get(), g_logth_.get(), L_};
      const float inv_c1 = static_cast<float>(1.0 / (1.0 - std::pow(o.beta1, static_cast<double>(o.t))));
      const float inv_c2 = static_cast<float>(1.0 / (1.0 - std::pow(o.beta2, static_cast<double>(o.t))));
      SAEKIT_LAUNCH(cuda::train_adam_kernel, train_grid((d_ * L_ + kTrainEltThreads - 1) / kTrainEltThreads, kAdamBlocks), kTrainEltThreads, stream_, segs, gscale, static_cast<float>(o.lr),
                    static_cast<float>(o.beta1), static_cast<float>(o.beta2), inv_c1, inv_c2, static_cast<float>(o.eps));
      if (unit_decoder) SAEKIT_LAUNCH(cuda::train_renorm_kernel, train_grid(L_), kTrainThreads, stream_, W_dec_.get(), L, d);
      SAEKIT_CUDA_CHECK(cudaGetLastError());
      phases_.mark("adam + renorm");
      update_firing(B);
      if (spec_.arch == TrainArch::BatchTopK && batch_cut_ > 0)
        batch_threshold_ = batch_threshold_ > 0 ? 0.99 * batch_threshold_ + 0.01 * batch_cut_ : batch_cut_;
    }
    return st;
  }

  int64_t state_size(const std::string& name) const override {
    const std::string base = param_of(name);
    if (base == "W_enc" || base == "W_dec") return d_ * L_;
    if (base == "b_enc" || base == "log_threshold" || name == "fires" || name == "since_fired") return L_;
    if (base == "b_dec") return d_;
    if (name == "batch_threshold") return 1;
    throw Error("unknown trainer state '" + name + "'");
  }

  bool state_is_f64(const std::string& name) const override { return name == "fires" || name == "since_fired" || name == "batch_threshold"; }

  void get_state(const std::string& name, void* out) const override {
    const int64_t n = state_size(name);
    if (name == "batch_threshold") {
      *static_cast<double*>(out) = batch_threshold_;
      return;
    }
    if (name == "fires" || name == "since_fired") {
      std::memcpy(out, (name == "fires" ? fires_ : since_fired_).data(), sizeof(double) * n);
      return;
    }
    tensor(name)->download(static_cast<float*>(out), n);
  }

  void set_state(const std::string& name, const void* in) override {
    const int64_t n = state_size(name);
    if (name == "batch_threshold") {
      batch_threshold_ = *static_cast<const double*>(in);
      return;
    }
    if (name.rfind("grad.", 0) == 0) throw Error("trainer state '" + name + "' is read-only");
    if (name == "fires" || name == "since_fired") {
      std::memcpy((name == "fires" ? fires_ : since_fired_).data(), in, sizeof(double) * n);
      return;
    }
    const_cast<DeviceBuffer<float>*>(tensor(name))->upload(static_cast<const float*>(in), n);
  }

  void last_selection(std::vector<uint32_t>* indptr, std::vector<int32_t>* indices, bool aux) const override {
    *indptr = aux ? aux_indptr_ : sel_.indptr;
    *indices = aux ? aux_indices_ : sel_.indices;
  }

  std::string phase_report() const override { return phases_.on() ? phases_.report() : ""; }

 private:
  // The fused Adam kernel's grid: enough blocks to fill a GPU, grid-stride beyond.
  static constexpr int64_t kAdamBlocks = 4096;
  // Input staging chunks: 1 MiB on the GPU (large enough for full-speed DMA, small enough to
  // overlap); under emulation 64 floats, so the tests' small batches take several chunks.
#if defined(__CUDACC__)
  static constexpr int64_t kStagingChunkFloats = int64_t{1} << 18;
#else
  static constexpr int64_t kStagingChunkFloats = 64;
#endif

  bool uses_k() const { return spec_.arch == TrainArch::TopK || spec_.arch == TrainArch::BatchTopK; }

  static std::string param_of(const std::string& name) {
    for (const char* prefix : {"adam_m.", "adam_v.", "grad."})
      if (name.rfind(prefix, 0) == 0) return name.substr(std::strlen(prefix));
    return name;
  }

  const DeviceBuffer<float>* tensor(const std::string& name) const {
    struct Row {
      const char* param;
      const DeviceBuffer<float>*p, *m, *v, *g;
    };
    const Row rows[] = {{"W_enc", &W_enc_, &mW_enc_, &vW_enc_, &gW_enc_},
                        {"W_dec", &W_dec_, &mW_dec_, &vW_dec_, &gW_dec_},
                        {"b_enc", &b_enc_, &mb_enc_, &vb_enc_, &gb_enc_},
                        {"b_dec", &b_dec_, &mb_dec_, &vb_dec_, &gb_dec_},
                        {"log_threshold", &logth_, &m_logth_, &v_logth_, &g_logth_}};
    const std::string base = param_of(name);
    for (const Row& r : rows) {
      if (base != r.param) continue;
      if (name.rfind("adam_m.", 0) == 0) return r.m;
      if (name.rfind("adam_v.", 0) == 0) return r.v;
      if (name.rfind("grad.", 0) == 0) return r.g;
      return r.p;
    }
    throw Error("unknown trainer state '" + name + "'");
  }

  static void zero(DeviceBuffer<float>& b, size_t n) {
    b.resize(n);
    SAEKIT_CUDA_CHECK(cudaMemset(b.get(), 0, std::max<size_t>(n, 1) * sizeof(float)));
  }

  // x reaches the device through a page-locked staging buffer, in chunks of rows: the host
  // checks chunk c + 1 (the CPU trainer's check and message: a non-finite s x fails the step
  // before anything changes) and copies it into the staging buffer while the copy engine moves
  // chunk c (cudaMemcpyAsync from pinned memory returns at once), instead of a checking pass
  // followed by a pageable copy that the driver stages through its own buffer.
  void upload_input(const float* x, int64_t B, float s) {
    staging_.resize(static_cast<size_t>(B * d_));
    const int64_t chunk = std::max<int64_t>(1, kStagingChunkFloats / d_);
    for (int64_t r0 = 0; r0 < B; r0 += chunk) {
      const int64_t r1 = std::min(B, r0 + chunk);
      for (int64_t n = r0; n < r1; ++n) {
        const float* xr = x + n * d_;
        float* dst = staging_.get() + n * d_;
        float probe = 0.0f;
        for (int64_t i = 0; i < d_; ++i) {
          const float v = s * xr[i];
          probe += v - v;  // NaN for inf/NaN (and for finite values that overflow)
          dst[i] = xr[i];
        }
        if (probe != 0.0f) {
          // Copies still in flight read the staging buffer: the next step must not overwrite it under them.
          SAEKIT_CUDA_CHECK(cudaStreamSynchronize(stream_));
          int64_t col = 0;
          while (col < d_ && std::isfinite(s * xr[col])) ++col;
          throw InputError("training batch row " + std::to_string(n) + " has a non-finite value at column " + std::to_string(col), n, col);
        }
      }
      SAEKIT_CUDA_CHECK(cudaMemcpyAsync(x_.get() + r0 * d_, staging_.get() + r0 * d_, static_cast<size_t>((r1 - r0) * d_) * sizeof(float), cudaMemcpyHostToDevice, stream_));
    }
  }

  void reserve(int64_t B) {
    if (B <= capacity_) return;
    const size_t bd = static_cast<size_t>(B * d_);
    x_.resize(bd);
    xs_.resize(bd);
    xp_.resize(bd);
    E_.resize(bd);
    U_.resize(2 * bd);  // main rows, then AuxK's
    // topk's k slots per row (batchtopk's per-row top-k for the safe threshold uses them too);
    // the threshold architectures grow these per step in upload_selection.
    reserve_slots(B * spec_.k, B * spec_.k_aux);
    aux_idx_.resize(static_cast<size_t>(B * std::max<int64_t>(1, spec_.k_aux)));
    count_.resize(B);
    aux_count_.resize(B);
    err2_.resize(B);
    aux_err2_.resize(B);
    dev2_.resize(B);
    main_off_.resize(B + 1);
    cand_off_.resize(B + 1);
    capacity_ = B;
  }

  // Room for MAIN slots of the main selection followed by AUX slots of AuxK's (grow-only; the
  // contents are not kept, so this runs before anything is written for the step).
  void reserve_slots(int64_t main, int64_t aux) {
    if (main + aux > INT32_MAX) throw Error("CUDA trainer: " + std::to_string(main + aux) + " selected entries in one step exceed 2^31; use a smaller batch");
    const size_t slots = static_cast<size_t>(std::max<int64_t>(1, main + aux));
    idx_.resize(static_cast<size_t>(std::max<int64_t>(1, main)));
    vals_.resize(slots);
    dpre_.resize(slots);
    ent_urow_.resize(slots);
    ent_xrow_.resize(slots);
    ent_slot_.resize(slots);
  }

  // ---- The selection ------------------------------------------------------------------------

  // Fills the main selection on the device (topk: k slots per row in idx_/vals_/count_; the
  // others: CSR in idx_/vals_/main_off_) and, for the threshold architectures, on the host in
  // sel_ (topk's comes back after the residuals). main_slots_: the slots it spans.
  void select(int64_t B, const TrainStepOptions& o) {
    const int rows = static_cast<int>(B);
    switch (spec_.arch) {
      case TrainArch::TopK:
        encode_topk(rows);
        main_slots_ = B * spec_.k;
        return;
      case TrainArch::Standard:
        // Every positive pre, written straight into the main selection's buffers.
        threshold_count(rows, false);
        threshold_fill(rows, false, main_off_, true, &sel_);
        main_slots_ = static_cast<int64_t>(sel_.indices.size());
        return;
      case TrainArch::JumpReLU: {
        std::vector<float> logth(L_), admit(L_);
        logth_.download(logth.data(), L_);
        theta_.resize(L_);
        for (int64_t j = 0; j < L_; ++j) {
          theta_[j] = std::exp(logth[j]);
          admit[j] = theta_[j] - static_cast<float>(o.bandwidth / 2);
        }
        admit_.upload(admit.data(), L_);
        threshold_count(rows, true);
        threshold_fill(rows, true, cand_off_, false, &sel_);
        train::jump_split(&sel_, theta_.data(), static_cast<float>(o.bandwidth / 2), B, &window_);
        upload_selection(B);
        return;
      }
      case TrainArch::BatchTopK: {
        const int64_t want = spec_.k * B;
        float tau = hint_ > 0 ? 0.9f * hint_ : safe_threshold(rows, want);
        set_admit_all(tau);
        if (threshold_count(rows, true) < want && tau > 0) {
          // Too few above the hint (the safe threshold always admits enough, or everything).
          tau = safe_threshold(rows, want);
          set_admit_all(tau);
          threshold_count(rows, true);
        }
        threshold_fill(rows, true, cand_off_, false, &cand_);
        hint_ = train::batch_topk_cut(cand_, B, L_, want, &sel_);
        batch_cut_ = hint_;
        upload_selection(B);
        return;
      }
    }
  }

  // The exact fp32 per-row top-k (ascending latent order, zeros dropped) into idx_/vals_/count_.
  void encode_topk(int rows) {
    SAEKIT_LAUNCH(cuda::encode_topk_f32_kernel, train_grid((rows + cuda::ENCODE_WARPS_PER_BLOCK - 1) / cuda::ENCODE_WARPS_PER_BLOCK), 32 * cuda::ENCODE_WARPS_PER_BLOCK,
                  stream_, static_cast<const float*>(xp_.get()), static_cast<const float*>(W_enc_.get()), static_cast<const float*>(b_enc_.get()),
                  static_cast<const float*>(b_dec_.get()), 0, rows, static_cast<int>(d_), static_cast<int>(L_), static_cast<int>(spec_.k), idx_.get(), vals_.get(),
                  count_.get());
  }

  // batchtopk's safe threshold (train::batch_topk_safe_threshold) from the per-row top-k.
  float safe_threshold(int rows, int64_t want) {
    encode_topk(rows);
    h_count_.resize(rows);
    std::vector<float> vals(static_cast<size_t>(rows) * spec_.k), kept;
    count_.download(h_count_.data(), rows);
    vals_.download(vals.data(), vals.size());
    for (int n = 0; n < rows; ++n) kept.insert(kept.end(), vals.begin() + n * spec_.k, vals.begin() + n * spec_.k + h_count_[n]);
    return train::batch_topk_safe_threshold(kept.data(), static_cast<int64_t>(kept.size()), want);
  }

  void set_admit_all(float tau) {
    std::vector<float> admit(L_, tau);
    admit_.upload(admit.data(), L_);
  }

  // The threshold encode's counting pass: pre > 0 (and > admit_[j] when ADMIT) per row into
  // h_count_; returns the batch's total.
  int64_t threshold_count(int rows, bool admit) {
    SAEKIT_LAUNCH(cuda::encode_threshold_f32_kernel, train_grid((rows + cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK - 1) / cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK),
                  32 * cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK, stream_, static_cast<const float*>(xp_.get()), static_cast<const float*>(W_enc_.get()),
                  static_cast<const float*>(b_enc_.get()), static_cast<const float*>(nullptr), admit ? static_cast<const float*>(admit_.get()) : static_cast<const float*>(nullptr),
                  0, rows, static_cast<int>(d_), static_cast<int>(L_), static_cast<const uint32_t*>(nullptr), count_.get(), static_cast<int32_t*>(nullptr),
                  static_cast<float*>(nullptr));
    h_count_.resize(rows);
    count_.download(h_count_.data(), rows);
    int64_t total = 0;
    for (int32_t c : h_count_) total += c;
    return total;
  }

  // Its filling pass, after threshold_count with the same ADMIT: CSR at OFFSETS on the device,
  // into the main selection's idx_/vals_ (INTO_MAIN) or the candidates' buffers, and to OUT.
  void threshold_fill(int rows, bool admit, DeviceBuffer<uint32_t>& offsets, bool into_main, SparseCodes* out) {
    out->indptr.assign(rows + 1, 0);
    for (int n = 0; n < rows; ++n) out->indptr[n + 1] = out->indptr[n] + static_cast<uint32_t>(h_count_[n]);
    const int64_t nnz = out->indptr[rows];
    if (nnz > INT32_MAX) throw Error("CUDA trainer: " + std::to_string(nnz) + " admitted entries in one step exceed 2^31; use a smaller batch");
    offsets.upload(out->indptr.data(), rows + 1);
    if (into_main) reserve_slots(nnz, 0);
    DeviceBuffer<int32_t>& idx = into_main ? idx_ : cand_idx_;
    DeviceBuffer<float>& vals = into_main ? vals_ : cand_vals_;
    idx.resize(std::max<int64_t>(1, nnz));
    vals.resize(std::max<int64_t>(1, nnz));
    SAEKIT_LAUNCH(cuda::encode_threshold_f32_kernel, train_grid((rows + cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK - 1) / cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK),
                  32 * cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK, stream_, static_cast<const float*>(xp_.get()), static_cast<const float*>(W_enc_.get()),
                  static_cast<const float*>(b_enc_.get()), static_cast<const float*>(nullptr), admit ? static_cast<const float*>(admit_.get()) : static_cast<const float*>(nullptr),
                  0, rows, static_cast<int>(d_), static_cast<int>(L_), static_cast<const uint32_t*>(offsets.get()), static_cast<int32_t*>(nullptr), idx.get(), vals.get());
    out->indices.resize(nnz);
    out->values.resize(nnz);
    idx.download(out->indices.data(), nnz);
    vals.download(out->values.data(), nnz);
  }

  // sel_ (chosen on the host) becomes the main selection on the device, CSR, with room for AuxK.
  void upload_selection(int64_t B) {
    const int64_t nnz = static_cast<int64_t>(sel_.indices.size());
    reserve_slots(nnz, uses_k() ? B * spec_.k_aux : 0);
    idx_.upload(sel_.indices.data(), nnz);
    vals_.upload(sel_.values.data(), nnz);
    main_off_.upload(sel_.indptr.data(), B + 1);
    main_slots_ = nnz;
  }

  // jumprelu: dL/dlog_threshold over the window (its dot products on the device) into
  // g_logth_ (and h_glogth_ for the norm); returns the L0 penalty.
  double threshold_gradient(int64_t B, const TrainStepOptions& o) {
    const int64_t m = window_.size();
    std::vector<float> df(m);
    if (m > 0) {
      win_row_.upload(window_.row.data(), m);
      win_lat_.upload(window_.latent.data(), m);
      win_df_.resize(m);
      SAEKIT_LAUNCH(cuda::train_pair_dots_kernel, train_grid(m), kTrainThreads, stream_, static_cast<const float*>(U_.get()), static_cast<const float*>(W_dec_.get()),
                    static_cast<const int32_t*>(win_row_.get()), static_cast<const int32_t*>(win_lat_.get()), static_cast<int>(m), static_cast<int>(d_), win_df_.get());
      win_df_.download(df.data(), m);
    }
    h_glogth_.resize(L_);
    train::jump_threshold_grad(window_, df.data(), theta_.data(), o.bandwidth, o.l0_coeff, B, L_, h_glogth_.data());
    g_logth_.upload(h_glogth_.data(), L_);
    return o.l0_coeff * static_cast<double>(sel_.indices.size()) / B;
  }

  static void to_csr(int64_t B, int64_t kslots, const std::vector<int32_t>& count, const std::vector<int32_t>& idx, std::vector<uint32_t>* indptr,
                     std::vector<int32_t>* indices) {
    indptr->assign(B + 1, 0);
    indices->clear();
    for (int64_t n = 0; n < B; ++n) {
      for (int32_t p = 0; p < count[n]; ++p) indices->push_back(idx[n * kslots + p]);
      (*indptr)[n + 1] = static_cast<uint32_t>(indices->size());
    }
  }

  // Counting sort by latent; within a latent the main selection's entries (rows ascending),
  // then AuxK's (rows ascending): the fixed summation order of the per-latent kernel. An entry's
  // slot: topk's row * k + position, a CSR selection's position; AuxK's follow main_slots_.
  void build_entries(int64_t B) {
    std::vector<int32_t> off(L_ + 1, 0);
    for (int32_t j : sel_.indices) ++off[j + 1];
    for (int32_t j : aux_indices_) ++off[j + 1];
    for (int64_t j = 0; j < L_; ++j) off[j + 1] += off[j];
    const size_t total = static_cast<size_t>(off[L_]);
    h_urow_.resize(total);
    h_xrow_.resize(total);
    h_slot_.resize(total);
    std::vector<int32_t> cursor(off.begin(), off.end() - 1);
    for (int64_t n = 0; n < B; ++n)
      for (uint32_t q = sel_.indptr[n]; q < sel_.indptr[n + 1]; ++q) {
        const int32_t at = cursor[sel_.indices[q]]++;
        h_urow_[at] = static_cast<int32_t>(n);
        h_xrow_[at] = static_cast<int32_t>(n);
        h_slot_[at] = static_cast<int32_t>(kslots_ > 0 ? n * kslots_ + (q - sel_.indptr[n]) : q);
      }
    for (int64_t n = 0; n < B; ++n)
      for (uint32_t q = aux_indptr_[n]; q < aux_indptr_[n + 1]; ++q) {
        const int32_t at = cursor[aux_indices_[q]]++;
        h_urow_[at] = static_cast<int32_t>(B + n);
        h_xrow_[at] = static_cast<int32_t>(n);
        h_slot_[at] = static_cast<int32_t>(main_slots_ + n * aux_k_ + (q - aux_indptr_[n]));
      }
    offsets_.upload(off.data(), off.size());
    ent_urow_.upload(h_urow_.data(), total);
    ent_xrow_.upload(h_xrow_.data(), total);
    ent_slot_.upload(h_slot_.data(), total);
  }

  void update_firing(int64_t B) {
    std::vector<uint8_t> fired(L_, 0);
    for (int32_t j : sel_.indices) {
      fires_[j] += 1.0;
      fired[j] = 1;
    }
    for (int64_t j = 0; j < L_; ++j) since_fired_[j] = fired[j] ? 0.0 : since_fired_[j] + static_cast<double>(B);
  }

  TrainSpec spec_;
  TrainPhases phases_;
  int64_t d_ = 0, L_ = 0;
  int64_t kslots_ = 0;  // topk: k slots per row; 0: the main selection is CSR (main_off_)
  cudaStream_t stream_ = nullptr;  // the legacy default stream: kernels and cudaMemcpy in order
  DeviceBuffer<float> W_enc_, b_enc_, W_dec_, b_dec_, logth_;  // W_enc [d_in, d_sae] (SAELens), W_dec [d_sae, d_in]
  DeviceBuffer<float> mW_enc_, vW_enc_, gW_enc_, gWt_, mW_dec_, vW_dec_, gW_dec_, mb_enc_, vb_enc_, gb_enc_, mb_dec_, vb_dec_, gb_dec_, m_logth_, v_logth_, g_logth_;
  DeviceBuffer<double> sq_, total_, col_mean_, err2_, aux_err2_, dev2_;
  DeviceBuffer<float> x_, xs_, xp_, E_, U_, vals_, dpre_;
  DeviceBuffer<int32_t> idx_, aux_idx_, count_, aux_count_, offsets_, dead_dev_, ent_urow_, ent_xrow_, ent_slot_;
  DeviceBuffer<uint32_t> main_off_, cand_off_;  // CSR row offsets: the main selection's, the candidates'
  DeviceBuffer<int32_t> cand_idx_, win_row_, win_lat_;
  DeviceBuffer<float> cand_vals_, admit_, dec_norm_dev_, dpre_add_, win_df_;
  PinnedBuffer<float> staging_;  // x on its way to x_ (upload_input)
  int64_t capacity_ = 0;
  int64_t main_slots_ = 0;  // this step's main-selection slots (AuxK's follow)
  int64_t aux_k_ = 0;       // this step's AuxK slots per row (0: no AuxK)
  double batch_threshold_ = 0;  // batchtopk: EMA of each batch's smallest selected value
  float hint_ = 0;              // batchtopk: the previous step's cut (speed only)
  float batch_cut_ = 0;         // batchtopk: this step's cut
  std::vector<float> theta_, dec_norm_, h_glogth_;
  train::JumpWindow window_;
  SparseCodes sel_, cand_;  // the main selection (host CSR; values for the threshold architectures), batchtopk's candidates
  std::vector<double> fires_, since_fired_;
  std::vector<int32_t> dead_, h_count_, h_idx_, h_aux_count_, h_aux_idx_, h_urow_, h_xrow_, h_slot_;
  std::vector<double> h_err2_, h_dev2_;
  std::vector<uint32_t> aux_indptr_;
  std::vector<int32_t> aux_indices_;
};

/**
 * The CUDA trainer's self-test, which gates device 'auto' for training as the model's gates
 * inference (cuda_backend.cu): every architecture, 3 steps from one random state at a small,
 * awkward shape (19 rows, d_in 33, d_sae 101, k 7, AuxK over 5 dead latents), against the CPU
 * trainer: selections identical, gradients within 1e-4 of each tensor's scale, weights within
 * 1e-2 lr (the emulated tests' tolerances, emu/train_emu_test.cpp). MAKE(spec, init) builds the
 * trainer under test. Returns "" when it agrees, else the architecture and what differed.
 */
template <class MakeTrainer>
std::string trainer_self_test(MakeTrainer make) {
  const int B = 19, d = 33, L = 101;
  std::mt19937 rng(20261208u);
  std::normal_distribution<float> nd(0.f, 1.f);
  auto randn = [&](size_t n, float sigma) {
    std::vector<float> v(n);
    for (auto& x : v) x = sigma * nd(rng);
    return v;
  };
  for (TrainArch arch : {TrainArch::TopK, TrainArch::BatchTopK, TrainArch::Standard, TrainArch::JumpReLU}) {
    const std::string name = train_arch_name(arch);
    try {
      std::vector<float> W_dec = randn(static_cast<size_t>(L) * d, 1.f), W_enc(W_dec.size());
      for (int j = 0; j < L; ++j) {
        double s = 0;
        for (int c = 0; c < d; ++c) s += double{W_dec[j * d + c]} * W_dec[j * d + c];
        for (int c = 0; c < d; ++c) W_dec[j * d + c] = static_cast<float>(W_dec[j * d + c] / std::sqrt(s)), W_enc[static_cast<size_t>(c) * L + j] = W_dec[j * d + c];
      }
      const auto b_enc = randn(L, 0.05f), b_dec = randn(d, 0.1f);
      auto logth = randn(L, 0.3f);
      for (auto& v : logth) v += std::log(0.3f);
      TrainSpec spec;
      spec.d_in = d, spec.d_sae = L, spec.k = 7, spec.k_aux = 16, spec.arch = arch;
      TrainParamsView init;
      init.W_enc = W_enc.data(), init.b_enc = b_enc.data(), init.W_dec = W_dec.data(), init.b_dec = b_dec.data(), init.log_threshold = logth.data();
      std::unique_ptr<BackendTrainer> ref = cpu_backend().trainer(spec, init), dev = make(spec, init);
      std::vector<double> since(L, 0.0);
      for (int q = 0; q < 5; ++q) since[(q * 7 + 3) % L] = 1e9;
      ref->set_state("since_fired", since.data());
      dev->set_state("since_fired", since.data());
      TrainStepOptions o;
      o.lr = 1e-3, o.aux_coeff = 1.0 / 32, o.dead_tokens = 1e6;
      if (arch == TrainArch::Standard) o.l1_coeff = 0.5;
      if (arch == TrainArch::JumpReLU) o.l0_coeff = 0.05, o.bandwidth = 0.2;
      for (int s = 1; s <= 3; ++s) {
        const auto x = randn(static_cast<size_t>(B) * d, 1.f);
        o.t = s;
        ref->step(x.data(), nullptr, B, o);
        dev->step(x.data(), nullptr, B, o);
        for (bool aux : {false, true}) {
          std::vector<uint32_t> pa, pb;
          std::vector<int32_t> ia, ib;
          ref->last_selection(&pa, &ia, aux);
          dev->last_selection(&pb, &ib, aux);
          if (pa != pb || ia != ib) return name + ": step " + std::to_string(s) + ": the " + (aux ? "AuxK" : "main") + " selection differs from the CPU trainer's";
        }
        for (const char* t : {"W_enc", "b_enc", "W_dec", "b_dec", "log_threshold"}) {
          const int64_t n = ref->state_size(t);
          std::vector<float> pa(n), pb(n), ga(n), gb(n);
          ref->get_state(t, pa.data()), dev->get_state(t, pb.data());
          ref->get_state(std::string("grad.") + t, ga.data()), dev->get_state(std::string("grad.") + t, gb.data());
          double scale = 0, gerr = 0, perr = 0;
          for (int64_t i = 0; i < n; ++i) {
            scale = std::max(scale, std::fabs(double{ga[i]}));
            gerr = std::max(gerr, std::fabs(double{ga[i]} - gb[i]));
            perr = std::max(perr, std::fabs(double{pa[i]} - pb[i]) / o.lr);
          }
          if (!(gerr <= 1e-4 * scale) || !(perr <= 1e-2))
            return name + ": step " + std::to_string(s) + ": " + t + " differs from the CPU trainer's (gradient " + std::to_string(gerr / (scale + 1e-30)) +
                   " of its scale, weights " + std::to_string(perr) + " lr)";
        }
      }
    } catch (const std::exception& e) {
      return name + ": " + e.what();
    }
  }
  return "";
}

}  // namespace
}  // namespace saekit
