// The AMX-BF16 screening kernel on real tiles (encode_amx_bf16.inc with the intrinsics).
// Only called where amx_usable() (isa.cpp): cpuid, XCR0 and the OS's tile permission checked.
#define SAEKIT_AMX_HW 1
#include <cstdint>
#include <vector>

#include "amx_tiles.h"
#include "screen.h"

namespace saekit::cpu {

#define SAEKIT_AMX_FN __attribute__((target("amx-tile,amx-bf16,avx512f,avx512dq,avx512vl,avx512bw,fma")))
#define SAEKIT_AMX_KERNEL amx_bf16_kernel_hw
#define SAEKIT_AMX_SELECT(tile, rows, admit, row0, base, sink) select_rows_avx512(tile, rows, admit, row0, base, sink)
#include "encode_amx_bf16.inc"

void encode_block_amx_bf16(const AmxBlockArgs& args) { amx_bf16_kernel_hw(args); }

// The AMX peak probe (probes.cpp): TDPBF16PS into 4 independent C tiles from A/B tiles that
// stay in registers, iters x 4 instructions of 16 x 16 x 32 multiply-adds.
SAEKIT_AMX_FN double amx_bf16_loop(int64_t iters) {
  TileConfig cfg;
  cfg.palette_id = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = 16;
    cfg.colsb[t] = 64;
  }
  alignas(64) static const uint16_t ones[16 * 32] = {};  // zeros: the values do not matter
  alignas(64) float out[16 * 16];
  SAEKIT_TILE_LOADCONFIG(&cfg);
  SAEKIT_TILE_ZERO(0);
  SAEKIT_TILE_ZERO(1);
  SAEKIT_TILE_ZERO(2);
  SAEKIT_TILE_ZERO(3);
  SAEKIT_TILE_LOAD(4, ones, 64);
  SAEKIT_TILE_LOAD(5, ones, 64);
  SAEKIT_TILE_LOAD(6, ones, 64);
  SAEKIT_TILE_LOAD(7, ones, 64);
  for (int64_t i = 0; i < iters; ++i) {
    SAEKIT_TILE_DPBF16PS(0, 4, 6);
    SAEKIT_TILE_DPBF16PS(1, 4, 7);
    SAEKIT_TILE_DPBF16PS(2, 5, 6);
    SAEKIT_TILE_DPBF16PS(3, 5, 7);
  }
  SAEKIT_TILE_STORE(0, out, 64);
  SAEKIT_TILE_RELEASE();
  return static_cast<double>(out[0]);
}

}  // namespace saekit::cpu
