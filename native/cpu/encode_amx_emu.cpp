// The AMX-BF16 screening kernel under the scalar tile emulation (amx_tiles.h): the same
// source as encode_amx.cpp, so CPUs without AMX test it (SAEKIT_ENCODE_KERNEL=amx-bf16-emu).
// Compiled with -ffp-contract=off (CMakeLists.txt): each emulated add rounds on its own.
#include <cstdint>
#include <vector>

#include "amx_tiles.h"
#include "screen.h"

namespace saekit::cpu {

#define SAEKIT_AMX_FN
#define SAEKIT_AMX_KERNEL amx_bf16_kernel_emu
#define SAEKIT_AMX_SELECT(tile, rows, admit, row0, base, sink) \
  for (int r_ = 0; r_ < (rows); ++r_) select_row((tile)[r_], admit, (row0) + r_, base, sink)
#include "encode_amx_bf16.inc"

void encode_block_amx_bf16_emu(const AmxBlockArgs& args) { amx_bf16_kernel_emu(args); }

}  // namespace saekit::cpu
