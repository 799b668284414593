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

Backend* cuda_backend() {
  static CudaBackend backend;
  return &backend;
}

}  // namespace saekit
