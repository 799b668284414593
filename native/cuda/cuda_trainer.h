// The CUDA backend's trainer (issue 20): whole optimizer steps of a TopK SAE on the device,
// behind the BackendTrainer interface. A header, like cuda_model.h, so the same host code is
// compiled by nvcc into the addon (cuda_backend.cu) and by g++ against the CPU emulation
// (emu/train_emu_test.cpp), where CI runs it against the CPU trainer.
//
// The math is the CPU trainer's (native/cpu/cpu_trainer.cpp, header comment). One step:
//   upload x -> prep (xs = s x, x' = xs - b_dec) -> column means (FVU) -> exact fp32 top-k
//   encode (kernels/encode_topk.cuh, the inference baseline kernel) -> residuals, g = 2e/B,
//   dL/dpre per entry -> [AuxK: top-k_aux over dead latents, h, dL/dpre] -> download the
//   selections (B x (k + k_aux) ints) -> host counting sort of the entries by latent ->
//   per-latent gradients with the decoder projection -> db_dec -> dW_enc by transposing the
//   latent-major gradient -> gradient norm -> fused Adam (one kernel, every parameter) ->
//   decoder renorm; the firing counters are updated on the host from the downloaded selection.
// Everything runs on the legacy default stream, in order; the one host round trip per step is
// the selection (also what last_selection() and the dead-latent counters need).
//
// Deterministic: no atomics anywhere (kernels/train_topk.cuh says where each sum is owned), the
// entry order is fixed by the sort (latent, then main before AuxK, then row), top-k ties go to
// the lower latent, so the same seed and data give the same weights run to run on one card.
//
// Scope: TopK SAEs (d_out = d_in). BatchTopK, Standard, JumpReLU, transcoders, skip
// transcoders and matryoshka are refused by name: train them with device 'cpu'.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cuda_model.h"
#include "kernels/train_topk.cuh"

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

inline const char* train_arch_name(TrainArch a) {
  switch (a) {
    case TrainArch::TopK: return "topk";
    case TrainArch::BatchTopK: return "batchtopk";
    case TrainArch::Standard: return "standard";
    case TrainArch::JumpReLU: return "jumprelu";
  }
  return "?";
}

class CudaTrainer final : public BackendTrainer {
 public:
  CudaTrainer(const TrainSpec& spec, const TrainParamsView& init) : spec_(spec) {
    const std::string cpu = "; train it with device 'cpu'";
    if (spec.arch != TrainArch::TopK) throw Error(std::string("CUDA trainer: architecture '") + train_arch_name(spec.arch) + "' has no CUDA training kernels yet (topk only)" + cpu);
    if (spec.transcoder || spec.skip) throw Error(std::string("CUDA trainer: ") + (spec.skip ? "skip transcoders" : "transcoders") + " have no CUDA training kernels yet" + cpu);
    if (!spec.matryoshka_widths.empty()) throw Error("CUDA trainer: matryoshka widths have no CUDA training kernels yet" + cpu);
    if (spec.out_width() != spec.d_in) throw Error("an SAE's output width must equal d_in (set transcoder for d_out != d_in)");
    if (spec.d_in < 1 || spec.d_sae < 1 || spec.d_in > INT32_MAX / 2 || spec.d_sae > INT32_MAX / 2) throw Error("CUDA trainer: d_in and d_sae must be in [1, 2^30]");
    if (spec.k < 1 || spec.k > spec.d_sae || spec.k > cuda::ENCODE_TOPK_MAX_K)
      throw Error("CUDA trainer: top-k with k = " + std::to_string(spec.k) + " is not supported (1 <= k <= min(d_sae, " + std::to_string(cuda::ENCODE_TOPK_MAX_K) + "))");
    if (spec.k_aux < 0 || spec.k_aux > spec.d_sae) throw Error("CUDA trainer: k_aux must be in [0, d_sae]");
    d_ = spec.d_in;
    L_ = spec.d_sae;
    SAEKIT_CUDA_CHECK(cudaSetDevice(0));
    const size_t dl = static_cast<size_t>(d_ * L_);
    W_enc_.upload(init.W_enc, dl);
    b_enc_.upload(init.b_enc, L_);
    W_dec_.upload(init.W_dec, dl);
    b_dec_.upload(init.b_dec, d_);
    for (DeviceBuffer<float>* b : {&mW_enc_, &vW_enc_, &gW_enc_, &gWt_, &mW_dec_, &vW_dec_, &gW_dec_}) zero(*b, dl);
    for (DeviceBuffer<float>* b : {&mb_enc_, &vb_enc_, &gb_enc_}) zero(*b, L_);
    for (DeviceBuffer<float>* b : {&mb_dec_, &vb_dec_, &gb_dec_}) zero(*b, d_);
    fires_.assign(L_, 0.0);
    since_fired_.assign(L_, 0.0);
    sq_.resize(L_ + d_);
    total_.resize(1);
    offsets_.resize(L_ + 1);
    dead_dev_.resize(L_);
    col_mean_.resize(d_);
  }

  int64_t bytes() const override {
    return static_cast<int64_t>(W_enc_.bytes() + b_enc_.bytes() + W_dec_.bytes() + b_dec_.bytes() + mW_enc_.bytes() + vW_enc_.bytes() + gW_enc_.bytes() +
                                gWt_.bytes() + mW_dec_.bytes() + vW_dec_.bytes() + gW_dec_.bytes() + 3 * mb_enc_.bytes() + 3 * mb_dec_.bytes() + xs_.bytes() +
                                xp_.bytes() + x_.bytes() + E_.bytes() + U_.bytes() + vals_.bytes() + dpre_.bytes() + idx_.bytes() + aux_idx_.bytes() +
                                ent_urow_.bytes() * 3 + sq_.bytes());
  }

  TrainStepStats step(const float* x, const float* y, int64_t B, const TrainStepOptions& o) override {
    (void)y;
    if (B < 1) throw Error("a training step needs at least one row");
    if (B > INT32_MAX / std::max<int64_t>(1, spec_.k + spec_.k_aux) || B * d_ > (int64_t{1} << 40)) throw Error("CUDA trainer: batch too large");
    check_finite(x, B, o.input_scale);
    const int d = static_cast<int>(d_), L = static_cast<int>(L_), k = static_cast<int>(spec_.k), rows = static_cast<int>(B);
    reserve(B);
    x_.upload(x, static_cast<size_t>(B * d_));
    SAEKIT_LAUNCH(cuda::train_prep_kernel, train_grid((B * d_ + kTrainEltThreads - 1) / kTrainEltThreads, 4096), kTrainEltThreads, stream_, static_cast<const float*>(x_.get()),
                  static_cast<const float*>(b_dec_.get()), B, d, o.input_scale, xs_.get(), xp_.get());
    SAEKIT_LAUNCH(cuda::train_col_mean_kernel, train_grid((d_ + kTrainThreads - 1) / kTrainThreads), kTrainThreads, stream_, static_cast<const float*>(xs_.get()), rows, d, col_mean_.get());

    // Forward: the exact fp32 top-k (ascending latent order, zeros dropped), then the residuals.
    SAEKIT_LAUNCH(cuda::encode_topk_f32_kernel, train_grid((B + cuda::ENCODE_WARPS_PER_BLOCK - 1) / cuda::ENCODE_WARPS_PER_BLOCK), 32 * cuda::ENCODE_WARPS_PER_BLOCK,
                  stream_, static_cast<const float*>(xp_.get()), static_cast<const float*>(W_enc_.get()), static_cast<const float*>(b_enc_.get()),
                  static_cast<const float*>(b_dec_.get()), 0, rows, d, L, k, idx_.get(), vals_.get(), count_.get());
    const float g_scale = 2.0f / static_cast<float>(B);
    SAEKIT_LAUNCH(cuda::train_residual_kernel, train_grid(B), kTrainThreads, stream_, static_cast<const float*>(b_dec_.get()), int64_t{0},
                  static_cast<const float*>(xs_.get()), static_cast<const double*>(col_mean_.get()), static_cast<const float*>(W_dec_.get()),
                  static_cast<const int32_t*>(idx_.get()), static_cast<const float*>(vals_.get()), static_cast<const int32_t*>(count_.get()), k, rows, d, g_scale,
                  E_.get(), U_.get(), err2_.get(), dev2_.get(), dpre_.get());

    // AuxK over the latents dead before this step (the host keeps the counters).
    TrainStepStats st;
    dead_.clear();
    if (o.dead_tokens > 0)
      for (int64_t j = 0; j < L_; ++j)
        if (since_fired_[j] >= o.dead_tokens) dead_.push_back(static_cast<int32_t>(j));
    st.dead = static_cast<int64_t>(dead_.size());
    const int64_t D = st.dead;
    aux_k_ = 0;
    double aux_scale = 0;
    if (!dead_.empty() && o.aux_coeff > 0 && spec_.k_aux > 0) {
      aux_k_ = std::min<int64_t>(spec_.k_aux, D);
      const bool all = aux_k_ == D;
      if (!all && aux_k_ > cuda::TRAIN_AUX_MAX_K)
        throw Error("CUDA trainer: k_aux = " + std::to_string(aux_k_) + " below the dead count " + std::to_string(D) + " needs a list longer than " +
                    std::to_string(cuda::TRAIN_AUX_MAX_K) + "; lower k_aux or train with device 'cpu'");
      aux_scale = std::min(static_cast<double>(D) / spec_.k_aux, 1.0);
      dead_dev_.upload(dead_.data(), dead_.size());
      float* aux_vals = vals_.get() + B * spec_.k;
      float* aux_dpre = dpre_.get() + B * spec_.k;
      SAEKIT_LAUNCH(cuda::train_aux_topk_kernel, train_grid(B), 32, stream_, static_cast<const float*>(xp_.get()), static_cast<const float*>(W_enc_.get()),
                    static_cast<const float*>(b_enc_.get()), static_cast<const int32_t*>(dead_dev_.get()), static_cast<int>(D), rows, d, L,
                    static_cast<int>(aux_k_), all ? 1 : 0, aux_idx_.get(), aux_vals, aux_count_.get());
      const float h_scale = static_cast<float>(2.0 * o.aux_coeff * aux_scale / B);
      SAEKIT_LAUNCH(cuda::train_residual_kernel, train_grid(B), kTrainThreads, stream_, static_cast<const float*>(E_.get()), static_cast<int64_t>(d_),
                    static_cast<const float*>(nullptr), static_cast<const double*>(nullptr), static_cast<const float*>(W_dec_.get()),
                    static_cast<const int32_t*>(aux_idx_.get()), static_cast<const float*>(aux_vals), static_cast<const int32_t*>(aux_count_.get()),
                    static_cast<int>(aux_k_), rows, d, h_scale, static_cast<float*>(nullptr), U_.get() + B * d_, aux_err2_.get(),
                    static_cast<double*>(nullptr), aux_dpre);
    }
    SAEKIT_CUDA_CHECK(cudaGetLastError());

    // The selections and the per-row sums come back: stats, CSR, the latent-sorted entry list.
    h_count_.resize(B);
    h_idx_.resize(B * spec_.k);
    h_err2_.resize(B);
    h_dev2_.resize(B);
    count_.download(h_count_.data(), B);
    idx_.download(h_idx_.data(), B * spec_.k);
    err2_.download(h_err2_.data(), B);
    dev2_.download(h_dev2_.data(), B);
    double sum_err = 0, sum_dev = 0;
    for (int64_t n = 0; n < B; ++n) sum_err += h_err2_[n], sum_dev += h_dev2_[n];
    to_csr(B, spec_.k, h_count_, h_idx_, &sel_indptr_, &sel_indices_);
    st.mse = sum_err / B;
    st.fvu = sum_dev > 0 ? sum_err / sum_dev : 0.0;
    st.l0 = static_cast<double>(sel_indices_.size()) / B;
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
    build_entries(B);

    // Backward: per-latent rows (and the decoder projection), db_dec, dW_enc's layout.
    SAEKIT_LAUNCH(cuda::train_latent_grads_kernel, train_grid(L_), kTrainThreads, stream_, static_cast<const int32_t*>(offsets_.get()),
                  static_cast<const int32_t*>(ent_urow_.get()), static_cast<const int32_t*>(ent_xrow_.get()), static_cast<const int32_t*>(ent_slot_.get()),
                  static_cast<const float*>(vals_.get()), static_cast<const float*>(dpre_.get()), static_cast<const float*>(U_.get()),
                  static_cast<const float*>(xp_.get()), static_cast<const float*>(W_dec_.get()), L, d, 1, gW_dec_.get(), gWt_.get(), gb_enc_.get(), sq_.get());
    SAEKIT_LAUNCH(cuda::train_bdec_grad_kernel, train_grid(d_), kTrainThreads, stream_, static_cast<const float*>(U_.get()), rows,
                  static_cast<const float*>(gb_enc_.get()), static_cast<const float*>(W_enc_.get()), L, d, gb_dec_.get(), sq_.get() + L_);
    const int64_t tiles = ((L_ + 31) / 32) * ((d_ + 31) / 32);
    SAEKIT_LAUNCH(cuda::train_transpose_kernel, train_grid(tiles), dim3(32, kTrainEltThreads / 32), stream_, static_cast<const float*>(gWt_.get()), L, d, gW_enc_.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());

    if (o.apply) {
      SAEKIT_LAUNCH(cuda::train_sum_kernel, 1, kTrainThreads * 2, stream_, static_cast<const double*>(sq_.get()), L_ + d_, total_.get());
      double total = 0;
      total_.download(&total, 1);
      const double norm = std::sqrt(total);
      st.grad_norm = norm;
      const float gscale = o.clip > 0 && norm > o.clip ? static_cast<float>(o.clip / norm) : 1.0f;
      cuda::AdamSegments segs{};
      segs.s[0] = {W_enc_.get(), mW_enc_.get(), vW_enc_.get(), gW_enc_.get(), d_ * L_};
      segs.s[1] = {W_dec_.get(), mW_dec_.get(), vW_dec_.get(), gW_dec_.get(), d_ * L_};
      segs.s[2] = {b_enc_.get(), mb_enc_.get(), vb_enc_.get(), gb_enc_.get(), L_};
      segs.s[3] = {b_dec_.get(), mb_dec_.get(), vb_dec_.get(), gb_dec_.get(), d_};
      segs.count = 4;
      const float inv_c1 = static_cast<float>(1.0 / (1.0 - std::pow(o.beta1, static_cast<double>(o.t))));
      const float inv_c2 = static_cast<float>(1.0 / (1.0 - std::pow(o.beta2, static_cast<double>(o.t))));
      SAEKIT_LAUNCH(cuda::train_adam_kernel, train_grid((d_ * L_ + kTrainEltThreads - 1) / kTrainEltThreads, kAdamBlocks), kTrainEltThreads, stream_, segs, gscale, static_cast<float>(o.lr),
                    static_cast<float>(o.beta1), static_cast<float>(o.beta2), inv_c1, inv_c2, static_cast<float>(o.eps));
      SAEKIT_LAUNCH(cuda::train_renorm_kernel, train_grid(L_), kTrainThreads, stream_, W_dec_.get(), L, d);
      SAEKIT_CUDA_CHECK(cudaGetLastError());
      update_firing(B);
    }
    return st;
  }

  int64_t state_size(const std::string& name) const override {
    const std::string base = param_of(name);
    if (base == "W_enc" || base == "W_dec") return d_ * L_;
    if (base == "b_enc" || name == "fires" || name == "since_fired") return L_;
    if (base == "b_dec") return d_;
    if (name == "batch_threshold") return 1;
    throw Error("unknown trainer state '" + name + "'");
  }

  bool state_is_f64(const std::string& name) const override { return name == "fires" || name == "since_fired" || name == "batch_threshold"; }

  void get_state(const std::string& name, void* out) const override {
    const int64_t n = state_size(name);
    if (name == "batch_threshold") {
      *static_cast<double*>(out) = 0.0;  // topk has no batch threshold
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
    if (name == "batch_threshold") return;  // accepted and ignored: topk has none
    if (name.rfind("grad.", 0) == 0) throw Error("trainer state '" + name + "' is read-only");
    if (name == "fires" || name == "since_fired") {
      std::memcpy((name == "fires" ? fires_ : since_fired_).data(), in, sizeof(double) * n);
      return;
    }
    const_cast<DeviceBuffer<float>*>(tensor(name))->upload(static_cast<const float*>(in), n);
  }

  void last_selection(std::vector<uint32_t>* indptr, std::vector<int32_t>* indices, bool aux) const override {
    *indptr = aux ? aux_indptr_ : sel_indptr_;
    *indices = aux ? aux_indices_ : sel_indices_;
  }

 private:
  // The fused Adam kernel's grid: enough blocks to fill a GPU, grid-stride beyond.
  static constexpr int64_t kAdamBlocks = 4096;

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
                        {"b_dec", &b_dec_, &mb_dec_, &vb_dec_, &gb_dec_}};
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

  // The CPU trainer's check and message: a non-finite s x fails the step before anything changes.
  void check_finite(const float* x, int64_t B, float s) const {
    for (int64_t n = 0; n < B; ++n) {
      const float* xr = x + n * d_;
      float probe = 0.0f;
      for (int64_t i = 0; i < d_; ++i) {
        const float v = s * xr[i];
        probe += v - v;
      }
      if (probe != 0.0f) {
        int64_t col = 0;
        while (col < d_ && std::isfinite(s * xr[col])) ++col;
        throw InputError("training batch row " + std::to_string(n) + " has a non-finite value at column " + std::to_string(col), n, col);
      }
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
    const size_t slots = static_cast<size_t>(B * (spec_.k + spec_.k_aux));
    vals_.resize(slots);
    dpre_.resize(slots);
    idx_.resize(static_cast<size_t>(B * spec_.k));
    aux_idx_.resize(static_cast<size_t>(B * std::max<int64_t>(1, spec_.k_aux)));
    count_.resize(B);
    aux_count_.resize(B);
    err2_.resize(B);
    aux_err2_.resize(B);
    dev2_.resize(B);
    ent_urow_.resize(slots);
    ent_xrow_.resize(slots);
    ent_slot_.resize(slots);
    capacity_ = B;
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
  // then AuxK's (rows ascending): the fixed summation order of the per-latent kernel.
  void build_entries(int64_t B) {
    std::vector<int32_t> off(L_ + 1, 0);
    for (int32_t j : sel_indices_) ++off[j + 1];
    for (int32_t j : aux_indices_) ++off[j + 1];
    for (int64_t j = 0; j < L_; ++j) off[j + 1] += off[j];
    const size_t total = static_cast<size_t>(off[L_]);
    h_urow_.resize(total);
    h_xrow_.resize(total);
    h_slot_.resize(total);
    std::vector<int32_t> cursor(off.begin(), off.end() - 1);
    for (int64_t n = 0; n < B; ++n)
      for (int32_t p = 0; p < h_count_[n]; ++p) {
        const int32_t j = h_idx_[n * spec_.k + p];
        const int32_t at = cursor[j]++;
        h_urow_[at] = static_cast<int32_t>(n);
        h_xrow_[at] = static_cast<int32_t>(n);
        h_slot_[at] = static_cast<int32_t>(n * spec_.k + p);
      }
    if (aux_k_ > 0)
      for (int64_t n = 0; n < B; ++n)
        for (int32_t p = 0; p < h_aux_count_[n]; ++p) {
          const int32_t j = h_aux_idx_[n * aux_k_ + p];
          const int32_t at = cursor[j]++;
          h_urow_[at] = static_cast<int32_t>(B + n);
          h_xrow_[at] = static_cast<int32_t>(n);
          h_slot_[at] = static_cast<int32_t>(B * spec_.k + n * aux_k_ + p);
        }
    offsets_.upload(off.data(), off.size());
    ent_urow_.upload(h_urow_.data(), total);
    ent_xrow_.upload(h_xrow_.data(), total);
    ent_slot_.upload(h_slot_.data(), total);
  }

  void update_firing(int64_t B) {
    (void)B;
    std::vector<uint8_t> fired(L_, 0);
    for (int32_t j : sel_indices_) {
      fires_[j] += 1.0;
      fired[j] = 1;
    }
    for (int64_t j = 0; j < L_; ++j) since_fired_[j] = fired[j] ? 0.0 : since_fired_[j] + static_cast<double>(B);
  }

  TrainSpec spec_;
  int64_t d_ = 0, L_ = 0;
  cudaStream_t stream_ = nullptr;  // the legacy default stream: kernels and cudaMemcpy in order
  DeviceBuffer<float> W_enc_, b_enc_, W_dec_, b_dec_;  // W_enc [d_in, d_sae] (SAELens), W_dec [d_sae, d_in]
  DeviceBuffer<float> mW_enc_, vW_enc_, gW_enc_, gWt_, mW_dec_, vW_dec_, gW_dec_, mb_enc_, vb_enc_, gb_enc_, mb_dec_, vb_dec_, gb_dec_;
  DeviceBuffer<double> sq_, total_, col_mean_, err2_, aux_err2_, dev2_;
  DeviceBuffer<float> x_, xs_, xp_, E_, U_, vals_, dpre_;
  DeviceBuffer<int32_t> idx_, aux_idx_, count_, aux_count_, offsets_, dead_dev_, ent_urow_, ent_xrow_, ent_slot_;
  int64_t capacity_ = 0;
  int64_t aux_k_ = 0;  // this step's AuxK slots per row (0: no AuxK)
  std::vector<double> fires_, since_fired_;
  std::vector<int32_t> dead_, h_count_, h_idx_, h_aux_count_, h_aux_idx_, h_urow_, h_xrow_, h_slot_;
  std::vector<double> h_err2_, h_dev2_;
  std::vector<uint32_t> sel_indptr_, aux_indptr_;
  std::vector<int32_t> sel_indices_, aux_indices_;
};

}  // namespace
}  // namespace saekit
