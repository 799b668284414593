// One kernel source, two compilers: nvcc builds it for the GPU; g++ builds it against the CPU
// emulation (../emu/cuda_emu.h) so CI, which has no GPU, runs the same kernels.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#else
#include "../emu/cuda_emu.h"
#endif
