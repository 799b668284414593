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


/** Each architecture's options as the emulated tests use them (native/cuda/emu/train_emu_test.cpp). */
void arch_options(TrainArch arch, TrainStepOptions* o) {
  if (arch == TrainArch::Standard) o->l1_coeff = 0.5;
  if (arch == TrainArch::JumpReLU) o->l0_coeff = 0.05, o->bandwidth = 0.2;
}

/** Issue 20: the CUDA trainer against the CPU trainer (3 steps from one state, AuxK on for topk/batchtopk) at SHAPE; returns false on a mismatch. */
bool train_parity(Backend* gpu, std::mt19937& rng, int B, int d, int L, int k, int k_aux, int n_dead, TrainArch arch = TrainArch::TopK) {
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> W_dec(static_cast<size_t>(L) * d), W_enc(W_dec.size()), b_enc(L), b_dec(d);
  for (auto& v : W_dec) v = nd(rng);
  for (int j = 0; j < L; ++j) {
    double s = 0;
    for (int c = 0; c < d; ++c) s += double{W_dec[static_cast<size_t>(j) * d + c]} * W_dec[static_cast<size_t>(j) * d + c];
    for (int c = 0; c < d; ++c) W_dec[static_cast<size_t>(j) * d + c] = static_cast<float>(W_dec[static_cast<size_t>(j) * d + c] / std::sqrt(s));
    for (int c = 0; c < d; ++c) W_enc[static_cast<size_t>(c) * L + j] = W_dec[static_cast<size_t>(j) * d + c];
  }
  for (auto& v : b_enc) v = 0.05f * nd(rng);
  for (auto& v : b_dec) v = 0.1f * nd(rng);
  std::vector<float> log_threshold(L);
  for (auto& v : log_threshold) v = std::log(0.3f) + 0.3f * nd(rng);  // thresholds where pre-activations are dense
  TrainSpec spec;
  spec.d_in = d, spec.d_sae = L, spec.k = k, spec.k_aux = k_aux, spec.arch = arch;
  TrainParamsView view;
  view.W_enc = W_enc.data(), view.b_enc = b_enc.data(), view.W_dec = W_dec.data(), view.b_dec = b_dec.data();
  if (arch == TrainArch::JumpReLU) view.log_threshold = log_threshold.data();
  std::string why;
  double worst_g = 0, worst_p = 0;
  bool same = true;
  try {
    auto cpu = cpu_backend().trainer(spec, view);
    auto cu = gpu->trainer(spec, view);
    std::vector<double> since(L, 0.0);
    for (int q = 0; q < n_dead; ++q) since[(static_cast<int64_t>(q) * 7 + 3) % L] = 1e9;
    cpu->set_state("since_fired", since.data());
    cu->set_state("since_fired", since.data());
    TrainStepOptions o;
    o.lr = 1e-3, o.aux_coeff = 1.0 / 32, o.dead_tokens = 1e6;
    arch_options(arch, &o);
    std::vector<float> x(static_cast<size_t>(B) * d);
    for (int s = 1; s <= 3; ++s) {
      for (auto& v : x) v = nd(rng);
      o.t = s;
      cpu->step(x.data(), nullptr, B, o);
      cu->step(x.data(), nullptr, B, o);
      for (bool aux : {false, true}) {
        std::vector<uint32_t> pa, pb;
        std::vector<int32_t> ia, ib;
        cpu->last_selection(&pa, &ia, aux);
        cu->last_selection(&pb, &ib, aux);
        same = same && pa == pb && ia == ib;
      }
      for (const char* n : {"W_enc", "b_enc", "W_dec", "b_dec", "log_threshold"}) {
        const int64_t size = cpu->state_size(n);
        std::vector<float> a(size), b(size), ga(size), gb(size);
        cpu->get_state(n, a.data()), cu->get_state(n, b.data());
        cpu->get_state(std::string("grad.") + n, ga.data()), cu->get_state(std::string("grad.") + n, gb.data());
        double scale = 0, err = 0;
        for (int64_t i = 0; i < size; ++i) {
          worst_p = std::max(worst_p, std::fabs(double{a[i]} - b[i]) / o.lr);
          scale = std::max(scale, std::fabs(double{ga[i]}));
          err = std::max(err, std::fabs(double{ga[i]} - gb[i]));
        }
        worst_g = std::max(worst_g, err / (scale + 1e-30));
      }
    }
  } catch (const std::exception& e) {
    why = e.what();
  }
  // fp32 sums in other orders: see native/cuda/emu/train_emu_test.cpp for the tolerances. At
  // real shapes a near tie at the k-th value may legitimately pick another latent: reported.
  const bool ok = why.empty() && worst_g <= 1e-3 && worst_p <= 5e-2;
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s, %d rows, d_in %d, d_sae %d, k %d, k_aux %d, %d dead, 3 steps: selections %s, grads %.2e, params %.2e lr", train_arch_name(arch), B, d, L,
                k, k_aux, n_dead, same ? "identical" : "differ", worst_g, worst_p);
  line(std::string(ok ? "- ok   CUDA trainer vs CPU trainer: " : "- FAIL CUDA trainer vs CPU trainer: ") + buf + (why.empty() ? "" : ": " + why));
  return ok;
}

/**
 * Milliseconds per CUDA training step at SHAPE (random data, AuxK off), after one warm-up step;
 * with PHASES, a second trainer made under SAEKIT_TRAIN_PROFILE reports where 3 steps' time went
 * (it synchronizes at each phase, so its total runs a little above the unprofiled step).
 */
double train_step_ms(Backend* gpu, int B, int d, int L, int k, TrainArch arch = TrainArch::TopK, std::string* phases = nullptr) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.f, 1.f);
  std::vector<float> W(static_cast<size_t>(L) * d), b_enc(L, 0.f), b_dec(d, 0.f), x(static_cast<size_t>(B) * d);
  for (auto& v : W) v = nd(rng) / std::sqrt(static_cast<float>(d));
  for (auto& v : x) v = nd(rng);
  TrainSpec spec;
  spec.d_in = d, spec.d_sae = L, spec.k = k, spec.k_aux = d / 2, spec.arch = arch;
  std::vector<float> log_threshold(L, std::log(0.3f));
  TrainParamsView view;
  view.W_enc = W.data(), view.b_enc = b_enc.data(), view.W_dec = W.data(), view.b_dec = b_dec.data();  // any [L*d] values will do for a timing
  view.log_threshold = log_threshold.data();
  TrainStepOptions o;
  o.lr = 1e-4;
  arch_options(arch, &o);
  double ms = 0;
  {
    auto t = gpu->trainer(spec, view);
    o.t = 1;
    t->step(x.data(), nullptr, B, o);
    const int reps = 5;
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) o.t = 2 + r, t->step(x.data(), nullptr, B, o);
    ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / reps;
  }
  if (phases != nullptr) {
    setenv("SAEKIT_TRAIN_PROFILE", "1", 1);
    auto t = gpu->trainer(spec, view);
    unsetenv("SAEKIT_TRAIN_PROFILE");
    for (int r = 0; r < 3; ++r) o.t = 1 + r, t->step(x.data(), nullptr, B, o);
    *phases = t->phase_report();
  }
  return ms;
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
  // Issue 20: the CUDA trainer against the CPU trainer, every architecture, then step times
  // and where the topk step's time goes.
  line("");
  line("## training (CUDA trainer: topk, batchtopk, standard, jumprelu)");
  line("");
  if (!train_parity(gpu, rng, 1, 45, 37, 1, 4, 5)) ++failures;
  if (!train_parity(gpu, rng, 19, 33, 101, 7, 16, 23)) ++failures;
  if (!train_parity(gpu, rng, 300, 768, 4096, 32, 384, 200)) ++failures;
  for (TrainArch a : {TrainArch::BatchTopK, TrainArch::Standard, TrainArch::JumpReLU}) {
    if (!train_parity(gpu, rng, 19, 33, 101, 7, 16, 23, a)) ++failures;
    if (!train_parity(gpu, rng, 300, 768, 4096, 32, 384, 200, a)) ++failures;
  }
  try {
    std::string phases;
    const double ms = train_step_ms(gpu, 4096, 768, 24576, 32, TrainArch::TopK, &phases);
    char buf[200];
    std::snprintf(buf, sizeof buf, "- step at d_in 768, d_sae 24576, k 32, batch 4096 (no dead latents): %.2f ms, %.0f tokens/s (bench/NOTES.md predicted 120k-270k)", ms,
                  4096 / (ms * 1e-3));
    line(buf);
    line("- topk step phases (3 profiled steps): " + phases);
    for (TrainArch a : {TrainArch::BatchTopK, TrainArch::JumpReLU}) {
      const double m = train_step_ms(gpu, 4096, 768, 24576, 32, a);
      std::snprintf(buf, sizeof buf, "- %s step at the same shape: %.2f ms, %.0f tokens/s", train_arch_name(a), m, 4096 / (m * 1e-3));
      line(buf);
    }
  } catch (const std::exception& e) {
    line(std::string("- FAIL training step timing: ") + e.what());
    ++failures;
  }
  line("");
  line(failures == 0 ? "all parity checks passed" : std::to_string(failures) + " FAILED");
  save(argc > 1 ? argv[1] : nullptr);
  return failures == 0 ? 0 : 1;
}
