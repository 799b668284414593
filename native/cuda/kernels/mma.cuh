// Tensor-core building block: one warp-wide bf16 matrix multiply-accumulate,
// D[16x8] += A[16x16] * B[16x8] (fp32 accumulation), as PTX's mma.sync.m16n8k16.row.col.
// Under nvcc it is the real instruction (sm_80+); under the CPU emulation it follows the
// documented per-lane fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16"):
//   g = lane / 4, t = lane % 4
//   A (row-major 16x16, 4 x 32-bit regs of 2 bf16, low half first):
//     reg0: (g,   2t..2t+1)  reg1: (g+8, 2t..2t+1)  reg2: (g,   2t+8..2t+9)  reg3: (g+8, 2t+8..2t+9)
//   B (16x8, "col": k down, n across; 2 regs): reg0: (k = 2t..2t+1, n = g)  reg1: (k = 2t+8..2t+9, n = g)
//   C/D (16x8 fp32, 4 regs): d0,d1: (g, 2t..2t+1)  d2,d3: (g+8, 2t..2t+1)
// The fragment loaders below read those positions from row-major tiles, so both builds agree
// as long as the layout above is the hardware's (the GPU check verifies it on a device).
#pragma once
#include <cstdint>

#include "compat.h"

namespace saekit::cuda {

/** bf16 bits of X, round to nearest even (NaN kept quiet). */
__host__ __device__ __forceinline__ uint16_t bf16_bits(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

__host__ __device__ __forceinline__ float bf16_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

__device__ __forceinline__ uint32_t pack2(uint16_t lo, uint16_t hi) { return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16); }

/** A fragment from a row-major bf16 tile (16 rows, leading dimension LDA elements). */
__device__ __forceinline__ void load_a_frag(uint32_t a[4], const uint16_t* tile, int lda) {
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  a[0] = pack2(tile[g * lda + 2 * t], tile[g * lda + 2 * t + 1]);
  a[1] = pack2(tile[(g + 8) * lda + 2 * t], tile[(g + 8) * lda + 2 * t + 1]);
  a[2] = pack2(tile[g * lda + 2 * t + 8], tile[g * lda + 2 * t + 9]);
  a[3] = pack2(tile[(g + 8) * lda + 2 * t + 8], tile[(g + 8) * lda + 2 * t + 9]);
}

/** B fragment from a row-major bf16 tile B[k][n] (16 k-rows, leading dimension LDB). */
__device__ __forceinline__ void load_b_frag(uint32_t b[2], const uint16_t* tile, int ldb) {
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  b[0] = pack2(tile[(2 * t) * ldb + g], tile[(2 * t + 1) * ldb + g]);
  b[1] = pack2(tile[(2 * t + 8) * ldb + g], tile[(2 * t + 9) * ldb + g]);
}

// ldmatrix.sync.aligned.m8n8.x4.shared.b16: four 8x8 b16 matrices from shared memory, one
// fragment register each. Lanes 8m..8m+7 give the addresses of rows 0..7 of matrix m (16
// contiguous bytes each); lane l receives, in register m, row l/4, columns 2(l%4) and
// 2(l%4)+1 of matrix m (low half first): the A and B fragment layouts above, so
//   A (16x16 at row-major [row][k]): lane l points at row l%16, column 8(l/16)
//   B (two n8 tiles, stored [n][k]): lane l points at n row (l%8) + 8(l/16), column 8((l/8)%2)
// give a[0..3] and {b0 of tile 0, b1 of tile 0, b0 of tile 1, b1 of tile 1}.
#if defined(__CUDACC__)
__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const uint16_t* row_addr) {
#if __CUDA_ARCH__ >= 800
  const unsigned a = static_cast<unsigned>(__cvta_generic_to_shared(row_addr));
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(a));
#endif
}
#else
inline void ldmatrix_x4(uint32_t r[4], const uint16_t* row_addr) {
  auto& s = ::saekit::emu::tls;
  // Every lane publishes its row address; each then reads its two elements of each matrix.
  s.warp_slots[s.lane] = reinterpret_cast<uint64_t>(row_addr);
  s.warp_barrier->arrive_and_wait();
  for (int m = 0; m < 4; ++m) {
    const uint16_t* row = reinterpret_cast<const uint16_t*>(s.warp_slots[8 * m + s.lane / 4]);
    r[m] = pack2(row[2 * (s.lane % 4)], row[2 * (s.lane % 4) + 1]);
  }
  s.warp_barrier->arrive_and_wait();
}
#endif

#if defined(__CUDACC__)
__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
#if __CUDA_ARCH__ >= 800
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
#else
/** Emulation: gather every lane's fragments, then compute this lane's four outputs. */
inline void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
  auto& s = ::saekit::emu::tls;
  uint32_t* mine = s.warp_frags + 8 * s.lane;
  for (int i = 0; i < 4; ++i) mine[i] = a[i];
  mine[4] = b[0];
  mine[5] = b[1];
  s.warp_barrier->arrive_and_wait();
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const uint32_t* f = s.warp_frags + 8 * l;
    const int g = l / 4, t = l % 4;
    auto lo = [](uint32_t r) { return bf16_to_float(static_cast<uint16_t>(r & 0xffffu)); };
    auto hi = [](uint32_t r) { return bf16_to_float(static_cast<uint16_t>(r >> 16)); };
    A[g][2 * t] = lo(f[0]), A[g][2 * t + 1] = hi(f[0]);
    A[g + 8][2 * t] = lo(f[1]), A[g + 8][2 * t + 1] = hi(f[1]);
    A[g][2 * t + 8] = lo(f[2]), A[g][2 * t + 9] = hi(f[2]);
    A[g + 8][2 * t + 8] = lo(f[3]), A[g + 8][2 * t + 9] = hi(f[3]);
    B[2 * t][g] = lo(f[4]), B[2 * t + 1][g] = hi(f[4]);
    B[2 * t + 8][g] = lo(f[5]), B[2 * t + 9][g] = hi(f[5]);
  }
  s.warp_barrier->arrive_and_wait();
  const int g = static_cast<int>(s.lane) / 4, t = static_cast<int>(s.lane) % 4;
  const int rows[4] = {g, g, g + 8, g + 8};
  const int cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  for (int i = 0; i < 4; ++i) {
    float acc = d[i];
    for (int kk = 0; kk < 16; ++kk) acc += A[rows[i]][kk] * B[kk][cols[i]];  // products of bf16 are exact in fp32
    d[i] = acc;
  }
}
#endif


/**
 * One warp's tile product on the tensor cores, out[16][N] = X[16][K] W[K][N] (bf16 in, fp32
 * accumulation), k-steps of 16, n-tiles of 8: the probe that checks the fragment layout and
 * the mma (emulated in CI, real in the GPU check). K % 16 == 0, N % 8 == 0.
 */
__global__ void mma_tile_probe_kernel(const uint16_t* X, const uint16_t* W, float* out, int K, int N) {
  const int lane = static_cast<int>(threadIdx.x) % 32, g = lane / 4, t = lane % 4;
  for (int n0 = 0; n0 < N; n0 += 8) {
    float d[4] = {0.f, 0.f, 0.f, 0.f};
    for (int k0 = 0; k0 < K; k0 += 16) {
      uint32_t a[4], b[2];
      load_a_frag(a, X + k0, K);
      load_b_frag(b, W + static_cast<int64_t>(k0) * N + n0, N);
      mma_bf16_16816(d, a, b);
    }
    out[g * N + n0 + 2 * t] = d[0];
    out[g * N + n0 + 2 * t + 1] = d[1];
    out[(g + 8) * N + n0 + 2 * t] = d[2];
    out[(g + 8) * N + n0 + 2 * t + 1] = d[3];
  }
}

/**
 * The tensor cores' bf16 mma.sync peak: every warp issues ITERS x 8 independent m16n8k16 mma on
 * register fragments (no memory traffic), 4096 flops each. The denominator of the GPU check's
 * "fraction of peak" for the kernels built on the same instruction (wgmma, which these kernels
 * do not use, peaks higher on Hopper: the torch bf16 matmul row shows that ceiling).
 */
__global__ void mma_peak_kernel(float* out, int iters) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  uint32_t a[4], b[2];
  for (int i = 0; i < 4; ++i) a[i] = pack2(bf16_bits(1e-3f * static_cast<float>(lane + i)), bf16_bits(1e-3f));
  b[0] = pack2(bf16_bits(1e-3f), bf16_bits(2e-3f));
  b[1] = pack2(bf16_bits(3e-3f), bf16_bits(1e-3f * static_cast<float>(lane)));
  float d[8][4];
  SAEKIT_UNROLL
  for (int q = 0; q < 8; ++q)
    for (int i = 0; i < 4; ++i) d[q][i] = 0.f;
  for (int it = 0; it < iters; ++it) {
    SAEKIT_UNROLL
    for (int q = 0; q < 8; ++q) mma_bf16_16816(d[q], a, b);
  }
  float sum = 0.f;
  SAEKIT_UNROLL
  for (int q = 0; q < 8; ++q)
    for (int i = 0; i < 4; ++i) sum += d[q][i];
  out[blockIdx.x * blockDim.x + threadIdx.x] = sum;  // keeps the mma live
}

}  // namespace saekit::cuda
