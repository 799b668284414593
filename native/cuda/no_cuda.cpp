// Compiled instead of the CUDA sources when nvcc is absent or SAEKIT_CPU_ONLY is set.
#include "../backend.h"

namespace saekit {
Backend* cuda_backend() { return nullptr; }
}  // namespace saekit
