// The GPU check, for a machine with an NVIDIA GPU (built with the addon wherever nvcc exists;
// needs no Node.js): CPU vs CUDA parity through the backend interface on fresh random data at
// awkward and real shapes, every architecture, then timings against a device-to-device copy
// probe measured in the same run. Prints a markdown report; writes it to argv[1] when given.
//
//   build/saekit_gpu_check bench/RESULTS.md [seed]
//
// Exit status: 0 all parity checks passed, 1 a mismatch, 2 no usable CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "../backend.h"
#include "cuda_probes.h"
#include "parity.h"

using namespace saekit;
using parity::Case;
using parity::Weights;
using parity::random_weights;

namespace {

std::ostringstream report;
int failures = 0;

void line(const std::string& s) {
  std::printf("%s\n", s.c_str());
  report << s << "\n";
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  setenv("SAEKIT_CUDA", "1", 1);
  const unsigned seed = argc > 2 ? static_cast<unsigned>(std::strtoul(argv[2], nullptr, 10)) : static_cast<unsigned>(std::random_device{}());
  Backend* gpu = cuda_backend();
  const Capabilities cap = gpu ? gpu->capabilities() : Capabilities{};
  line("# saekit GPU check");
  line("");
  line("device: " + cap.detail + "; seed " + std::to_string(seed));
  if (!gpu || !cap.available) {
    line("no usable CUDA device");
    return 2;
  }
  std::mt19937 rng(seed);
  {
    std::string detail;
    const bool ok = cuda_mma_probe(&detail);
    if (!ok) ++failures;
    line("");
    line(std::string(ok ? "- ok   " : "- FAIL ") + detail + " (the fragment layout the CPU emulation assumes)");
  }
  std::vector<Case> cases = parity::small_cases();
  cases.push_back({"topk gpt2-ish", Activation::TopK, 300, 768, 4096, 32});
  cases.push_back({"jumprelu wide", Activation::JumpReLU, 64, 256, 2048, 0});
  line("");
  line("## parity with the CPU backend");
  for (const Case& c : cases) {
    std::string why;
    const bool ok = parity::check_case(c, rng, [&](const SaeSpec& s, const SaeWeightsView& v) { return gpu->load(s, v); }, &why);
    if (!ok) ++failures;
    line(std::string(ok ? "- ok   " : "- FAIL ") + c.name + " (rows " + std::to_string(c.rows) + ", d_in " + std::to_string(c.d_in) + ", d_sae " +
         std::to_string(c.d_sae) + (c.k ? ", k " + std::to_string(c.k) : "") + ")" + (ok ? "" : ": " + why));
  }

  // Timings at the GPT-2-small shape, with a device-to-device copy probe in the same run.
  line("");
  line("## timings (d_in 768, d_sae 24576, k 32, 4096 rows)");
  try {
    const Case c{"gpt2", Activation::TopK, 4096, 768, 24576, 32};
    Weights w = random_weights(rng, c);
    SaeSpec spec;
    spec.d_in = c.d_in;
    spec.d_sae = c.d_sae;
    spec.k = c.k;
    SaeWeightsView view{w.W_enc.data(), false, w.b_enc.data(), w.W_dec.data(), w.b_dec.data(), nullptr};
    auto model = gpu->load(spec, view);
    std::vector<float> x(c.rows * c.d_in);
    std::normal_distribution<float> n(0.f, 1.f);
    for (auto& v : x) v = n(rng);
    SparseCodes codes;
    model->encode(x.data(), c.rows, &codes);  // warm-up
    auto t0 = std::chrono::steady_clock::now();
    const int reps = 3;
    for (int r = 0; r < reps; ++r) model->encode(x.data(), c.rows, &codes);
    const double enc_s = seconds_since(t0) / reps;
    std::vector<float> y(c.rows * c.d_in);
    SparseCodesView v{c.rows, codes.indptr.data(), codes.indices.data(), codes.values.data(), nullptr, nullptr};
    t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) model->decode(v, y.data());
    const double dec_s = seconds_since(t0) / reps;
    // Device-to-device copy bandwidth (read + write bytes).
    const size_t bytes = size_t{1} << 30;
    void *p = nullptr, *q = nullptr;
    double copy_gbs = 0;
    if (cudaMalloc(&p, bytes) == cudaSuccess && cudaMalloc(&q, bytes) == cudaSuccess) {
      cudaMemcpy(q, p, bytes, cudaMemcpyDeviceToDevice);
      cudaDeviceSynchronize();
      t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < 5; ++r) cudaMemcpy(q, p, bytes, cudaMemcpyDeviceToDevice);
      cudaDeviceSynchronize();
      copy_gbs = 2.0 * bytes * 5 / seconds_since(t0) / 1e9;
    }
    cudaFree(p);
    cudaFree(q);
    const double flop = 2.0 * c.rows * c.d_in * c.d_sae;
    const double dec_bytes = static_cast<double>(codes.indices.size()) * c.d_in * 4 + static_cast<double>(c.rows) * c.d_in * 4;
    line("| measure | value | note |");
    line("|---|---|---|");
    line("| encode (fp32 baseline kernel, host to host) | " + std::to_string(static_cast<long>(c.rows / enc_s)) + " tokens/s, " +
         std::to_string(flop / enc_s / 1e12) + " TFLOP/s | includes host copies |");
    line("| decode (host to host) | " + std::to_string(dec_bytes / dec_s / 1e9) + " GB/s | " + std::to_string(copy_gbs > 0 ? dec_bytes / dec_s / 1e9 / copy_gbs : 0) +
         " of the D2D copy |");
    line("| device-to-device copy probe | " + std::to_string(copy_gbs) + " GB/s | same run |");
  } catch (const std::exception& e) {
    line(std::string("timings failed: ") + e.what());
    ++failures;
  }
  line("");
  line(failures == 0 ? "all parity checks passed" : std::to_string(failures) + " FAILED");
  if (argc > 1) {
    std::ofstream f(argv[1]);
    f << report.str();
  }
  return failures == 0 ? 0 : 1;
}
