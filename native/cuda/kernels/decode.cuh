// Sparse decode on the GPU: x_hat[r] = sum_e values[e] * W_dec[indices[e]] + b_dec over row r's
// nonzeros e (CSR), fp32 accumulation in nonzero order.
//
// One block per row (grid-stride over rows). The row's (index, value) pairs are staged in
// shared memory in chunks of DECODE_CHUNK by the whole block, then every thread accumulates its
// own columns of the selected W_dec rows: consecutive threads read consecutive columns, so each
// gathered row is read with coalesced loads (and 16-byte float4 loads when d_in % 4 == 0).
// Memory-bound: the cost is k rows of W_dec per token.
#pragma once
#include <cstdint>

#include "compat.h"

namespace saekit::cuda {

constexpr int DECODE_CHUNK = 64;

__global__ void sparse_decode_kernel(const float* __restrict__ W_dec, const float* __restrict__ b_dec, const uint32_t* __restrict__ indptr,
                                     const int32_t* __restrict__ indices, const float* __restrict__ values, int rows, int d_in,
                                     float* __restrict__ out) {
  __shared__ int s_index[DECODE_CHUNK];
  __shared__ float s_value[DECODE_CHUNK];
  const bool vec4 = (d_in % 4) == 0;
  const int nthreads = static_cast<int>(blockDim.x);
  const int tid = static_cast<int>(threadIdx.x);
  for (int row = static_cast<int>(blockIdx.x); row < rows; row += static_cast<int>(gridDim.x)) {
    const uint32_t begin = indptr[row];
    const uint32_t end = indptr[row + 1];
    // Each thread owns columns tid*4 + 4*nthreads*i (vec4) or tid + nthreads*i (scalar). The
    // accumulators live in registers across chunks: up to 4 x 4 columns per thread per pass.
    const int per_pass = vec4 ? 4 * nthreads * 4 : nthreads * 4;
    for (int col0 = 0; col0 < d_in; col0 += per_pass) {
      float acc[16];
      for (int i = 0; i < 16; ++i) acc[i] = 0.f;
      for (uint32_t c = begin; c < end; c += DECODE_CHUNK) {
        const int n = static_cast<int>(end - c < static_cast<uint32_t>(DECODE_CHUNK) ? end - c : DECODE_CHUNK);
        __syncthreads();  // the previous chunk is fully consumed before it is overwritten
        for (int e = tid; e < n; e += nthreads) {
          s_index[e] = indices[c + e];
          s_value[e] = values[c + e];
        }
        __syncthreads();
        for (int e = 0; e < n; ++e) {
          const float v = s_value[e];
          const float* w = W_dec + static_cast<int64_t>(s_index[e]) * d_in;
          if (vec4) {
            for (int q = 0; q < 4; ++q) {
              const int col = col0 + 4 * (tid + q * nthreads);
              if (col < d_in) {
                const float4 wv = *reinterpret_cast<const float4*>(w + col);
                acc[4 * q + 0] += v * wv.x;
                acc[4 * q + 1] += v * wv.y;
                acc[4 * q + 2] += v * wv.z;
                acc[4 * q + 3] += v * wv.w;
              }
            }
          } else {
            for (int q = 0; q < 4; ++q) {
              const int col = col0 + tid + q * nthreads;
              if (col < d_in) acc[q] += v * w[col];
            }
          }
        }
      }
      float* o = out + static_cast<int64_t>(row) * d_in;
      if (vec4) {
        for (int q = 0; q < 4; ++q) {
          const int col = col0 + 4 * (tid + q * nthreads);
          if (col < d_in) {
            const float4 b = *reinterpret_cast<const float4*>(b_dec + col);
            float4 r;
            r.x = acc[4 * q + 0] + b.x;
            r.y = acc[4 * q + 1] + b.y;
            r.z = acc[4 * q + 2] + b.z;
            r.w = acc[4 * q + 3] + b.w;
            *reinterpret_cast<float4*>(o + col) = r;
          }
        }
      } else {
        for (int q = 0; q < 4; ++q) {
          const int col = col0 + tid + q * nthreads;
          if (col < d_in) o[col] = acc[q] + b_dec[col];
        }
      }
    }
  }
}

}  // namespace saekit::cuda
