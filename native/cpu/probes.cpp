#include "probes.h"

#include <immintrin.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <vector>

#include "../thread_pool.h"
#include "aligned.h"
#include "isa.h"

namespace saekit::cpu {
namespace {

using Clock = std::chrono::steady_clock;

// 24 independent accumulator chains: more than latency x issue width (4 x 2) needs.
__attribute__((target("avx512f"))) double fma_loop_avx512(int64_t iters) {
  __m512 acc[24];
  const __m512 m = _mm512_set1_ps(0.999999f), add = _mm512_set1_ps(1e-7f);
  for (int j = 0; j < 24; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 24
    for (int j = 0; j < 24; ++j) acc[j] = _mm512_fmadd_ps(acc[j], m, add);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 24; ++j) s = _mm512_add_ps(s, acc[j]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  return static_cast<double>(out[0]) * 24 * 16 * 2;  // keeps the loop alive
}

__attribute__((target("avx2,fma"))) double fma_loop_avx2(int64_t iters) {
  __m256 acc[12];
  const __m256 m = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-7f);
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_ps(static_cast<float>(j));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_fmadd_ps(acc[j], m, add);
  }
  __m256 s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm256_add_ps(s, acc[j]);
  alignas(32) float out[8];
  _mm256_store_ps(out, s);
  return static_cast<double>(out[0]);
}

__attribute__((target("avx512f,avx512bf16"))) double bf16_loop(int64_t iters) {
  __m512 acc[24];
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = (__m512bh)_mm512_set1_epi32(0x33d633d6);
  for (int j = 0; j < 24; ++j) acc[j] = _mm512_set1_ps(static_cast<float>(j));
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 24
    for (int j = 0; j < 24; ++j) acc[j] = _mm512_dpbf16_ps(acc[j], a, b);
  }
  __m512 s = acc[0];
  for (int j = 1; j < 24; ++j) s = _mm512_add_ps(s, acc[j]);
  alignas(64) float out[16];
  _mm512_store_ps(out, s);
  return static_cast<double>(out[0]);
}

// vpdpbusd (AVX512-VNNI): 16 lanes x 4 u8 x s8 products per instruction; 24 chains seeded
// differently so none can be merged.
__attribute__((target("avx512f,avx512vnni"))) double vnni_loop(int64_t iters) {
  __m512i acc[24];
  const __m512i a = _mm512_set1_epi32(0x01010101), b = _mm512_set1_epi32(0x01FF01FF);
  for (int j = 0; j < 24; ++j) acc[j] = _mm512_set1_epi32(j);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 24
    for (int j = 0; j < 24; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], a, b);
  }
  __m512i s = acc[0];
  for (int j = 1; j < 24; ++j) s = _mm512_add_epi32(s, acc[j]);
  alignas(64) int32_t out[16];
  _mm512_store_si512(out, s);
  return static_cast<double>(out[0]);
}

// The VEX form on ymm (AVX-VNNI): 8 lanes; 12 chains (16 ymm registers).
__attribute__((target("avx2,avxvnni"))) double avxvnni_loop(int64_t iters) {
  __m256i acc[12];
  const __m256i a = _mm256_set1_epi32(0x01010101), b = _mm256_set1_epi32(0x01FF01FF);
  for (int j = 0; j < 12; ++j) acc[j] = _mm256_set1_epi32(j);
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (int j = 0; j < 12; ++j) acc[j] = _mm256_dpbusd_avx_epi32(acc[j], a, b);
  }
  __m256i s = acc[0];
  for (int j = 1; j < 12; ++j) s = _mm256_add_epi32(s, acc[j]);
  alignas(32) int32_t out[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), s);
  return static_cast<double>(out[0]);
}

// Calibrates iterations of `loop` on one thread to ~seconds/4, then times every pool thread.
template <typename Loop>
double timed_on_pool(Loop loop, double seconds, double flops_per_iter) {
  const int T = threads();
  std::vector<double> sink(T);
  int64_t iters = 1 << 16;
  for (;;) {
    auto t0 = Clock::now();
    sink[0] += loop(iters);
    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    if (dt > seconds / 4) {
      iters = static_cast<int64_t>(iters * seconds / dt);
      break;
    }
    iters *= 2;
  }
  auto t0 = Clock::now();
  parallel_for(T, [&](int64_t t, int) { sink[t] += loop(iters); });
  const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
  volatile double keep = sink[0];
  (void)keep;
  return static_cast<double>(iters) * flops_per_iter * T / dt / 1e9;
}

}  // namespace

double probe_bf16_gflops(double seconds) {
  __builtin_cpu_init();
  if (!__builtin_cpu_supports("avx512bf16")) return 0.0;
  return timed_on_pool(bf16_loop, seconds, 24 * 16 * 4);  // 16 lanes x 2 products x 2 FLOPs
}

double amx_bf16_loop(int64_t iters);  // encode_amx.cpp

double probe_amx_bf16_gflops(double seconds) {
  if (!screen_supported(Screen::AmxBf16)) return 0.0;
  return timed_on_pool(amx_bf16_loop, seconds, 4.0 * 16 * 16 * 32 * 2);
}

double probe_vnni_gops(double seconds, bool wide) {
  if (!screen_supported(wide ? Screen::Int8 : Screen::Int8x256)) return 0.0;
  if (wide) return timed_on_pool(vnni_loop, seconds, 24 * 16 * 8);  // 16 lanes x 4 products x 2 ops
  return timed_on_pool(avxvnni_loop, seconds, 12 * 8 * 8);
}

double probe_fma_gflops(double seconds) {
  // The roofline is the hardware's, whatever kernel variant is forced.
  if (best_isa() == Isa::Generic) return 0.0;  // no FMA probe for pre-AVX2 CPUs
  if (best_isa() == Isa::Avx512) return timed_on_pool(fma_loop_avx512, seconds, 24 * 16 * 2);
  return timed_on_pool(fma_loop_avx2, seconds, 12 * 8 * 2);
}

double probe_copy_gbps(int64_t bytes, int reps) {
  const int64_t n = bytes / sizeof(float);
  AlignedFloats src = aligned_floats(n), dst = aligned_floats(n);
  const int T = threads();
  const int64_t chunk = 1 << 16;  // floats per task
  const int64_t tasks = (n + chunk - 1) / chunk;
  auto copy = [&] {
    parallel_for(tasks, [&](int64_t t, int) {
      const int64_t b = t * chunk, e = std::min(n, b + chunk);
      std::memcpy(dst.get() + b, src.get() + b, sizeof(float) * (e - b));
    });
  };
  parallel_for(tasks, [&](int64_t t, int) {  // first touch from the pool's threads
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    for (int64_t i = b; i < e; ++i) src[i] = dst[i] = static_cast<float>(i);
  });
  (void)T;
  copy();
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    auto t0 = Clock::now();
    copy();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count());
  }
  return 2.0 * static_cast<double>(n) * sizeof(float) / best / 1e9;
}

}  // namespace saekit::cpu
