// GPU-only checks and timings the native GPU check runs (defined in cuda_backend.cu; built with
// nvcc). gpu_check.cpp is compiled by the host compiler and sees only these declarations.
#pragma once
#include <cstdint>
#include <string>

namespace saekit {

/** Runs the tensor-core probe kernel (kernels/mma.cuh) on the device against a float64
 * reference: confirms the mma fragment layout the emulation assumes. DETAIL says how it went. */
bool cuda_mma_probe(std::string* detail);

struct CudaBenchShape {
  int64_t rows, d_in, d_sae, k;
};

/** Device-side timings at one shape, with the probes measured in the same run. */
struct CudaBenchResult {
  std::string device;
  bool screened = false;          // the tensor-core screen ran (else the fp32 kernel)
  double encode_ms = 0;           // kernels only, device-resident rows, per SHAPE.rows
  double encode_host_ms = 0;      // Backend encode host -> host (staging, copies, CSR), per SHAPE.rows
  double decode_ms = 0;           // kernel only, per SHAPE.rows
  double decode_bytes = 0;        // gathered W_dec rows + written output, per SHAPE.rows
  double candidates_per_row = 0, overflow_rate = 0;
  double mma_peak_tflops = 0;     // mma_peak_kernel
  double copy_gbs = 0;            // device-to-device cudaMemcpy, read + write bytes
};

/** Random SAE and rows at SHAPE on device 0; throws saekit::Error on a CUDA failure. */
CudaBenchResult cuda_benchmark(const CudaBenchShape& shape, unsigned seed);

}  // namespace saekit
