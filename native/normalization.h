// Per-row input normalization (SAELens normalize_activations), shared by the backends so a row
// is normalized identically wherever it is encoded: x_n = (x - shift) * scale in double, then
// rounded; the codes keep row_scale = 1 / scale and row_shift = shift for the decode.
//   constant_norm_rescale: scale = sqrt(d_in) / ||x||, shift = 0
//   layer_norm:            scale = 1 / (std(x, unbiased) + 1e-5), shift = mean(x)
#pragma once
#include <cmath>
#include <cstdint>

#include "backend.h"

namespace saekit {

constexpr float kLayerNormEps = 1e-5f;

struct RowNormalization {
  double shift = 0.0, scale = 1.0;  // applied in double: x - mean in fp32 would lose ~u |mean| / std
  float out_scale = 1.0f, out_shift = 0.0f;  // what the codes record
};

/** The normalization of row XR (D_IN finite values); SUM and SUMSQ are its sum and sum of squares. */
inline RowNormalization row_normalization(Normalization kind, const float* xr, int64_t d_in, double sum, double sumsq) {
  RowNormalization n;
  if (kind == Normalization::ConstantNormRescale) {
    const double norm = std::sqrt(sumsq);
    n.scale = norm > 0 ? std::sqrt(static_cast<double>(d_in)) / norm : 1.0;
    n.out_scale = static_cast<float>(1.0 / n.scale);
  } else if (kind == Normalization::LayerNorm) {
    const double mean = sum / d_in;
    double ss = 0;
    for (int64_t i = 0; i < d_in; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
    const double sd = d_in > 1 ? std::sqrt(ss / (d_in - 1)) : 0.0;
    n.shift = mean;
    n.out_shift = static_cast<float>(mean);
    n.scale = 1.0 / (sd + kLayerNormEps);
    n.out_scale = static_cast<float>(sd);
  }
  return n;
}

}  // namespace saekit
