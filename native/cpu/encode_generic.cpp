// Portable encode kernel: plain loops the compiler vectorizes for the baseline ISA. It is the
// fallback on CPUs without AVX2 and the simplest statement of what the fast kernels compute.
#include "encode_kernels.h"

namespace saekit::cpu {

void encode_block_generic(const EncodeBlockArgs& args) {
  constexpr int MR = kMrGeneric;
  const int64_t d_in = args.d_in;
  const int n_micro = (args.rows + MR - 1) / MR;
  for (int64_t p = 0; p < args.n_panels; ++p) {
    const float* b = args.b_packed + p * d_in * kPanel;
    for (int m = 0; m < n_micro; ++m) {
      const float* a = args.a_packed + static_cast<int64_t>(m) * d_in * MR;
      float acc[MR][kPanel] = {};
      for (int64_t i = 0; i < d_in; ++i) {
        for (int r = 0; r < MR; ++r) {
          const float ar = a[i * MR + r];
          for (int j = 0; j < kPanel; ++j) acc[r][j] += ar * b[i * kPanel + j];
        }
      }
      const int rows = args.rows - m * MR < MR ? args.rows - m * MR : MR;
      for (int r = 0; r < rows; ++r)
        tile_row_epilogue(acc[r], args.bias + p * kPanel, args.admit + p * kPanel, m * MR + r, p * kPanel,
                          *args.sink);
    }
  }
}

}  // namespace saekit::cpu
