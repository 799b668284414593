// CUDA backend: device discovery, a self-test, the model (cuda_model.h: the tensor-core screen
// and fp32 kernels of kernels/*.cuh, the same source CI runs under CPU emulation) and the GPU
// check's benchmark. The backend is available when a device answers and the self-test passes
// on it (the mma fragment probe, then CPU parity on a small random SAE of each architecture):
// `--device auto` then picks it. SAEKIT_CUDA=0 turns it off.
//
// cudart is linked statically and opens libcuda.so.1 lazily, so this file loads on machines
// without a driver; every failure of the first CUDA call means "no usable GPU".
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <cstdlib>
#include <string>
#include <vector>

#include "../backend.h"
#include "cuda_model.h"
#include "cuda_trainer.h"
#include "cuda_probes.h"
#include "kernels/mma.cuh"
#include "parity.h"
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

bool cuda_disabled() {
  const char* v = std::getenv("SAEKIT_CUDA");
  return v != nullptr && std::string(v) == "0";
}

/**
 * The first use on a device: the fragment-layout probe, then the model against the CPU backend
 * on small random SAEs (top-k through the tensor-core screen, top-k with k > 64 through the
 * fp32 kernel, standard, jumprelu). A device whose results differ is not used.
 */
DeviceProbe self_test(const DeviceProbe& device) {
  DeviceProbe p = device;
  const char* skip = std::getenv("SAEKIT_CUDA_SELF_TEST");
  if (skip != nullptr && std::string(skip) == "0") {  // the GPU check runs its own, larger parity
    p.detail = device.detail + "; self-test skipped (SAEKIT_CUDA_SELF_TEST=0)";
    return p;
  }
  std::string detail;
  if (!cuda_mma_probe(&detail)) {
    p.ok = false;
    p.detail = device.detail + "; self-test failed, not used: " + detail;
    return p;
  }
  std::mt19937 rng(20261125u);
  const parity::Case cases[] = {{"topk screened", Activation::TopK, 300, 96, 1000, 32},
                                {"topk fp32", Activation::TopK, 40, 50, 400, 100},
                                {"standard", Activation::Standard, 40, 33, 300, 0},
                                {"jumprelu", Activation::JumpReLU, 40, 33, 300, 0}};
  for (const parity::Case& c : cases) {
    std::string why;
    if (!parity::check_case(c, rng, [](const SaeSpec& s, const SaeWeightsView& v) { return std::unique_ptr<BackendModel>(new CudaModel(s, v)); }, &why)) {
      p.ok = false;
      p.detail = device.detail + "; self-test failed, not used: " + c.name + ": " + why;
      return p;
    }
  }
  p.detail = device.detail + "; self-test passed";
  return p;
}

class CudaBackend final : public Backend {
 public:
  Capabilities capabilities() const override {
    Capabilities c;
    c.name = "cuda";
    if (cuda_disabled()) {
      c.available = false;
      c.detail = "turned off by SAEKIT_CUDA=0";
      return c;
    }
    static const DeviceProbe p = [] {
      const DeviceProbe d = probe();
      return d.ok ? self_test(d) : d;
    }();
    c.available = p.ok;
    c.detail = p.detail;
    return c;
  }

  std::unique_ptr<BackendModel> load(const SaeSpec& spec, const SaeWeightsView& weights) override {
    const Capabilities c = capabilities();
    if (!c.available) throw Error("CUDA backend: " + c.detail);
    return std::make_unique<CudaModel>(spec, weights);
  }

  // topk, batchtopk, standard and jumprelu SAEs train on the GPU (cuda_trainer.h); transcoders
  // and matryoshka are refused there by name. Without a usable GPU this says why, as load() does.
  std::unique_ptr<BackendTrainer> trainer(const TrainSpec& spec, const TrainParamsView& init) override {
    const Capabilities c = capabilities();
    if (!c.available) throw Error("CUDA backend: " + c.detail + "; train with device 'cpu'");
    return std::make_unique<CudaTrainer>(spec, init);
  }

  // Device 'auto' trains here only when the device is usable and the trainer's self-test
  // (cuda_trainer.h, every architecture against the CPU trainer) passed; run once, on first ask.
  Capabilities training() override {
    Capabilities c = capabilities();
    if (!c.available) return c;
    static const std::string failure = trainer_self_test([](const TrainSpec& s, const TrainParamsView& v) { return std::unique_ptr<BackendTrainer>(new CudaTrainer(s, v)); });
    c.available = failure.empty();
    c.detail = failure.empty() ? "trainer self-test passed (topk, batchtopk, standard, jumprelu against the CPU trainer)"
                               : "trainer self-test failed, training stays on the CPU: " + failure;
    return c;
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
    DeviceBuffer<float> dOut;
    dOut.resize(16 * N);
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

namespace {

/** Milliseconds per call of FN on STREAM (cudaEvents), after one warm-up call. */
template <class Fn>
double time_on_stream(cudaStream_t stream, int reps, Fn fn) {
  fn();
  cudaEvent_t e0, e1;
  SAEKIT_CUDA_CHECK(cudaEventCreate(&e0));
  SAEKIT_CUDA_CHECK(cudaEventCreate(&e1));
  SAEKIT_CUDA_CHECK(cudaEventRecord(e0, stream));
  for (int r = 0; r < reps; ++r) fn();
  SAEKIT_CUDA_CHECK(cudaEventRecord(e1, stream));
  SAEKIT_CUDA_CHECK(cudaEventSynchronize(e1));
  float ms = 0;
  SAEKIT_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return ms / reps;
}

/** Fast fill of N floats with ~N(0, sigma^2)-like values (sum of uniforms) from SEED. */
void fill_random(std::vector<float>& v, float sigma, uint64_t seed) {
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& e : v) {
    float acc = 0.f;
    for (int i = 0; i < 4; ++i) {
      s ^= s << 13, s ^= s >> 7, s ^= s << 17;
      acc += static_cast<float>(s >> 40) / 16777216.0f - 0.5f;
    }
    e = acc * 1.7320508f * sigma;  // variance of 4 uniforms(-0.5, 0.5) is 1/3
  }
}

}  // namespace

CudaBenchResult cuda_benchmark(const CudaBenchShape& shape, unsigned seed) {
  CudaBenchResult res;
  res.device = probe().detail;
  const int64_t din = shape.d_in, dsae = shape.d_sae;
  std::vector<float> W_enc(static_cast<size_t>(din * dsae)), W_dec(static_cast<size_t>(din * dsae)), b_enc(dsae), b_dec(din);
  fill_random(W_enc, 1.f / std::sqrt(static_cast<float>(din)), seed);
  fill_random(W_dec, 1.f / std::sqrt(static_cast<float>(din)), seed + 1);
  fill_random(b_enc, 0.05f, seed + 2);
  fill_random(b_dec, 0.1f, seed + 3);
  SaeSpec spec;
  spec.d_in = din;
  spec.d_sae = dsae;
  spec.k = shape.k;
  CudaModel model(spec, SaeWeightsView{W_enc.data(), false, b_enc.data(), W_dec.data(), b_dec.data(), nullptr});
  W_enc = std::vector<float>();
  W_dec = std::vector<float>();
  std::vector<float> x(static_cast<size_t>(shape.rows * din));
  fill_random(x, 1.f, seed + 4);
  res.screened = model.screened();

  // Kernels alone on one device-resident chunk, scaled to all rows.
  const int n = model.bench_stage(x.data(), shape.rows);
  const double per_chunk = time_on_stream(model.bench_stream(), 5, [&] { model.bench_encode_kernels(); });
  res.encode_ms = per_chunk * static_cast<double>(shape.rows) / n;
  model.bench_screen_stats(&res.candidates_per_row, &res.overflow_rate);

  // Host to host through the backend interface (staging, async copies, CSR assembly).
  SparseCodes codes;
  model.encode(x.data(), shape.rows, &codes);
  auto t0 = std::chrono::steady_clock::now();
  model.encode(x.data(), shape.rows, &codes);
  res.encode_host_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();

  // Decode kernel on device-resident codes.
  const SparseCodesView view{shape.rows, codes.indptr.data(), codes.indices.data(), codes.values.data(), nullptr, nullptr};
  const int nd = model.bench_stage_codes(view);
  const double dec_chunk = time_on_stream(model.bench_stream(), 5, [&] { model.bench_decode_kernel(); });
  res.decode_ms = dec_chunk * static_cast<double>(shape.rows) / nd;
  res.decode_bytes = (static_cast<double>(codes.indices.size()) * din * 4 + static_cast<double>(shape.rows) * din * 4) ;

  // Probes: the mma.sync peak and a device-to-device copy, in the same run.
  {
    cudaDeviceProp prop{};
    SAEKIT_CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    const int blocks = prop.multiProcessorCount * 8, threads = 128, iters = 4096;
    DeviceBuffer<float> sink;
    sink.resize(static_cast<size_t>(blocks) * threads);
    const double ms = time_on_stream(nullptr, 3, [&] {
      cuda::mma_peak_kernel<<<blocks, threads>>>(sink.get(), iters);
      SAEKIT_CUDA_CHECK(cudaGetLastError());
    });
    res.mma_peak_tflops = static_cast<double>(blocks) * (threads / 32) * iters * 8 * 4096.0 / (ms * 1e-3) / 1e12;
  }
  {
    const size_t bytes = size_t{1} << 30;
    DeviceBuffer<char> a, b;
    a.resize(bytes);
    b.resize(bytes);
    SAEKIT_CUDA_CHECK(cudaMemset(a.get(), 1, bytes));
    const double ms = time_on_stream(nullptr, 5, [&] { SAEKIT_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, nullptr)); });
    res.copy_gbs = 2.0 * bytes / (ms * 1e-3) / 1e9;
  }
  return res;
}

Backend* cuda_backend() {
  static CudaBackend backend;
  return &backend;
}

}  // namespace saekit
