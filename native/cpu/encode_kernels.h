// Fused encode micro-kernels: one token block against every packed latent panel.
//
// Data layout (built by cpu_backend.cpp):
//   W_enc is packed at load into panels of kPanel = 32 latents: panel p holds
//   b[p][i][j] = W_enc[i, 32p + j] for i < d_in, j < 32 (latents past d_sae are zero, their
//   bias -inf so they can never be selected). A micro-kernel walks one panel sequentially.
//   A token block is packed per call into micro-panels of `mr` rows: a[m][i][r] = x'[mr*m + r, i]
//   (x' = normalized input minus b_dec), so the kernel broadcasts consecutive floats.
// For each (micro-panel, panel) the kernel computes the mr x 32 tile of pre-activations in
// registers over the full d_in, adds the bias, and hands a row's lanes to the sink only when a
// lane beats both the latent's admission threshold (0 for relu/topk, max(threshold, 0) for
// jumprelu) and the row's running threshold (the k-th best so far, topk only). The dense
// [N, d_sae] matrix never exists; at most one mr x 32 tile does.
#pragma once
#include <cstdint>

namespace saekit::cpu {

constexpr int kPanel = 32;

// Where a tile's passing lanes go: a per-row staging area the kernels append to directly, with
// no call and no branch per tile (a data-dependent branch per tile row mispredicted often enough
// to cost ~10% of the encode). Row r holds count[r] candidates at values/indices + r * stride,
// in ascending latent order. A kernel may write up to kPanel entries past count[r] (the stride
// leaves room), then raises count[r] by the number that passed, and calls flush(r) once
// count[r] > limit[r]. row_threshold[r] may rise in flush() (topk), so fewer lanes pass later.
class TileSink {
 public:
  virtual ~TileSink() = default;
  virtual void flush(int row) = 0;

  float* values = nullptr;
  int32_t* indices = nullptr;
  int64_t* count = nullptr;
  int64_t* limit = nullptr;
  float* row_threshold = nullptr;
  int64_t stride = 0;
};

struct EncodeBlockArgs {
  const float* a_packed = nullptr;  // [ceil(rows/mr)][d_in][mr], 64-byte aligned
  int rows = 0;                     // valid rows; padding rows of the last micro-panel are zero
  int64_t d_in = 0;
  const float* b_packed = nullptr;  // [n_panels][d_in][32], 64-byte aligned
  const float* bias = nullptr;      // [n_panels * 32]
  const float* admit = nullptr;     // [n_panels * 32] per-latent admission threshold
  int64_t n_panels = 0;
  TileSink* sink = nullptr;
  // int8 screen only (screen.h): per-row scale sx of the block's rows, and per latent (panel
  // order) the weight scale sw_j and 128 x colsum_j.
  const float* row_scale = nullptr;
  const float* latent_scale = nullptr;
  const int32_t* latent_sum128 = nullptr;
  // Screens (screen.h ScreenCopy::run): the first panel of the range to screen (a latent
  // split); bias, admit and sink already point at that range.
  int64_t panel0 = 0;
};

// Rows per micro-panel of each variant (the A packing depends on it).
constexpr int kMrGeneric = 4;
constexpr int kMrAvx2 = 6;
constexpr int kMrAvx512 = 14;
constexpr int kMrInt8x256 = 6;  // the AVX-VNNI int8 screen (encode_int8_256.cpp)

void encode_block_generic(const EncodeBlockArgs& args);
void encode_block_avx2(const EncodeBlockArgs& args);
void encode_block_avx512(const EncodeBlockArgs& args);

// AVX-512 epilogue shared by the fp32 and bf16 kernels: appends each finished tile row's lanes
// (bias added) that beat max(admission, row threshold) to the sink's staging.
void select_rows_avx512(const float (*tile)[kPanel], int rows, const float* admit, int row0, int64_t base,
                        TileSink& sink);

// Appends the lanes of one finished tile row (values with bias) that beat max(admission, row
// threshold) to the sink's staging (the int8-256 screen's epilogue).
inline void select_row(const float* v, const float* admit, int row, int64_t base, TileSink& sink) {
  const float thr = sink.row_threshold[row];
  float* values = sink.values + row * sink.stride;
  int32_t* indices = sink.indices + row * sink.stride;
  int64_t n = sink.count[row];
  for (int j = 0; j < kPanel; ++j) {
    const float t = admit[j] > thr ? admit[j] : thr;
    values[n] = v[j];
    indices[n] = static_cast<int32_t>(base + j);
    n += v[j] > t;
  }
  sink.count[row] = n;
  if (n > sink.limit[row]) sink.flush(row);
}

// Shared scalar epilogue for one row of a tile (generic and avx2 variants).
inline void tile_row_epilogue(const float* acc, const float* bias, const float* admit, int row,
                              int64_t base, TileSink& sink) {
  const float thr = sink.row_threshold[row];
  float* values = sink.values + row * sink.stride;
  int32_t* indices = sink.indices + row * sink.stride;
  int64_t n = sink.count[row];
  for (int j = 0; j < kPanel; ++j) {
    const float v = acc[j] + bias[j];
    const float t = admit[j] > thr ? admit[j] : thr;
    values[n] = v;
    indices[n] = static_cast<int32_t>(base + j);
    n += v > t;
  }
  sink.count[row] = n;
  if (n > sink.limit[row]) sink.flush(row);
}

}  // namespace saekit::cpu
