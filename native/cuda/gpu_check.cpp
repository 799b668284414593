// The GPU check, for a machine with an NVIDIA GPU (built with the addon wherever nvcc exists;
// needs no Node.js): CPU vs CUDA parity through the backend interface on fresh random data at
// awkward and real shapes, every architecture, then timings at the shapes against an
// mma.sync peak probe and a device-to-device copy measured in the same run. Prints a markdown
// report; writes it to argv[1] when given (and the timings as JSON to argv[1].json, which
// bench/gpu/torch_ref.py reads for the ratio to PyTorch).
//
//   build/saekit_gpu_check bench/RESULTS.md [seed]
//
// Exit status: 0 all parity checks passed, 1 a mismatch, 2 no usable CUDA device.
#include <cuda_runtime.h>

#include <algorithm>
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

/** Writes the report so far to PATH (when given). */
void save(const char* path) {
  if (path == nullptr) return;
  std::ofstream f(path);
  f << report.str();
}

void line(const std::string& s) {
  std::printf("%s\n", s.c_str());
  report << s << "\n";
}


}  // namespace

int main(int argc, char** argv) {
  setenv("SAEKIT_CUDA_SELF_TEST", "0", 1);  // this check runs the parity itself, at more shapes, and reports each
  const unsigned seed = argc > 2 ? static_cast<unsigned>(std::strtoul(argv[2], nullptr, 10)) : static_cast<unsigned>(std::random_device{}());
  Backend* gpu = cuda_backend();
  const Capabilities cap = gpu ? gpu->capabilities() : Capabilities{};
  line("# saekit GPU check");
  line("");
  line("device: " + cap.detail + "; seed " + std::to_string(seed));
  if (!gpu || !cap.available) {
    line("no usable CUDA device");
    save(argc > 1 ? argv[1] : nullptr);
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
  cases.push_back({"topk k=64, two row tiles, partial latent tile", Activation::TopK, 257, 200, 1000, 64});
  cases.push_back({"topk k=100 (fp32 kernel)", Activation::TopK, 64, 96, 2000, 100});
  cases.push_back({"topk two chunks in flight", Activation::TopK, 9000, 64, 512, 16});
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

  // Timings at the shapes, each with the probes measured in the same run.
  line("");
  line("## timings");
  line("");
  line("Encode: the kernels alone on device-resident rows (prep + tensor-core screen + fp32 rescoring, or the fp32 kernel), as a fraction of the "
       "mma.sync bf16 peak probe; host: the whole Backend encode from host rows to CSR (staging, pinned async copies, CSR assembly). Decode: the "
       "kernel alone, bytes = gathered W_dec rows + output, as a fraction of a device-to-device copy (read + write).");
  line("");
  line("| shape (d_in / d_sae / k, rows) | encode kernels | TFLOP/s | of mma peak | host to host | candidates/row | overflow | decode | of copy | mma peak | copy |");
  line("|---|---|---|---|---|---|---|---|---|---|---|");
  std::ostringstream json;
  json << "[";
  const CudaBenchShape shapes[] = {{65536, 768, 24576, 32}, {65536, 4096, 131072, 64}};
  bool first = true;
  for (const CudaBenchShape& sh : shapes) {
    try {
      const CudaBenchResult r = cuda_benchmark(sh, seed);
      const double flop = 2.0 * sh.rows * sh.d_in * sh.d_sae;
      const double tflops = flop / (r.encode_ms * 1e-3) / 1e12;
      const double dec_gbs = r.decode_bytes / (r.decode_ms * 1e-3) / 1e9;
      char buf[512];
      std::snprintf(buf, sizeof buf, "| %lld / %lld / %lld, %lld | %.0f tok/s%s | %.1f | %.0f%% | %.0f tok/s | %.1f | %.4f | %.0f GB/s | %.0f%% | %.0f TFLOP/s | %.0f GB/s |",
                    static_cast<long long>(sh.d_in), static_cast<long long>(sh.d_sae), static_cast<long long>(sh.k), static_cast<long long>(sh.rows),
                    sh.rows / (r.encode_ms * 1e-3), r.screened ? "" : " (fp32 kernel)", tflops, 100 * tflops / r.mma_peak_tflops,
                    sh.rows / (r.encode_host_ms * 1e-3), r.candidates_per_row, r.overflow_rate, dec_gbs, 100 * dec_gbs / r.copy_gbs, r.mma_peak_tflops, r.copy_gbs);
      line(buf);
      std::snprintf(buf, sizeof buf, "%s{\"rows\":%lld,\"d_in\":%lld,\"d_sae\":%lld,\"k\":%lld,\"encode_ms\":%.6f,\"decode_ms\":%.6f,\"mma_peak_tflops\":%.3f,\"copy_gbs\":%.3f}",
                    first ? "" : ",", static_cast<long long>(sh.rows), static_cast<long long>(sh.d_in), static_cast<long long>(sh.d_sae), static_cast<long long>(sh.k),
                    r.encode_ms, r.decode_ms, r.mma_peak_tflops, r.copy_gbs);
      json << buf;
      first = false;
    } catch (const std::exception& e) {
      line(std::string("| ") + std::to_string(sh.d_in) + " / " + std::to_string(sh.d_sae) + " | failed: " + e.what() + " |");
      ++failures;
    }
  }
  json << "]\n";
  if (argc > 1) {
    std::ofstream j(std::string(argv[1]) + ".json");
    j << json.str();
  }
  line("");
  line(failures == 0 ? "all parity checks passed" : std::to_string(failures) + " FAILED");
  save(argc > 1 ? argv[1] : nullptr);
  return failures == 0 ? 0 : 1;
}
