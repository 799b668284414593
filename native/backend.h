// The backend interface: what every compute backend (CPU now, CUDA later) implements.
//
// A Backend turns host weights into a BackendModel resident wherever it computes (packed
// for the CPU's micro-kernels, uploaded for a GPU). A model encodes dense rows into sparse
// CSR codes and decodes such codes back. Inputs were validated by the TypeScript layer
// (shapes, dtypes, k <= d_sae); backends only check what is data-dependent (non-finite
// values) and throw saekit::Error / saekit::InputError. No function here touches N-API.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "error.h"

namespace saekit {

enum class Activation { Standard, TopK, JumpReLU };

// Per-row normalizations only; SAELens' expected_average_only_in is folded into the weights
// at save time, so it arrives here as None.
enum class Normalization { None, ConstantNormRescale, LayerNorm };

struct SaeSpec {
  int64_t d_in = 0;
  int64_t d_sae = 0;
  int64_t k = 0;  // TopK only
  Activation activation = Activation::TopK;
  Normalization normalization = Normalization::None;
  bool apply_b_dec_to_input = true;
  // Transcoders decode to another width than they read (the MLP output from its input):
  // W_dec is [d_sae, d_out], b_dec [d_out]. 0 means d_in (an SAE). apply_b_dec_to_input is
  // false whenever d_out != d_in (SAELens refuses it for transcoders).
  int64_t d_out = 0;
  // Skip transcoders: a dense linear term x @ W_skip^T (W_skip [d_out, d_in]) added to the
  // prediction by BackendModel::add_skip.
  bool skip = false;
  int64_t out_width() const { return d_out > 0 ? d_out : d_in; }
};

// Host float32 weights. W_enc is [d_in, d_sae] row-major, or [d_sae, d_in] when
// enc_transposed (sparsify's encoder.weight). W_dec is [d_sae, d_in]. threshold is JumpReLU's.
struct SaeWeightsView {
  const float* W_enc = nullptr;
  bool enc_transposed = false;
  const float* b_enc = nullptr;
  const float* W_dec = nullptr;
  const float* b_dec = nullptr;
  const float* threshold = nullptr;
  const float* W_skip = nullptr;  // [d_out, d_in], skip transcoders only
};

// Sparse codes in CSR form: row r owns entries [indptr[r], indptr[r+1]) in ascending latent
// index, zeros omitted. Per-row normalizations carry what decode needs to undo them:
// x = x_hat_normalized * row_scale[r] + row_shift[r] (both empty when Normalization::None).
struct SparseCodes {
  std::vector<uint32_t> indptr;
  std::vector<int32_t> indices;
  std::vector<float> values;
  std::vector<float> row_scale;
  std::vector<float> row_shift;
};

// Read-only view of codes to decode (memory owned by the caller).
struct SparseCodesView {
  int64_t rows = 0;
  const uint32_t* indptr = nullptr;
  const int32_t* indices = nullptr;
  const float* values = nullptr;
  const float* row_scale = nullptr;  // may be null: 1
  const float* row_shift = nullptr;  // may be null: 0
};

// A caller's request to stop a long encode or decode early: a 32-bit word the caller sets to
// non-zero from another thread (JavaScript does it with Atomics.store on an Int32Array when
// the call's AbortSignal fires). Backends poll it between blocks of work (a few hundred rows:
// milliseconds) and then throw Cancelled. An empty flag never asks.
class CancelFlag {
 public:
  CancelFlag() = default;
  explicit CancelFlag(const int32_t* word) : word_(word) {}
  bool requested() const {
    if (word_ == nullptr) return false;
#if defined(_MSC_VER)
    return *static_cast<const volatile int32_t*>(word_) != 0;
#else
    return __atomic_load_n(word_, __ATOMIC_RELAXED) != 0;
#endif
  }

 private:
  const int32_t* word_ = nullptr;
};

struct EncodeStats {
  double seconds = 0;
};

class BackendModel {
 public:
  virtual ~BackendModel() = default;
  // x: [rows, d_in] float32 row-major. Fills out (resized here).
  // cancel: polled between blocks; when it asks, throws Cancelled (out is then unspecified).
  virtual void encode(const float* x, int64_t rows, SparseCodes* out, CancelFlag cancel = {}) = 0;
  // out: [codes.rows, d_in] float32, fully overwritten.
  virtual void decode(const SparseCodesView& codes, float* out, CancelFlag cancel = {}) = 0;
  // Skip transcoders: out [rows, d_out] += x [rows, d_in] @ W_skip^T (x as given, before any
  // normalization, as SAELens's SkipTranscoder.forward adds it).
  virtual void add_skip(const float* x, int64_t rows, float* out, CancelFlag cancel = {}) {
    (void)x, (void)rows, (void)out, (void)cancel;
    throw Error("this SAE has no skip connection");
  }
  // Bytes of memory the model holds on its device (packed weights etc.).
  virtual int64_t bytes() const = 0;
  // Rows re-encoded because a top-k threshold hint was too high (CPU; for tests and bench).
  virtual int64_t hint_misses() const { return 0; }
  // Exact low-precision screening (CPU, screen.h): rows screened, candidates rescored in fp32,
  // rows that fell back to the fp32 kernel. All zero where screening does not run.
  virtual void screen_stats(int64_t* rows, int64_t* candidates, int64_t* fallbacks) const {
    *rows = *candidates = *fallbacks = 0;
  }
  // The screen the most recent screened block used ("off" if none ran yet).
  virtual const char* last_screen() const { return "off"; }
  // The encode kernel decisions made for this model (CPU, native/cpu/kernel_choice.h) as a
  // JSON array of {kernel, how, why, key, sampleRows, usPerRow}; "[]" where none.
  virtual std::string kernel_report() const { return "[]"; }
};

// ---- Training ---------------------------------------------------------------------------
// A BackendTrainer owns an SAE's parameters, their Adam moments and per-latent firing
// statistics, and runs whole optimizer steps: fused encode forward, sparse backward (only the
// active latents of each row carry gradient), AuxK on dead latents, Adam, decoder renorm.
// The math, written once for every backend, is in native/cpu/cpu_trainer.cpp's header comment
// and mirrored in float64 by test/helpers/trainReference.ts.

// topk: k per row. batchtopk: the k * rows largest over the whole batch (saved as jumprelu
// with a threshold learned during training). standard: relu + L1 penalty scaled by the
// decoder-row norm (decoder rows then free, not unit). jumprelu: per-latent thresholds learned
// with straight-through estimators and an L0 penalty (Rajamanoharan et al. 2024).
enum class TrainArch { TopK, BatchTopK, Standard, JumpReLU };

// The names the TypeScript layer and the messages use.
inline const char* train_arch_name(TrainArch a) {
  switch (a) {
    case TrainArch::TopK: return "topk";
    case TrainArch::BatchTopK: return "batchtopk";
    case TrainArch::Standard: return "standard";
    case TrainArch::JumpReLU: return "jumprelu";
  }
  return "?";
}

struct TrainSpec {
  int64_t d_in = 0;
  int64_t d_sae = 0;
  int64_t k = 0;      // topk, batchtopk
  int64_t k_aux = 0;  // AuxK latents per row; 0 disables AuxK (topk, batchtopk)
  TrainArch arch = TrainArch::TopK;
  // Transcoders: the decoder writes d_out (0: d_in) and predicts a second tensor (the target
  // rows given to step), the input is never centered by b_dec (b_dec lives in the output
  // space), and with `skip` a dense W_skip adds x W_skip to the prediction.
  int64_t d_out = 0;
  bool transcoder = false;
  bool skip = false;
  // Matryoshka (batchtopk only): strictly increasing prefix widths, the last d_sae. Every
  // prefix reconstructs from its own batch top-k (SAELens's MatryoshkaBatchTopKTrainingSAE)
  // and the losses add. Empty: one level, plain batchtopk.
  std::vector<int64_t> matryoshka_widths;
  int64_t out_width() const { return d_out > 0 ? d_out : d_in; }
};

// Initial parameters, SAELens layouts (W_enc [d_in, d_sae], W_dec [d_sae, d_in]).
struct TrainParamsView {
  const float* W_enc = nullptr;
  const float* b_enc = nullptr;
  const float* W_dec = nullptr;
  const float* b_dec = nullptr;
  const float* log_threshold = nullptr;  // jumprelu: [d_sae]; null elsewhere
  const float* W_skip = nullptr;         // skip transcoders: [d_out, d_in] (SAELens); null = zeros
};

struct TrainStepOptions {
  float input_scale = 1.0f;  // x is multiplied by this first (expected_average_only_in)
  float output_scale = 1.0f; // transcoders: the target rows are multiplied by this
  double lr = 0;
  double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double clip = 0;           // global gradient-norm clip; 0 = off
  int64_t t = 1;             // Adam step number (1-based) for bias correction
  double aux_coeff = 0;      // AuxK loss coefficient; 0 = off
  double dead_tokens = 0;    // a latent is dead after this many tokens without firing; 0: never
  double l1_coeff = 0;       // standard: lambda in lambda * (1/B) sum f_nj ||W_dec[j]||
  double l0_coeff = 0;       // jumprelu: lambda in lambda * (1/B) sum_n |active_n|
  double bandwidth = 1e-3;   // jumprelu: epsilon of the straight-through estimators' kernel
  bool apply = true;         // false: compute loss and gradients only (tests, gradient checks)
};

struct TrainStepStats {
  double mse = 0;       // (1/B) sum_n ||x_hat_n - x_n||^2, in scaled units
  double fvu = 0;       // sum ||e||^2 / sum ||x - mean(x)||^2
  double l0 = 0;        // mean active latents per row
  double aux_loss = 0;  // coefficient and dead-fraction scale included
  double l1_loss = 0;   // standard: the L1 penalty term; jumprelu: the L0 penalty term
  double grad_norm = 0; // before clipping (0 when !apply)
  int64_t dead = 0;     // dead latents going into this step
  double inner_mse = 0; // matryoshka: the inner prefixes' MSE, summed (mse is the full width's)
};

class BackendTrainer {
 public:
  virtual ~BackendTrainer() = default;
  // x: [rows, d_in] float32; y: the target rows [rows, d_out] of a transcoder (null for an
  // SAE, whose target is x). Throws InputError for non-finite values (nothing changes then).
  virtual TrainStepStats step(const float* x, const float* y, int64_t rows, const TrainStepOptions& opts) = 0;
  // Named state tensors, float32 unless noted, SAELens layouts: W_enc, b_enc, W_dec, b_dec,
  // adam_m.<param>, adam_v.<param>, fires and since_fired (float64, [d_sae]), batch_threshold
  // (float64 [1], batchtopk's running threshold; 0 before the first step); log_threshold
  // (jumprelu's parameter, with adam_m./adam_v./grad. like the others); W_skip (skip
  // transcoders, [d_out, d_in], with its moments and gradient); grad.<param>
  // holds the last step's raw gradients (read-only). Sizes in elements.
  virtual int64_t state_size(const std::string& name) const = 0;
  virtual bool state_is_f64(const std::string& name) const = 0;
  virtual void get_state(const std::string& name, void* out) const = 0;
  virtual void set_state(const std::string& name, const void* in) = 0;
  // The last step's selections as CSR over rows (main top-k, then AuxK): for tests.
  virtual void last_selection(std::vector<uint32_t>* indptr, std::vector<int32_t>* indices, bool aux) const = 0;
  virtual int64_t bytes() const = 0;
  // With SAEKIT_TRAIN_PROFILE set when the trainer was made: the time per phase over every step
  // so far, "phase ms (percent), ..." (the CUDA trainer synchronizes at each phase boundary for
  // it). "" when not profiled, and from the CPU trainer, which prints each step's phases to
  // stderr under the same variable instead (cpu_trainer.cpp, PhaseTimer).
  virtual std::string phase_report() const { return ""; }
};

struct Capabilities {
  std::string name;     // "cpu" | "cuda"
  bool available = false;
  std::string detail;   // ISA variant, device name, or why unavailable
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Capabilities capabilities() const = 0;
  // Copies what it needs from `weights`; the caller may free them afterwards.
  virtual std::unique_ptr<BackendModel> load(const SaeSpec& spec, const SaeWeightsView& weights) = 0;
  // Throws when the backend cannot train (yet).
  virtual std::unique_ptr<BackendTrainer> trainer(const TrainSpec& spec, const TrainParamsView& init) = 0;
  // Whether device 'auto' may train here: for CUDA the device must be usable and the trainer's
  // self-test against the CPU trainer must pass (run once, on first ask). Default: capabilities().
  virtual Capabilities training() { return capabilities(); }
};

// The registry. cpu is always present; cuda is present when compiled with nvcc, and then
// reports available=false (with the reason) on machines without a working GPU.
Backend& cpu_backend();
Backend* cuda_backend();  // nullptr when built without CUDA

}  // namespace saekit
