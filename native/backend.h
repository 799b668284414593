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

struct EncodeStats {
  double seconds = 0;
};

class BackendModel {
 public:
  virtual ~BackendModel() = default;
  // x: [rows, d_in] float32 row-major. Fills out (resized here).
  virtual void encode(const float* x, int64_t rows, SparseCodes* out) = 0;
  // out: [codes.rows, d_in] float32, fully overwritten.
  virtual void decode(const SparseCodesView& codes, float* out) = 0;
  // Bytes of memory the model holds on its device (packed weights etc.).
  virtual int64_t bytes() const = 0;
  // Rows re-encoded because a top-k threshold hint was too high (CPU; for tests and bench).
  virtual int64_t hint_misses() const { return 0; }
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
};

// The registry. cpu is always present; cuda is present when compiled with nvcc, and then
// reports available=false (with the reason) on machines without a working GPU.
Backend& cpu_backend();
Backend* cuda_backend();  // nullptr when built without CUDA

}  // namespace saekit
