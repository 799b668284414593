// The CPU trainer: whole optimizer steps of a TopK SAE, with a sparse backward.
//
// The math (test/helpers/trainReference.ts is the float64 mirror the tests hold this to):
//   xs = s * x                       (s: input_scale, SAELens' expected_average_only_in)
//   x' = xs - b_dec;  pre = x' W_enc + b_enc
//   S_n = top-k of pre_n (ties to the lower index), positive entries only;  f = pre on S_n
//   x_hat = sum_{j in S_n} f_nj W_dec[j] + b_dec;  e = x_hat - xs
//   L_mse = (1/B) sum_n ||e_n||^2
//   AuxK (Gao et al. 2024) over the latents dead before this step (D of them):
//     A_n = top-min(k_aux, D) of pre_n among dead latents, positive only; a = pre on A_n
//     ehat_n = sum_{j in A_n} a_nj W_dec[j];  r_n = -e_n (a constant: no gradient through it)
//     L_aux = coeff * min(D / k_aux, 1) * (1/B) sum_n ||ehat_n - r_n||^2
// With the selections fixed the loss is smooth, and only selected latents carry gradient:
//   g_n = 2 e_n / B,  h_n = 2 coeff scale (ehat_n - r_n) / B
//   dW_dec[j] = sum f_nj g_n + sum a_nj h_n;  dpre_nj = (g_n or h_n) . W_dec[j]
//   db_enc[j] = sum dpre_nj;  dW_enc[:, j] = sum dpre_nj x'_n
//   db_dec = sum_n g_n - sum_j db_enc[j] W_enc[:, j]       (b_dec enters x_hat and x')
// So the backward costs O(B k d_in) for the main selection, not O(B d_sae d_in): the forward's
// fused encode dominates. AuxK's selection is dense in [B, dead] and runs as matrix products
// over the dead latents (gemm.h).
//   batchtopk: S = the k*B largest positive pre over the whole batch (ties: lower row, then lower
//     latent); the rest is as topk. The threshold saved for inference (as jumprelu) is a running
//     average (EMA, 0.99) of each batch's smallest selected value.
//   standard: S_n = every positive pre; L += lambda (1/B) sum f_nj ||W_dec[j]||, so
//     dpre_nj += lambda ||W_dec[j]|| / B and dW_dec[j] += lambda (sum_n f_nj) W_dec[j] / (B ||W_dec[j]||);
//     no AuxK, and the decoder rows stay free (no renormalization, no parallel removal).
//   jumprelu: theta_j = exp(log_threshold_j); S_n = {j : pre_nj > theta_j, pre_nj > 0};
//     L += lambda (1/B) sum_n |S_n|. Straight-through estimators with a rectangle kernel
//     K(u) = [|u| < 1/2] of bandwidth eps give the threshold its gradient:
//       dL/dtheta_j = sum_n K((pre_nj - theta_j)/eps) (-theta_j/eps (g_n . W_dec[j]) - lambda/(B eps))
//     (the first term is the reconstruction's pseudo-derivative, the second the L0 penalty's),
//     and dL/dlog_threshold_j = theta_j dL/dtheta_j. Entries in the kernel's window are found by
//     admitting pre > max(theta - eps/2, 0) in the encode. No AuxK; decoder rows unit norm.
//   transcoders (spec.transcoder): the input is not centered (x' = xs: b_dec lives in the
//     output space, d_out wide), the target is t = s_out y (a second tensor, not xs), so
//     e = x_hat - t and db_dec = sum_n g_n (no encoder term). Skip transcoders add xs W_skip
//     to x_hat (W_skip [d_in, d_out] here, SAELens stores its transpose), so dW_skip = xs^T G.
//   matryoshka (batchtopk with prefix widths w_1 < ... < w_M = d_sae, SAELens's
//     MatryoshkaBatchTopKTrainingSAE): every inner prefix m picks its own batch top-k S^m among
//     latents < w_m, reconstructs x_hat^m = sum_{S^m} f W_dec[j] + b_dec (+ skip), and adds
//     (1/B) sum_n ||x_hat^m_n - t_n||^2 to the loss. Each (level, row, latent) entry carries its
//     level's upstream g^m_n, so the backward is the same sparse accumulation over more entries.
// Then: the decoder-row gradient loses its component along the row, the global norm is
// clipped, Adam (bias-corrected) updates every parameter, decoder rows return to unit norm.
//
// Layout: the encoder is kept latent-major (Wt = W_enc^T, [d_sae, d_in]) so a latent's encoder
// and decoder gradients are both contiguous rows. Gradients are accumulated per latent over a
// latent-sorted (CSC) list of the step's entries, so threads never share an output row and the
// sums run in a fixed order: results do not depend on the thread count (resume is bit-exact).
#include <immintrin.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "../backend.h"
#include "../error.h"
#include "../thread_pool.h"
#include "../train_select.h"
#include "aligned.h"
#include "cpu_model.h"
#include "gemm.h"
#include "isa.h"

namespace saekit::cpu {
namespace {

// Small vector helpers, cloned per ISA by the compiler (no -march here: see CMakeLists).
// Written with explicit lanes so the reductions vectorize without -ffast-math.
#define SAEKIT_CLONES __attribute__((target_clones("avx512f", "avx2,fma", "default")))

SAEKIT_CLONES float dot(const float* a, const float* b, int64_t n) {
  float acc[16] = {};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) acc[l] += a[i + l] * b[i + l];
  float s = 0;
  for (; i < n; ++i) s += a[i] * b[i];
  for (int l = 0; l < 16; ++l) s += acc[l];
  return s;
}

SAEKIT_CLONES void axpy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

SAEKIT_CLONES void scaled_copy(float alpha, const float* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i];
}

// One Adam update of n parameters; grad may be null (an untouched row: gradient 0). Two
// branch-free loops so each vectorizes (sqrt needs -fno-math-errno: see CMakeLists).
SAEKIT_CLONES void adam(float* p, float* m, float* v, const float* grad, float gscale, int64_t n, float lr, float b1,
                        float b2, float inv_c1, float inv_c2, float eps) {
  if (grad != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      const float g = grad[i] * gscale;
      const float mi = b1 * m[i] + (1.0f - b1) * g;
      const float vi = b2 * v[i] + (1.0f - b2) * g * g;
      m[i] = mi;
      v[i] = vi;
      p[i] -= lr * (mi * inv_c1) / (std::sqrt(vi * inv_c2) + eps);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const float mi = b1 * m[i];
      const float vi = b2 * v[i];
      m[i] = mi;
      v[i] = vi;
      p[i] -= lr * (mi * inv_c1) / (std::sqrt(vi * inv_c2) + eps);
    }
  }
}

// Sum of squares in double, in eight independent lanes: a single scalar accumulator made this
// a latency-bound chain (~4 cycles an element) and the largest part of the Adam pass.
SAEKIT_CLONES double sumsq(const float* a, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) acc[l] += static_cast<double>(a[i + l]) * a[i + l];
  double s = 0;
  for (; i < n; ++i) s += static_cast<double>(a[i]) * a[i];
  for (int l = 0; l < 8; ++l) s += acc[l];
  return s;
}

// sum (a - b)^2 with b in double, in eight lanes (see sumsq).
SAEKIT_CLONES double sumsq_diff(const float* a, const double* b, int64_t n) {
  double acc[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; ++l) {
      const double t = a[i + l] - b[i + l];
      acc[l] += t * t;
    }
  double s = 0;
  for (; i < n; ++i) s += (a[i] - b[i]) * (a[i] - b[i]);
  for (int l = 0; l < 8; ++l) s += acc[l];
  return s;
}

void parallel_fill(float* p, int64_t n, float value) {
  constexpr int64_t kChunk = 1 << 16;
  parallel_for((n + kChunk - 1) / kChunk, [&](int64_t t, int) {
    std::fill(p + t * kChunk, p + std::min(n, (t + 1) * kChunk), value);
  });
}

// SAEKIT_TRAIN_PROFILE=1 prints each step's phase times to stderr (bench/NOTES.md uses it).
class PhaseTimer {
 public:
  PhaseTimer() : on_(std::getenv("SAEKIT_TRAIN_PROFILE") != nullptr), last_(now()) {}
  void mark(const char* phase) {
    if (!on_) return;
    const double t = now();
    std::fprintf(stderr, "%s %.1f ms  ", phase, (t - last_) * 1e3);
    last_ = t;
  }
  ~PhaseTimer() {
    if (on_) std::fprintf(stderr, "\n");
  }

 private:
  static double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
  bool on_;
  double last_;
};

// A grow-only scratch buffer, kept between steps.
struct Scratch {
  AlignedFloats buf;
  int64_t capacity = 0;
  float* get(int64_t n) {
    if (n > capacity) {
      buf = aligned_floats(n);
      capacity = n;
    }
    return buf.get();
  }
};

// One (row, latent) pair that carries gradient this step, sorted by latent.
struct Entry {
  int32_t urow;  // the row of U holding this entry's upstream g (level * B + row)
  int32_t xrow;  // the x' row (the batch row)
  float value;   // f
  float dpre;    // dL/dpre
};

constexpr int kGradCols = 128;

// One latent's gradient-row chunk over its entries, accumulated in 16 zmm registers:
// gd = sum value * U[urow] (wu <= kGradCols columns of the d_out-wide rows), ge = sum dpre *
// XP[xrow] (wx columns of the d_in-wide rows); U, XP, gd, ge are offset to the chunk. A width
// <= 0 (past the end of the narrower side) masks that side off.
__attribute__((target("avx512f"))) void latent_columns_avx512(const Entry* en, int64_t n, const float* U, int64_t du,
                                                              int wu, const float* XP, int64_t dx, int wx, float* gd,
                                                              float* ge) {
#define SAEKIT_GRAD_LANES(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#define LANE_MASK(w, k) \
  ((w) >= 16 * ((k) + 1) ? 0xFFFF : (w) <= 16 * (k) ? 0 : static_cast<__mmask16>((1u << ((w) - 16 * (k))) - 1))
#define MASK(k)                                                      \
  const __mmask16 mu##k = static_cast<__mmask16>(LANE_MASK(wu, k)); \
  const __mmask16 mx##k = static_cast<__mmask16>(LANE_MASK(wx, k));
  SAEKIT_GRAD_LANES(MASK)
#undef MASK
#undef LANE_MASK
#define DECL(k) __m512 d##k = _mm512_setzero_ps(), e##k = _mm512_setzero_ps();
  SAEKIT_GRAD_LANES(DECL)
#undef DECL
  for (int64_t q = 0; q < n; ++q) {
    const float* u = U + int64_t{en[q].urow} * du;
    const float* x = XP + int64_t{en[q].xrow} * dx;
    const __m512 v = _mm512_set1_ps(en[q].value);
    const __m512 g = _mm512_set1_ps(en[q].dpre);
#define STEP(k)                                                               \
  d##k = _mm512_fmadd_ps(v, _mm512_maskz_loadu_ps(mu##k, u + 16 * (k)), d##k); \
  e##k = _mm512_fmadd_ps(g, _mm512_maskz_loadu_ps(mx##k, x + 16 * (k)), e##k);
    SAEKIT_GRAD_LANES(STEP)
#undef STEP
  }
#define STORE(k)                                        \
  _mm512_mask_storeu_ps(gd + 16 * (k), mu##k, d##k); \
  _mm512_mask_storeu_ps(ge + 16 * (k), mx##k, e##k);
  SAEKIT_GRAD_LANES(STORE)
#undef STORE
#undef SAEKIT_GRAD_LANES
}

class CpuTrainer final : public BackendTrainer {
 public:
  CpuTrainer(const TrainSpec& spec, const TrainParamsView& init) : spec_(spec) {
    const int64_t d = spec.d_in, L = spec.d_sae, od = spec.out_width();
    if (!spec.transcoder && od != d) throw Error("an SAE's output width must equal d_in (set transcoder for d_out != d_in)");
    if (spec.skip && !spec.transcoder) throw Error("a skip term needs a transcoder");
    levels_ = spec.matryoshka_widths.empty() ? std::vector<int64_t>{L} : spec.matryoshka_widths;
    if (!spec.matryoshka_widths.empty()) {
      if (spec.arch != TrainArch::BatchTopK) throw Error("matryoshka widths need the batchtopk architecture");
      for (size_t m = 0; m < levels_.size(); ++m)
        if (levels_[m] < 1 || levels_[m] > L || (m > 0 && levels_[m] <= levels_[m - 1]))
          throw Error("matryoshka widths must increase strictly within [1, d_sae]");
      if (levels_.back() != L) throw Error("the last matryoshka width must be d_sae");
    }
    level_hint_.assign(levels_.size(), 0.0f);
    inner_codes_.resize(levels_.size() - 1);
    dpre_inner_.resize(levels_.size() - 1);
    for (AlignedFloats* a : {&Wt_, &mWt_, &vWt_, &gWt_}) *a = aligned_floats(L * d);
    for (AlignedFloats* a : {&W_dec_, &mWdec_, &vWdec_, &gWdec_}) *a = aligned_floats(L * od);
    for (AlignedFloats* a : {&b_enc_, &m_benc_, &v_benc_, &g_benc_, &logth_, &m_logth_, &v_logth_, &g_logth_})
      *a = aligned_floats(L);
    for (AlignedFloats* a : {&b_dec_, &m_bdec_, &v_bdec_, &g_bdec_}) *a = aligned_floats(od);
    for (AlignedFloats* a : {&mWt_, &vWt_, &gWt_}) parallel_fill(a->get(), L * d, 0.0f);
    for (AlignedFloats* a : {&mWdec_, &vWdec_, &gWdec_}) parallel_fill(a->get(), L * od, 0.0f);
    for (AlignedFloats* a : {&m_benc_, &v_benc_, &g_benc_, &logth_, &m_logth_, &v_logth_, &g_logth_})
      std::fill(a->get(), a->get() + L, 0.0f);
    if (init.log_threshold != nullptr) std::memcpy(logth_.get(), init.log_threshold, sizeof(float) * L);
    for (AlignedFloats* a : {&m_bdec_, &v_bdec_, &g_bdec_}) std::fill(a->get(), a->get() + od, 0.0f);
    if (spec.skip) {
      for (AlignedFloats* a : {&Ws_, &mWs_, &vWs_, &gWs_}) {
        *a = aligned_floats(d * od);
        parallel_fill(a->get(), d * od, 0.0f);
      }
      if (init.W_skip != nullptr) transpose(init.W_skip, od, d, Ws_.get());  // [d_out, d_in] -> [d_in, d_out]
    }
    fires_.assign(L, 0.0);
    since_fired_.assign(L, 0.0);
    touched_.assign(L, 0);
    set_enc_from_saelens(init.W_enc);
    std::memcpy(W_dec_.get(), init.W_dec, sizeof(float) * L * od);
    std::memcpy(b_enc_.get(), init.b_enc, sizeof(float) * L);
    std::memcpy(b_dec_.get(), init.b_dec, sizeof(float) * od);

    SaeSpec es;
    es.d_in = d;
    es.d_sae = L;
    es.k = spec.k;
    es.activation = Activation::TopK;
    es.apply_b_dec_to_input = false;  // the trainer hands the encoder x' itself
    SaeWeightsView wv;
    wv.W_enc = Wt_.get();
    wv.enc_transposed = true;
    wv.b_enc = b_enc_.get();
    // topk: the forward may run a screen (the measured kernel choice of the inference encode,
    // exact: the same codes as fp32); its copy is rebuilt after every optimizer step
    // (set_encoder). The other architectures switch the selection rule per step and keep fp32.
    encoder_ = std::make_unique<CpuModel>(es, wv, /*screening=*/spec.arch == TrainArch::TopK);
    if (spec.arch == TrainArch::Standard) encoder_->set_selection(Activation::Standard, 0, 0.0f);
    if (spec.arch == TrainArch::JumpReLU) encoder_->set_selection(Activation::JumpReLU, 0, 0.0f);
  }

  int64_t bytes() const override {
    const int64_t L = spec_.d_sae, d = spec_.d_in, od = spec_.out_width();
    return sizeof(float) * (4 * L * d + 4 * L * od + 8 * L + 4 * od + (spec_.skip ? 4 * d * od : 0)) +
           sizeof(double) * 2 * L + encoder_->bytes();
  }

  TrainStepStats step(const float* x, const float* y, int64_t B, const TrainStepOptions& o) override {
    const int64_t d = spec_.d_in, L = spec_.d_sae, od = spec_.out_width();
    if (spec_.transcoder && y == nullptr) throw Error("a transcoder's training step needs its target rows");
    PhaseTimer timer;
    reserve_batch(B);
    prepare_input(x, y, B, o.input_scale, o.output_scale);
    timer.mark("input");

    TrainStepStats st;
    if (spec_.arch == TrainArch::BatchTopK) {
      levels_select(B);
    } else if (spec_.arch == TrainArch::JumpReLU) {
      jump_select(B, o.bandwidth);
    } else {
      encoder_->encode(XP_.get(), B, &codes_);
    }
    timer.mark("encode");

    // The skip term xs W_skip, shared by every level's reconstruction.
    if (spec_.skip) sgemm(B, od, d, X_.get(), d, false, Ws_.get(), od, S_.get(), od, false);
    // Reconstruction, the upstream gradient g_n = 2 e_n / B (rows 0..B-1 of U), and dL/dpre =
    // g_n . W_dec[j] of the row's entries while their W_dec rows are still in cache.
    const float* T = target();
    std::vector<double> dev2(B);
    std::vector<double> mean(od, 0.0);
    constexpr int64_t kMeanCols = 64;
    parallel_for((od + kMeanCols - 1) / kMeanCols, [&](int64_t t, int) {
      for (int64_t n = 0; n < B; ++n)
        for (int64_t i = t * kMeanCols; i < std::min(od, (t + 1) * kMeanCols); ++i) mean[i] += T[n * od + i];
    });
    for (double& m : mean) m /= static_cast<double>(B);
    parallel_for(B, [&](int64_t n, int) { dev2[n] = sumsq_diff(T + n * od, mean.data(), od); });
    const double sum_err = residuals(B, codes_, E_.get(), U_.get(), &dpre_main_);
    double sum_dev = 0;
    for (int64_t n = 0; n < B; ++n) sum_dev += dev2[n];
    st.mse = sum_err / B;
    st.fvu = sum_dev > 0 ? sum_err / sum_dev : 0.0;
    st.l0 = static_cast<double>(codes_.indices.size()) / B;
    // Matryoshka: each inner prefix's residual and upstream rows (U rows (1 + m) B ..).
    for (size_t m = 0; m + 1 < levels_.size(); ++m)
      st.inner_mse += residuals(B, inner_codes_[m], Einner_.get(), U_.get() + (1 + m) * B * od, &dpre_inner_[m]) / B;
    timer.mark("recon");

    // AuxK over the latents dead before this step.
    dead_.clear();
    if (o.dead_tokens > 0)
      for (int64_t j = 0; j < L; ++j)
        if (since_fired_[j] >= o.dead_tokens) dead_.push_back(static_cast<int32_t>(j));
    st.dead = static_cast<int64_t>(dead_.size());
    aux_codes_.indptr.assign(B + 1, 0);
    aux_codes_.indices.clear();
    aux_codes_.values.clear();
    aux_local_.clear();
    const bool auxk = spec_.arch == TrainArch::TopK || spec_.arch == TrainArch::BatchTopK;
    if (auxk && !dead_.empty() && o.aux_coeff > 0 && spec_.k_aux > 0)
      st.aux_loss = aux_forward(B, o, timer);
    timer.mark("auxk");

    if (spec_.arch == TrainArch::JumpReLU) st.l1_loss = threshold_gradient(B, o);

    // standard: the L1 penalty's share of dL/dpre.
    const bool l1 = spec_.arch == TrainArch::Standard && o.l1_coeff > 0;
    if (l1) {
      dec_norm_.resize(L);
      parallel_for(L, [&](int64_t j, int) { dec_norm_[j] = static_cast<float>(std::sqrt(sumsq(W_dec_.get() + j * od, od))); });
      std::vector<double> row_l1(B, 0.0);
      parallel_for(B, [&](int64_t n, int) {
        double s = 0;
        for (uint32_t p = codes_.indptr[n]; p < codes_.indptr[n + 1]; ++p) s += double{codes_.values[p]} * dec_norm_[codes_.indices[p]];
        row_l1[n] = s;
      });
      double total = 0;
      for (double v : row_l1) total += v;
      st.l1_loss = o.l1_coeff * total / B;
    }
    const float l1_scale = l1 ? static_cast<float>(o.l1_coeff / B) : 0.0f;
    if (l1)
      parallel_for(B, [&](int64_t n, int) {
        for (uint32_t p = codes_.indptr[n]; p < codes_.indptr[n + 1]; ++p) dpre_main_[p] += l1_scale * dec_norm_[codes_.indices[p]];
      });
    timer.mark("dpre");
    build_entries(B);
    timer.mark("entries");
    accumulate_gradients(B, l1_scale);
    timer.mark("grads");
    if (!aux_local_.empty()) aux_backward(B);
    timer.mark("auxk backward");
    bias_dec_gradient(B);
    if (spec_.skip) skip_gradient(B);

    if (o.apply) {
      st.grad_norm = optimizer_step(o);
      timer.mark("adam");
      update_firing(B);
      if (spec_.arch == TrainArch::BatchTopK && batch_cut_ > 0)
        batch_threshold_ = batch_threshold_ > 0 ? 0.99 * batch_threshold_ + 0.01 * batch_cut_ : batch_cut_;
      encoder_->set_encoder(Wt_.get(), b_enc_.get());
      timer.mark("repack");
    }
    return st;
  }

  int64_t state_size(const std::string& name) const override {
    const std::string base = param_of(name);
    if (base == "W_enc") return spec_.d_in * spec_.d_sae;
    if (base == "W_dec") return spec_.out_width() * spec_.d_sae;
    if (base == "W_skip" && spec_.skip) return spec_.d_in * spec_.out_width();
    if (base == "b_enc" || base == "log_threshold" || name == "fires" || name == "since_fired") return spec_.d_sae;
    if (base == "b_dec") return spec_.out_width();
    if (name == "batch_threshold") return 1;
    throw Error("unknown trainer state '" + name + "'");
  }

  bool state_is_f64(const std::string& name) const override {
    return name == "fires" || name == "since_fired" || name == "batch_threshold";
  }

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
    const float* src = tensor(name);
    float* dst = static_cast<float*>(out);
    const bool grad = name.rfind("grad.", 0) == 0;
    const std::string base = param_of(name);
    if (base == "W_enc") {
      transpose(src, spec_.d_sae, spec_.d_in, dst);  // Wt -> W_enc [d_in, d_sae]
    } else if (base == "W_skip") {
      transpose(src, spec_.d_in, spec_.out_width(), dst);  // [d_in, d_out] -> SAELens [d_out, d_in]
    } else {
      std::memcpy(dst, src, sizeof(float) * n);
    }
    // Untouched latents' gradient rows are stale buffers: they are zero by definition.
    if (grad && (base == "W_dec" || base == "b_enc")) {
      for (int64_t j = 0; j < spec_.d_sae; ++j) {
        if (touched_[j]) continue;
        if (base == "W_dec") std::fill(dst + j * spec_.out_width(), dst + (j + 1) * spec_.out_width(), 0.0f);
        else dst[j] = 0.0f;
      }
    }
    if (grad && base == "W_enc")
      for (int64_t i = 0; i < spec_.d_in; ++i)
        for (int64_t j = 0; j < spec_.d_sae; ++j)
          if (!touched_[j]) dst[i * spec_.d_sae + j] = 0.0f;
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
    const float* src = static_cast<const float*>(in);
    float* dst = const_cast<float*>(tensor(name));
    if (param_of(name) == "W_enc") transpose(src, spec_.d_in, spec_.d_sae, dst);
    else if (param_of(name) == "W_skip") transpose(src, spec_.out_width(), spec_.d_in, dst);
    else std::memcpy(dst, src, sizeof(float) * n);
    if (name == "W_enc" || name == "b_enc") encoder_->set_encoder(Wt_.get(), b_enc_.get());
  }

  void last_selection(std::vector<uint32_t>* indptr, std::vector<int32_t>* indices, bool aux) const override {
    const SparseCodes& c = aux ? aux_codes_ : codes_;
    *indptr = c.indptr;
    *indices = c.indices;
  }

 private:
  static std::string param_of(const std::string& name) {
    for (const char* prefix : {"adam_m.", "adam_v.", "grad."})
      if (name.rfind(prefix, 0) == 0) return name.substr(std::strlen(prefix));
    return name;
  }

  const float* tensor(const std::string& name) const {
    struct Row {
      const char* param;
      const AlignedFloats *p, *m, *v, *g;
    };
    const Row rows[] = {{"W_enc", &Wt_, &mWt_, &vWt_, &gWt_},
                        {"W_dec", &W_dec_, &mWdec_, &vWdec_, &gWdec_},
                        {"b_enc", &b_enc_, &m_benc_, &v_benc_, &g_benc_},
                        {"b_dec", &b_dec_, &m_bdec_, &v_bdec_, &g_bdec_},
                        {"log_threshold", &logth_, &m_logth_, &v_logth_, &g_logth_},
                        {"W_skip", &Ws_, &mWs_, &vWs_, &gWs_}};
    const std::string base = param_of(name);
    for (const Row& r : rows) {
      if (base != r.param) continue;
      if (name.rfind("adam_m.", 0) == 0) return r.m->get();
      if (name.rfind("adam_v.", 0) == 0) return r.v->get();
      if (name.rfind("grad.", 0) == 0) return r.g->get();
      return r.p->get();
    }
    throw Error("unknown trainer state '" + name + "'");
  }

  static void transpose(const float* src, int64_t rows, int64_t cols, float* dst) {
    constexpr int64_t kTile = 32;
    const int64_t row_tiles = (rows + kTile - 1) / kTile;
    parallel_for(row_tiles, [&](int64_t t, int) {
      const int64_t r0 = t * kTile, r1 = std::min(rows, r0 + kTile);
      for (int64_t c0 = 0; c0 < cols; c0 += kTile)
        for (int64_t r = r0; r < r1; ++r)
          for (int64_t c = c0; c < std::min(cols, c0 + kTile); ++c) dst[c * rows + r] = src[r * cols + c];
    });
  }

  void set_enc_from_saelens(const float* W_enc) { transpose(W_enc, spec_.d_in, spec_.d_sae, Wt_.get()); }

  void reserve_batch(int64_t B) {
    if (B <= batch_capacity_) return;
    const int64_t d = spec_.d_in, od = spec_.out_width();
    X_ = aligned_floats(B * d);
    XP_ = aligned_floats(B * d);
    if (spec_.transcoder) Y_ = aligned_floats(B * od);
    if (spec_.skip) S_ = aligned_floats(B * od);
    if (levels_.size() > 1) Einner_ = aligned_floats(B * od);
    E_ = aligned_floats(B * od);
    // Upstream rows: one block of B per level (the full width first), then AuxK's block.
    U_ = aligned_floats((static_cast<int64_t>(levels_.size()) + 1) * B * od);
    batch_capacity_ = B;
  }

  // What the prediction is compared with: xs for an SAE, s_out y for a transcoder.
  const float* target() const { return spec_.transcoder ? Y_.get() : X_.get(); }

  // Rows 0 .. AuxK's block of U.
  float* aux_rows(int64_t B) const { return U_.get() + static_cast<int64_t>(levels_.size()) * B * spec_.out_width(); }

  // X = s x and X' = X - b_dec (an SAE) or X itself (a transcoder: b_dec is in the output
  // space); a transcoder's target Y = s_out y. A non-finite value fails the step before
  // anything changes, naming the first bad row whatever the thread count.
  void prepare_input(const float* x, const float* y, int64_t B, float s, float s_out) {
    const int64_t d = spec_.d_in, od = spec_.out_width();
    const bool centered = !spec_.transcoder;
    std::vector<uint8_t> bad(B, 0), bad_y(B, 0);
    parallel_for(B, [&](int64_t n, int) {
      const float* xr = x + n * d;
      float* xs = X_.get() + n * d;
      float* xp = XP_.get() + n * d;
      float probe = 0.0f;
      for (int64_t i = 0; i < d; ++i) {
        xs[i] = s * xr[i];
        xp[i] = centered ? xs[i] - b_dec_[i] : xs[i];
        probe += xs[i] - xs[i];  // NaN for inf/NaN (and for finite values that overflow)
      }
      bad[n] = probe != 0.0f;
      if (y != nullptr) {
        const float* yr = y + n * od;
        float* ys = Y_.get() + n * od;
        float py = 0.0f;
        for (int64_t i = 0; i < od; ++i) {
          ys[i] = s_out * yr[i];
          py += ys[i] - ys[i];
        }
        bad_y[n] = py != 0.0f;
      }
    });
    for (int64_t n = 0; n < B; ++n) {
      if (bad[n]) {
        int64_t col = 0;
        while (col < d && std::isfinite(s * x[n * d + col])) ++col;
        throw InputError("training batch row " + std::to_string(n) + " has a non-finite value at column " +
                             std::to_string(col),
                         n, col);
      }
      if (bad_y[n]) {
        int64_t col = 0;
        while (col < od && std::isfinite(s_out * y[n * od + col])) ++col;
        throw InputError("training target row " + std::to_string(n) + " has a non-finite value at column " +
                             std::to_string(col),
                         n, col);
      }
    }
  }

  // One level's residuals e_n = sum_{c_n} f W_dec[j] + b_dec (+ skip_n) - t_n (into E), the
  // upstream rows g_n = 2 e_n / B (into G) and dL/dpre = g_n . W_dec[j] of each entry (while
  // its W_dec row is in cache). Returns sum_n ||e_n||^2.
  double residuals(int64_t B, const SparseCodes& c, float* E, float* G, std::vector<float>* dpre) {
    const int64_t od = spec_.out_width();
    const float* T = target();
    const float g_scale = 2.0f / static_cast<float>(B);
    dpre->resize(c.indices.size());
    std::vector<double> err2(B);
    parallel_for(B, [&](int64_t n, int) {
      float* e = E + n * od;
      std::memcpy(e, b_dec_.get(), sizeof(float) * od);
      if (spec_.skip) axpy(1.0f, S_.get() + n * od, e, od);
      for (uint32_t p = c.indptr[n]; p < c.indptr[n + 1]; ++p) axpy(c.values[p], W_dec_.get() + int64_t{c.indices[p]} * od, e, od);
      axpy(-1.0f, T + n * od, e, od);
      err2[n] = sumsq(e, od);
      float* g = G + n * od;
      scaled_copy(g_scale, e, g, od);
      for (uint32_t p = c.indptr[n]; p < c.indptr[n + 1]; ++p) (*dpre)[p] = dot(g, W_dec_.get() + int64_t{c.indices[p]} * od, od);
    });
    double total = 0;
    for (double v : err2) total += v;
    return total;
  }

  // JumpReLU: one encode admitting pre > max(theta - eps/2, 0) finds both the active entries
  // (pre > theta, kept in codes_) and the estimators' window (|pre - theta| < eps/2, listed).
  void jump_select(int64_t B, double eps) {
    const int64_t L = spec_.d_sae;
    theta_.resize(L);
    std::vector<float> admit(L);
    for (int64_t j = 0; j < L; ++j) {
      theta_[j] = std::exp(logth_[j]);
      admit[j] = theta_[j] - static_cast<float>(eps / 2);
    }
    encoder_->set_admit(admit.data());
    encoder_->encode(XP_.get(), B, &codes_);
    train::jump_split(&codes_, theta_.data(), static_cast<float>(eps / 2), B, &window_);
  }

  // dL/dlog_threshold (see the top of the file) and the L0 penalty. The window is small (an
  // eps-wide band around each threshold): one dot product per entry, summed per latent in row
  // order.
  double threshold_gradient(int64_t B, const TrainStepOptions& o) {
    const int64_t od = spec_.out_width(), L = spec_.d_sae;
    const int64_t m = window_.size();
    std::vector<float> df(m);
    parallel_for(m, [&](int64_t q, int) {
      df[q] = dot(U_.get() + int64_t{window_.row[q]} * od, W_dec_.get() + int64_t{window_.latent[q]} * od, od);
    });
    train::jump_threshold_grad(window_, df.data(), theta_.data(), o.bandwidth, o.l0_coeff, B, L, g_logth_.get());
    return o.l0_coeff * static_cast<double>(codes_.indices.size()) / B;
  }

  // Batch top-k: the k * B largest positive pre-activations of the whole batch, for every
  // matryoshka level among its prefix of latents (one level, the whole dictionary, without
  // matryoshka). One encode with per-latent admission thresholds admits the candidates of all
  // levels: latent j belongs to every level m with w_m > j, so it is admitted above the lowest
  // of those levels' thresholds. A level's selection is exact whenever at least k * B of its
  // prefix's values pass its own threshold (then its k*B-th largest is among them). The
  // thresholds are 0.9 x each level's previous cut; without one, or when too few pass, a
  // per-row top-k within the prefix gives a safe one: its k * B values are a subset of the
  // prefix, so their minimum is <= the cut.
  void levels_select(int64_t B) {
    const int64_t want = spec_.k * B, L = spec_.d_sae;
    const size_t M = levels_.size();
    std::vector<float> tau(M);
    for (size_t m = 0; m < M; ++m) tau[m] = level_hint_[m] > 0 ? 0.9f * level_hint_[m] : safe_threshold(B, m);
    auto admit_all = [&] {
      std::vector<float> admit(L);
      float lowest = std::numeric_limits<float>::infinity();
      for (size_t m = M; m-- > 0;) {
        lowest = std::min(lowest, tau[m]);
        for (int64_t j = m > 0 ? levels_[m - 1] : 0; j < levels_[m]; ++j) admit[j] = lowest;
      }
      encoder_->set_selection(Activation::JumpReLU, 0, 0.0f);
      encoder_->set_admit(admit.data());
      encoder_->encode(XP_.get(), B, &candidates_);
    };
    admit_all();
    bool again = false;
    for (size_t m = 0; m < M; ++m) {
      if (tau[m] <= 0) continue;  // every positive value of the prefix is admitted
      int64_t passing = 0;
      for (size_t p = 0; p < candidates_.indices.size(); ++p)
        passing += candidates_.indices[p] < levels_[m] && candidates_.values[p] > tau[m];
      if (passing < want) {
        tau[m] = safe_threshold(B, m);
        again = true;
      }
    }
    if (again) admit_all();
    for (size_t m = 0; m < M; ++m) {
      SparseCodes& out = m + 1 == M ? codes_ : inner_codes_[m];
      level_hint_[m] = train::batch_topk_cut(candidates_, B, levels_[m], want, &out);
    }
    batch_cut_ = level_hint_[M - 1];
  }

  // A threshold below level m's cut: nextafter toward 0 of the smallest of a per-row top-k
  // within its prefix (0 when the prefix has fewer than k * B positive values).
  float safe_threshold(int64_t B, size_t m) {
    const int64_t want = spec_.k * B, L = spec_.d_sae;
    encoder_->set_selection(Activation::TopK, spec_.k, 0.0f);
    if (levels_[m] < L) {
      std::vector<float> mask(L, 0.0f);
      std::fill(mask.begin() + levels_[m], mask.end(), std::numeric_limits<float>::infinity());
      encoder_->set_admit(mask.data());
    }
    encoder_->encode(XP_.get(), B, &scratch_codes_);
    return train::batch_topk_safe_threshold(scratch_codes_.values.data(), static_cast<int64_t>(scratch_codes_.values.size()), want);
  }

  // AuxK, forward. The dead latents' top-k_aux is a fused encode over a packed sub-SAE of the
  // dead latents only. Everything after is dense in [B, D]: with D <= k_aux every dead latent
  // with a positive pre-activation is selected in every row, and even at D = 6 k_aux a sixth
  // of the matrix is filled. So the reconstruction (and in aux_backward the gradients) are
  // matrix products over chunks of dead latents, not per-entry gathers of 3 KB rows (those ran
  // at ~3 GB of gathers per step at 1% dead: bench/NOTES.md).
  // Fills AuxK's block of U (aux_rows) with h_n; returns L_aux.
  double aux_forward(int64_t B, const TrainStepOptions& o, PhaseTimer& timer) {
    const int64_t d = spec_.d_in, od = spec_.out_width();
    const int64_t D = static_cast<int64_t>(dead_.size());
    const int64_t k_eff = std::min(spec_.k_aux, D);
    const double scale = std::min(static_cast<double>(D) / spec_.k_aux, 1.0);
    dead_dec_ = aligned_floats(D * od);
    AlignedFloats w = aligned_floats(D * d);
    std::vector<float> b(D);
    parallel_for(D, [&](int64_t q, int) {
      std::memcpy(w.get() + q * d, Wt_.get() + int64_t{dead_[q]} * d, sizeof(float) * d);
      std::memcpy(dead_dec_.get() + q * od, W_dec_.get() + int64_t{dead_[q]} * od, sizeof(float) * od);
      b[q] = b_enc_[dead_[q]];
    });
    SaeSpec es;
    es.d_in = d;
    es.d_sae = D;
    es.k = k_eff;
    // k_aux >= D selects every positive value: the plain relu encode does that without a top-k.
    es.activation = k_eff == D ? Activation::Standard : Activation::TopK;
    es.apply_b_dec_to_input = false;
    SaeWeightsView wv;
    wv.W_enc = w.get();
    wv.enc_transposed = true;
    wv.b_enc = b.data();
    CpuModel sub(es, wv, /*screening=*/false);
    timer.mark("auxk pack");
    sub.encode(XP_.get(), B, &aux_codes_);
    timer.mark("auxk encode");
    aux_local_ = aux_codes_.indices;  // dead-list positions, for the dense chunks
    for (int32_t& j : aux_codes_.indices) j = dead_[j];

    // h = ehat - r = ehat + e, with ehat = A W_dec[dead] accumulated over chunks.
    float* H = aux_rows(B);
    std::memcpy(H, E_.get(), sizeof(float) * B * od);
    for (int64_t q0 = 0; q0 < D; q0 += aux_chunk(B)) {
      const int64_t dc = std::min(aux_chunk(B), D - q0);
      float* A = dense_aux(B, q0, dc);
      sgemm(B, od, dc, A, dc, false, dead_dec_.get() + q0 * od, od, H, od, true);
    }
    std::vector<double> loss(B);
    const float h_scale = static_cast<float>(2.0 * o.aux_coeff * scale / B);
    parallel_for(B, [&](int64_t n, int) {
      float* h = H + n * od;
      loss[n] = sumsq(h, od);
      for (int64_t i = 0; i < od; ++i) h[i] *= h_scale;
    });
    double total = 0;
    for (double v : loss) total += v;
    return o.aux_coeff * scale * total / B;
  }

  // Dead latents per dense chunk: [B, chunk] matrices of at most 8 M floats (32 MiB).
  static int64_t aux_chunk(int64_t B) { return std::max<int64_t>(16, (int64_t{8} << 20) / std::max<int64_t>(1, B)); }

  // The AuxK activations of dead latents [q0, q0 + dc) as a dense [B, dc] matrix in `buf`.
  float* dense_aux(int64_t B, int64_t q0, int64_t dc) {
    float* A = A_.get(B * dc);
    parallel_for(B, [&](int64_t n, int) {
      float* row = A + n * dc;
      std::fill(row, row + dc, 0.0f);
      for (uint32_t p = aux_codes_.indptr[n]; p < aux_codes_.indptr[n + 1]; ++p) {
        const int64_t q = aux_local_[p] - q0;
        if (q >= 0 && q < dc) row[q] = aux_codes_.values[p];
      }
    });
    return A;
  }

  // AuxK, backward, per chunk of dead latents (A: activations, H: upstream rows of U):
  //   dA = (H W_dec[dead]^T) masked to the selected entries     [B, dc]
  //   dW_dec[dead] += A^T H;  dWt[dead] += dA^T X';  db_enc[dead] += column sums of dA
  void aux_backward(int64_t B) {
    const int64_t d = spec_.d_in, od = spec_.out_width();
    const int64_t D = static_cast<int64_t>(dead_.size());
    const float* H = aux_rows(B);
    for (int64_t q0 = 0; q0 < D; q0 += aux_chunk(B)) {
      const int64_t dc = std::min(aux_chunk(B), D - q0);
      const float* A = dense_aux(B, q0, dc);
      float* decT = decT_.get(od * dc);
      for (int64_t q = 0; q < dc; ++q)
        for (int64_t i = 0; i < od; ++i) decT[i * dc + q] = dead_dec_[(q0 + q) * od + i];
      float* dA = dA_.get(B * dc);
      sgemm(B, dc, od, H, od, false, decT, dc, dA, dc, false);
      parallel_for(B, [&](int64_t n, int) {
        for (int64_t q = 0; q < dc; ++q)
          if (!(A[n * dc + q] > 0.0f)) dA[n * dc + q] = 0.0f;
      });
      float* gd = gtmp_.get(dc * (od + d));
      float* ge = gd + dc * od;
      sgemm(dc, od, B, A, dc, true, H, od, gd, od, false);
      sgemm(dc, d, B, dA, dc, true, XP_.get(), d, ge, d, false);
      parallel_for(dc, [&](int64_t q, int) {
        double gb = 0;
        for (int64_t n = 0; n < B; ++n) gb += dA[n * dc + q];
        const int64_t j = dead_[q0 + q];
        float* rd = gWdec_.get() + j * od;
        float* re = gWt_.get() + j * d;
        if (touched_[j]) {
          for (int64_t i = 0; i < od; ++i) rd[i] += gd[q * od + i];
          for (int64_t i = 0; i < d; ++i) re[i] += ge[q * d + i];
          g_benc_[j] += static_cast<float>(gb);
        } else {
          std::memcpy(rd, gd + q * od, sizeof(float) * od);
          std::memcpy(re, ge + q * d, sizeof(float) * d);
          g_benc_[j] = static_cast<float>(gb);
          touched_[j] = 1;
        }
      });
    }
  }

  // Counting sort of the main selection's entries by latent; within a latent, rows ascend: a
  // fixed summation order.
  // Matryoshka levels follow the full width's entries (level by level, rows ascending).
  void build_entries(int64_t B) {
    const int64_t L = spec_.d_sae;
    offsets_.assign(L + 1, 0);
    for (int32_t j : codes_.indices) ++offsets_[j + 1];
    for (const SparseCodes& c : inner_codes_)
      for (int32_t j : c.indices) ++offsets_[j + 1];
    for (int64_t j = 0; j < L; ++j) offsets_[j + 1] += offsets_[j];
    entries_.resize(offsets_[L]);
    std::vector<int64_t> cursor(offsets_.begin(), offsets_.end() - 1);
    auto add = [&](const SparseCodes& c, const std::vector<float>& dpre, int64_t level) {
      for (int64_t n = 0; n < B; ++n) {
        for (uint32_t p = c.indptr[n]; p < c.indptr[n + 1]; ++p)
          entries_[cursor[c.indices[p]]++] = {static_cast<int32_t>(level * B + n), static_cast<int32_t>(n), c.values[p], dpre[p]};
      }
    };
    add(codes_, dpre_main_, 0);
    for (size_t m = 0; m < inner_codes_.size(); ++m) add(inner_codes_[m], dpre_inner_[m], static_cast<int64_t>(m) + 1);
  }

  // Per-latent gradient rows from the latent-sorted entries:
  //   dW_dec[j] = sum_e value_e g_row(e),  dWt[j] = sum_e dpre_e x'_row(e),  db_enc[j] = sum_e dpre_e.
  // Columns go in chunks of kGradCols, the outer loop over all latents: a chunk of every
  // g and x' row (B x 1 KiB) stays in cache while the latents gather from it, and a latent's
  // two partial rows stay in registers (AVX-512) instead of being reloaded per entry.
  // l1_scale = lambda / B for standard (0 otherwise): adds the penalty's decoder-norm gradient.
  void accumulate_gradients(int64_t B, float l1_scale) {
    const int64_t d = spec_.d_in, L = spec_.d_sae, od = spec_.out_width();
    constexpr int64_t kLatentsPerTask = 64;
    const int64_t tasks = (L + kLatentsPerTask - 1) / kLatentsPerTask;
    fsum_.assign(L, 0.0);
    parallel_for(tasks, [&](int64_t t, int) {
      for (int64_t j = t * kLatentsPerTask; j < std::min(L, (t + 1) * kLatentsPerTask); ++j) {
        const int64_t e0 = offsets_[j], e1 = offsets_[j + 1];
        touched_[j] = e1 > e0;
        double gb = 0, fs = 0;
        for (int64_t e = e0; e < e1; ++e) gb += entries_[e].dpre, fs += entries_[e].value;
        g_benc_[j] = static_cast<float>(gb);
        fsum_[j] = fs;
      }
    });
    const bool avx512 = current_isa() == Isa::Avx512;
    // Columns of both sides at once up to the narrower width, then the wider side alone.
    for (int64_t c0 = 0; c0 < std::max(d, od); c0 += kGradCols) {
      const int wu = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(kGradCols, od - c0)));
      const int wx = static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(kGradCols, d - c0)));
      parallel_for(tasks, [&](int64_t t, int) {
        for (int64_t j = t * kLatentsPerTask; j < std::min(L, (t + 1) * kLatentsPerTask); ++j) {
          if (!touched_[j]) continue;
          const Entry* en = entries_.data() + offsets_[j];
          const int64_t n = offsets_[j + 1] - offsets_[j];
          float* gd = gWdec_.get() + j * od + c0;
          float* ge = gWt_.get() + j * d + c0;
          if (avx512) {
            latent_columns_avx512(en, n, U_.get() + c0, od, wu, XP_.get() + c0, d, wx, gd, ge);
          } else {
            std::fill(gd, gd + wu, 0.0f);
            std::fill(ge, ge + wx, 0.0f);
            for (int64_t e = 0; e < n; ++e) {
              if (wu > 0) axpy(en[e].value, U_.get() + int64_t{en[e].urow} * od + c0, gd, wu);
              if (wx > 0) axpy(en[e].dpre, XP_.get() + int64_t{en[e].xrow} * d + c0, ge, wx);
            }
          }
        }
      });
    }
    if (l1_scale != 0.0f)
      parallel_for(L, [&](int64_t j, int) {
        if (touched_[j] && dec_norm_[j] > 0)
          axpy(static_cast<float>(l1_scale * fsum_[j] / dec_norm_[j]), W_dec_.get() + j * od, gWdec_.get() + j * od, od);
      });
  }

  void bias_dec_gradient(int64_t B) {
    const int64_t d = spec_.out_width(), L = spec_.d_sae;
    const int64_t upstream_rows = static_cast<int64_t>(levels_.size()) * B;  // every level's g rows
    const bool centered = !spec_.transcoder;
    // db_dec = sum_n g_n - sum_j db_enc[j] Wt[j] (the second term only where b_dec centers the
    // input), by column chunks (fixed order per column).
    constexpr int64_t kCols = 16;
    parallel_for((d + kCols - 1) / kCols, [&](int64_t t, int) {
      const int64_t c0 = t * kCols, c1 = std::min(d, c0 + kCols);
      double acc[kCols] = {};
      for (int64_t n = 0; n < upstream_rows; ++n)
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] += U_[n * d + c];
      for (int64_t j = 0; j < L && centered; ++j) {
        if (!touched_[j]) continue;
        const float gb = g_benc_[j];
        for (int64_t c = c0; c < c1; ++c) acc[c - c0] -= static_cast<double>(gb) * Wt_[j * d + c];
      }
      for (int64_t c = c0; c < c1; ++c) g_bdec_[c] = static_cast<float>(acc[c - c0]);
    });
  }

  // dW_skip = xs^T (sum over levels of g): the skip term enters every level's prediction.
  void skip_gradient(int64_t B) {
    const int64_t d = spec_.d_in, od = spec_.out_width();
    const float* G = U_.get();
    if (levels_.size() > 1) {
      float* sum = Einner_.get();  // free again after the inner residuals
      std::memcpy(sum, U_.get(), sizeof(float) * B * od);
      for (size_t m = 1; m < levels_.size(); ++m) axpy(1.0f, U_.get() + m * B * od, sum, B * od);
      G = sum;
    }
    sgemm(d, od, B, X_.get(), d, true, G, od, gWs_.get(), od, false);
  }

  // Parallel-component removal, global-norm clip, Adam on every parameter, unit-norm decoder
  // rows. Returns the gradient norm before clipping.
  double optimizer_step(const TrainStepOptions& o) {
    const int64_t d = spec_.d_in, L = spec_.d_sae, od = spec_.out_width();
    const bool unit_decoder = spec_.arch != TrainArch::Standard;
    std::vector<double> row_sq(L, 0.0);
    parallel_for(L, [&](int64_t j, int) {
      if (!touched_[j]) return;
      float* g = gWdec_.get() + j * od;
      const float* w = W_dec_.get() + j * od;
      const float ww = dot(w, w, od);
      if (unit_decoder && ww > 0) axpy(-dot(g, w, od) / ww, w, g, od);
      row_sq[j] = sumsq(g, od) + sumsq(gWt_.get() + j * d, d) + static_cast<double>(g_benc_[j]) * g_benc_[j];
    });
    double total = sumsq(g_bdec_.get(), od);
    if (spec_.arch == TrainArch::JumpReLU) total += sumsq(g_logth_.get(), L);
    if (spec_.skip) total += sumsq(gWs_.get(), d * od);
    for (double v : row_sq) total += v;
    const double norm = std::sqrt(total);
    const float gscale = o.clip > 0 && norm > o.clip ? static_cast<float>(o.clip / norm) : 1.0f;

    const float lr = static_cast<float>(o.lr), b1 = static_cast<float>(o.beta1), b2 = static_cast<float>(o.beta2);
    const float eps = static_cast<float>(o.eps);
    const float inv_c1 = static_cast<float>(1.0 / (1.0 - std::pow(o.beta1, static_cast<double>(o.t))));
    const float inv_c2 = static_cast<float>(1.0 / (1.0 - std::pow(o.beta2, static_cast<double>(o.t))));
    constexpr int64_t kRowsPerTask = 16;
    parallel_for((L + kRowsPerTask - 1) / kRowsPerTask, [&](int64_t t, int) {
      for (int64_t j = t * kRowsPerTask; j < std::min(L, (t + 1) * kRowsPerTask); ++j) {
        const bool live = touched_[j];
        const int64_t off = j * d, doff = j * od;
        adam(Wt_.get() + off, mWt_.get() + off, vWt_.get() + off, live ? gWt_.get() + off : nullptr, gscale, d, lr, b1,
             b2, inv_c1, inv_c2, eps);
        float* w = W_dec_.get() + doff;
        adam(w, mWdec_.get() + doff, vWdec_.get() + doff, live ? gWdec_.get() + doff : nullptr, gscale, od, lr, b1, b2,
             inv_c1, inv_c2, eps);
        const double norm2 = unit_decoder ? sumsq(w, od) : 0.0;
        if (norm2 > 0) scaled_copy(static_cast<float>(1.0 / std::sqrt(norm2)), w, w, od);
      }
    });
    adam(b_enc_.get(), m_benc_.get(), v_benc_.get(), g_benc_.get(), gscale, L, lr, b1, b2, inv_c1, inv_c2, eps);
    adam(b_dec_.get(), m_bdec_.get(), v_bdec_.get(), g_bdec_.get(), gscale, od, lr, b1, b2, inv_c1, inv_c2, eps);
    if (spec_.skip) {
      constexpr int64_t kSkipChunk = 1 << 14;
      parallel_for((d * od + kSkipChunk - 1) / kSkipChunk, [&](int64_t t, int) {
        const int64_t a = t * kSkipChunk, n = std::min(kSkipChunk, d * od - a);
        adam(Ws_.get() + a, mWs_.get() + a, vWs_.get() + a, gWs_.get() + a, gscale, n, lr, b1, b2, inv_c1, inv_c2, eps);
      });
    }
    if (spec_.arch == TrainArch::JumpReLU)
      adam(logth_.get(), m_logth_.get(), v_logth_.get(), g_logth_.get(), gscale, L, lr, b1, b2, inv_c1, inv_c2, eps);
    return norm;
  }

  void update_firing(int64_t B) {
    std::vector<uint8_t> fired(spec_.d_sae, 0);
    for (int32_t j : codes_.indices) {
      fires_[j] += 1.0;
      fired[j] = 1;
    }
    for (int64_t j = 0; j < spec_.d_sae; ++j) since_fired_[j] = fired[j] ? 0.0 : since_fired_[j] + B;
  }

  TrainSpec spec_;
  AlignedFloats Wt_, W_dec_, b_enc_, b_dec_;
  AlignedFloats mWt_, vWt_, mWdec_, vWdec_, m_benc_, v_benc_, m_bdec_, v_bdec_;
  AlignedFloats gWt_, gWdec_, g_benc_, g_bdec_;
  AlignedFloats logth_, m_logth_, v_logth_, g_logth_;  // jumprelu's log thresholds
  std::vector<float> theta_;                          // exp(logth_) of this step
  // jumprelu: entries in the estimators' window, (row, latent, pre), found in this step's encode.
  train::JumpWindow window_;
  std::vector<double> fires_, since_fired_;
  double batch_threshold_ = 0;  // batchtopk: EMA of each batch's smallest selected value
  float batch_cut_ = 0;         // batchtopk: this step's full-width cut
  std::vector<int64_t> levels_;     // batchtopk's prefix widths (one level: d_sae)
  std::vector<float> level_hint_;   // each level's previous cut (speed only)
  std::vector<SparseCodes> inner_codes_;       // matryoshka: the inner levels' selections
  std::vector<std::vector<float>> dpre_inner_;  // ... and their dL/dpre
  SparseCodes candidates_, scratch_codes_;      // levels_select's admitted values, safe_threshold's
  AlignedFloats Ws_, mWs_, vWs_, gWs_;          // skip transcoders: W_skip [d_in, d_out]
  std::vector<float> dec_norm_;
  std::vector<uint8_t> touched_;
  std::unique_ptr<CpuModel> encoder_;

  // Per-step scratch, kept between steps.
  int64_t batch_capacity_ = 0;
  AlignedFloats X_, XP_, E_, U_;
  AlignedFloats Y_, S_, Einner_;  // transcoder targets, skip outputs, an inner level's residuals
  SparseCodes codes_, aux_codes_;
  std::vector<int32_t> dead_;
  std::vector<float> dpre_main_;
  std::vector<int32_t> aux_local_;                 // AuxK entries' positions in dead_
  AlignedFloats dead_dec_;        // W_dec rows of the dead latents
  Scratch A_, dA_, decT_, gtmp_;  // AuxK's dense chunks
  std::vector<int64_t> offsets_;
  std::vector<double> fsum_;  // per latent: sum of its entries' values (the L1 term)
  std::vector<Entry> entries_;
};

}  // namespace

std::unique_ptr<BackendTrainer> make_cpu_trainer(const TrainSpec& spec, const TrainParamsView& init) {
  return std::make_unique<CpuTrainer>(spec, init);
}

}  // namespace saekit::cpu
