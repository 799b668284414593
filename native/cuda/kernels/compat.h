// One kernel source, two compilers: nvcc builds it for the GPU; g++ builds it against the CPU
// emulation (../emu/cuda_emu.h) so CI, which has no GPU, runs the same kernels.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#else
#include "../emu/cuda_emu.h"
#endif

// Loops over register arrays (mma accumulators, fragments) must be unrolled, or nvcc puts the
// arrays in local memory. g++ (the emulation) has no such pragma and needs none.
#if defined(__CUDACC__)
#define SAEKIT_UNROLL _Pragma("unroll")
#else
#define SAEKIT_UNROLL
#endif
