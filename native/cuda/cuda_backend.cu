// CUDA backend shell: device discovery and the Backend entry point. The fused encode and
// sparse decode kernels are a later milestone (see the project's CUDA issue); until they land,
// load() reports that clearly and `--device auto` keeps choosing the CPU backend.
//
// cudart is linked statically and opens libcuda.so.1 lazily, so this file loads on machines
// without a driver; every failure of the first CUDA call means "no usable GPU".
#include <cuda_runtime.h>

#include <string>

#include "../backend.h"
#include "kernels/decode.cuh"       // compiled for sm_80/sm_90 here and run under emulation in CI
#include "kernels/encode_threshold.cuh"
#include "kernels/encode_topk.cuh"  // (the backend does not launch them yet)
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

class CudaBackend final : public Backend {
 public:
  Capabilities capabilities() const override {
    static const DeviceProbe p = probe();
    Capabilities c;
    c.name = "cuda";
    c.available = false;  // kernels not implemented yet: never picked by "auto"
    c.detail = p.ok ? p.detail + "; CUDA kernels are not implemented in this version" : p.detail;
    return c;
  }

  std::unique_ptr<BackendModel> load(const SaeSpec&, const SaeWeightsView&) override {
    throw Error("CUDA backend: " + capabilities().detail);
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
