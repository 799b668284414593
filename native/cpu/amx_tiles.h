// The AMX tile operations the AMX screening kernel uses (encode_amx_bf16.inc), in two builds:
//
// - hardware (SAEKIT_AMX_HW defined): the GCC intrinsics, in functions compiled with
//   target("amx-tile,amx-bf16,..."). Tile numbers must be literals (the intrinsics paste them
//   into the instruction text).
// - emulation (otherwise): tile registers as per-thread byte arrays and each instruction's
//   semantics as the Intel SDM defines them, so the same kernel source runs, and is tested,
//   on CPUs without AMX (as native/cuda/emu does for the CUDA kernels).
//
// TDPBF16PS (SDM, "TDPBF16PS - Dot Product of BF16 Tiles Accumulated into Packed Single
// Precision Tile"): for m < rows(C), k < colsb(A)/4, n < colsb(C)/4:
//   C[m][n] += fp32(A[m].bf16[2k]) * fp32(B[k].bf16[2n]);
//   C[m][n] += fp32(A[m].bf16[2k+1]) * fp32(B[k].bf16[2n+1]);
// with denormal inputs treated as zero, denormal results flushed to zero and round to nearest
// even, whatever MXCSR says. The hardware may associate the sums differently; the screen's
// margin (screen.h) bounds fp32 accumulation of d terms in ANY order, so the emulation's order
// need not be the hardware's for the tests to prove the kernel exact.
#pragma once
#include <cstdint>
#include <cstring>

namespace saekit::cpu {

// Palette 1 tile configuration (64 bytes, loaded by LDTILECFG).
struct alignas(64) TileConfig {
  uint8_t palette_id = 0;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "LDTILECFG reads 64 bytes");

}  // namespace saekit::cpu

#if defined(SAEKIT_AMX_HW)
#include <immintrin.h>

#define SAEKIT_TILE_LOADCONFIG(cfg) _tile_loadconfig(cfg)
#define SAEKIT_TILE_RELEASE() _tile_release()
#define SAEKIT_TILE_ZERO(t) _tile_zero(t)
#define SAEKIT_TILE_LOAD(t, ptr, stride) _tile_loadd(t, ptr, stride)
#define SAEKIT_TILE_STORE(t, ptr, stride) _tile_stored(t, ptr, stride)
#define SAEKIT_TILE_DPBF16PS(c, a, b) _tile_dpbf16ps(c, a, b)
#define SAEKIT_TILE_PREFETCH(ptr) _mm_prefetch(reinterpret_cast<const char*>(ptr), _MM_HINT_T1)

#else

namespace saekit::cpu::amx_emu {

struct TileState {
  TileConfig config;
  alignas(64) uint8_t tmm[8][16][64];
};

inline TileState& state() {
  thread_local TileState s;
  return s;
}

inline float bf16_to_fp32_daz(uint16_t h) {
  if ((h & 0x7F80u) == 0) h &= 0x8000u;  // denormal input treated as (signed) zero
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float ftz(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7F800000u) == 0) u &= 0x80000000u;  // denormal result flushed to (signed) zero
  std::memcpy(&f, &u, 4);
  return f;
}

inline void load_config(const void* cfg) { std::memcpy(&state().config, cfg, sizeof(TileConfig)); }
inline void release() { state() = TileState{}; }
inline void zero(int t) { std::memset(state().tmm[t], 0, sizeof(state().tmm[t])); }

inline void load(int t, const void* base, int64_t stride) {
  TileState& s = state();
  std::memset(s.tmm[t], 0, sizeof(s.tmm[t]));
  for (int r = 0; r < s.config.rows[t]; ++r)
    std::memcpy(s.tmm[t][r], static_cast<const uint8_t*>(base) + r * stride, s.config.colsb[t]);
}

inline void store(int t, void* base, int64_t stride) {
  const TileState& s = state();
  for (int r = 0; r < s.config.rows[t]; ++r)
    std::memcpy(static_cast<uint8_t*>(base) + r * stride, s.tmm[t][r], s.config.colsb[t]);
}

inline void dpbf16ps(int c, int a, int b) {
  TileState& s = state();
  const int rows = s.config.rows[c], n_out = s.config.colsb[c] / 4, n_k = s.config.colsb[a] / 4;
  for (int m = 0; m < rows; ++m) {
    float tmp[16];
    std::memcpy(tmp, s.tmm[c][m], 64);
    for (int k = 0; k < n_k; ++k) {
      uint16_t av[2], bv[2];
      for (int n = 0; n < n_out; ++n) {
        std::memcpy(av, s.tmm[a][m] + 4 * k, 4);
        std::memcpy(bv, s.tmm[b][k] + 4 * n, 4);
        // Products of two bf16 are exact in fp32 (8-bit significands) unless they underflow:
        // one rounding per add, then the flush.
        float acc = tmp[n];
        acc = ftz(acc + ftz(bf16_to_fp32_daz(av[0]) * bf16_to_fp32_daz(bv[0])));
        acc = ftz(acc + ftz(bf16_to_fp32_daz(av[1]) * bf16_to_fp32_daz(bv[1])));
        tmp[n] = acc;
      }
    }
    std::memset(s.tmm[c][m], 0, 64);
    std::memcpy(s.tmm[c][m], tmp, 4 * n_out);
  }
}

}  // namespace saekit::cpu::amx_emu

#define SAEKIT_TILE_LOADCONFIG(cfg) ::saekit::cpu::amx_emu::load_config(cfg)
#define SAEKIT_TILE_RELEASE() ::saekit::cpu::amx_emu::release()
#define SAEKIT_TILE_ZERO(t) ::saekit::cpu::amx_emu::zero(t)
#define SAEKIT_TILE_LOAD(t, ptr, stride) ::saekit::cpu::amx_emu::load(t, ptr, stride)
#define SAEKIT_TILE_STORE(t, ptr, stride) ::saekit::cpu::amx_emu::store(t, ptr, stride)
#define SAEKIT_TILE_DPBF16PS(c, a, b) ::saekit::cpu::amx_emu::dpbf16ps(c, a, b)
#define SAEKIT_TILE_PREFETCH(ptr) ((void)(ptr))

#endif
