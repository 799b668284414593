// GPU-only checks the native GPU check runs (defined in cuda_backend.cu; built with nvcc).
#pragma once
#include <string>

namespace saekit {

/** Runs the tensor-core probe kernel (kernels/mma.cuh) on the device against a float64
 * reference: confirms the mma fragment layout the emulation assumes. DETAIL says how it went. */
bool cuda_mma_probe(std::string* detail);

}  // namespace saekit
