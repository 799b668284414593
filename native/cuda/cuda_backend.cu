// CUDA backend: device discovery, and a model running the fp32 baseline kernels of
// kernels/*.cuh (the same source CI runs under CPU emulation). Opt-in with SAEKIT_CUDA=1
// until those kernels have run on hardware; `--device auto` keeps the CPU otherwise.
//
// cudart is linked statically and opens libcuda.so.1 lazily, so this file loads on machines
// without a driver; every failure of the first CUDA call means "no usable GPU".
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "../backend.h"
#include "cuda_model.h"
#include "cuda_probes.h"
#include "kernels/encode_screened.cuh"  // tensor-core screened top-k: compiled here, run under emulation in CI (not launched yet)
#include "kernels/mma.cuh"             // the tensor-core probe kernel: compiled here so nvcc checks the mma PTX
#include "../error.h"

namespace saekit {
namespace {

struct DeviceProbe {
  bool ok = false;
  std::string detail;
};

DeviceProbe probe() {
  DeviceProbe p;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    p.detail = std::string("no usable CUDA device: cudaGetDeviceCount failed with ") + cudaGetErrorName(err) +
               " (" + cudaGetErrorString(err) + ")";
    return p;
  }
  if (count == 0) {
    p.detail = "no CUDA device found";
    return p;
  }
  cudaDeviceProp prop{};
  err = cudaGetDeviceProperties(&prop, 0);
  if (err != cudaSuccess) {
    cudaGetLastError();
    p.detail = std::string("cudaGetDeviceProperties failed: ") + cudaGetErrorString(err);
    return p;
  }
  p.ok = true;
  p.detail = std::string(prop.name) + ", " + std::to_string(prop.totalGlobalMem >> 20) + " MiB, compute capability " +
             std::to_string(prop.major) + "." + std::to_string(prop.minor) + ", " + std::to_string(count) + " device(s)";
  return p;
}

/** The CUDA backend is opt-in (SAEKIT_CUDA=1) until its kernels have run on hardware. */
bool cuda_opted_in() {
  const char* v = std::getenv("SAEKIT_CUDA");
  return v != nullptr && std::string(v) == "1";
}

class CudaBackend final : public Backend {
 public:
  Capabilities capabilities() const override {
    static const DeviceProbe p = probe();
    Capabilities c;
    c.name = "cuda";
    c.available = p.ok && cuda_opted_in();
    c.detail = !p.ok ? p.detail
               : cuda_opted_in() ? p.detail + "; fp32 baseline kernels (SAEKIT_CUDA=1)"
                                 : p.detail + "; the CUDA kernels (fp32 baseline) have not yet run on hardware: set SAEKIT_CUDA=1 to use them";
    return c;
  }

  std::unique_ptr<BackendModel> load(const SaeSpec& spec, const SaeWeightsView& weights) override {
    const Capabilities c = capabilities();
    if (!c.available) throw Error("CUDA backend: " + c.detail);
    return std::make_unique<CudaModel>(spec, weights);
  }

  std::unique_ptr<BackendTrainer> trainer(const TrainSpec&, const TrainParamsView&) override {
    throw Error("CUDA backend: training kernels are not implemented; train with device 'cpu'");
  }
};

}  // namespace

bool cuda_mma_probe(std::string* detail) {
  const int K = 48, N = 40;
  std::vector<uint16_t> X(16 * K), W(static_cast<size_t>(K) * N);
  uint32_t state = 12345u;
  auto next = [&] {
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(state >> 8) / 16777216.0f * 2.f - 1.f;
  };
  for (auto& v : X) v = cuda::bf16_bits(next());
  for (auto& v : W) v = cuda::bf16_bits(next());
  try {
    DeviceBuffer<uint16_t> dX, dW;
    DeviceBuffer<float> dOut(16 * N);
    dX.upload(X.data(), X.size());
    dW.upload(W.data(), W.size());
    cuda::mma_tile_probe_kernel<<<1, 32>>>(dX.get(), dW.get(), dOut.get(), K, N);
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    std::vector<float> out(16 * N);
    dOut.download(out.data(), out.size());
    double worst = 0;
    for (int r = 0; r < 16; ++r)
      for (int n = 0; n < N; ++n) {
        double ref = 0, mag = 0;
        for (int k = 0; k < K; ++k) {
          const double p = static_cast<double>(cuda::bf16_to_float(X[r * K + k])) * cuda::bf16_to_float(W[static_cast<size_t>(k) * N + n]);
          ref += p;
          mag += std::fabs(p);
        }
        worst = std::max(worst, std::fabs(out[r * N + n] - ref) / (1e-30 + mag));
      }
    *detail = "mma.m16n8k16 bf16 probe: worst relative error " + std::to_string(worst);
    return worst <= 2e-6 * K;
  } catch (const std::exception& e) {
    *detail = std::string("mma probe failed: ") + e.what();
    return false;
  }
}

Backend* cuda_backend() {
  static CudaBackend backend;
  return &backend;
}

}  // namespace saekit
