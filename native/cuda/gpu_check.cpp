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

using namespace saekit;

namespace {

std::ostringstream report;
int failures = 0;

void line(const std::string& s) {
  std::printf("%s\n", s.c_str());
  report << s << "\n";
}

struct Case {
  const char* name;
  Activation act;
  int64_t rows, d_in, d_sae, k;
};

struct Weights {
  std::vector<float> W_enc, b_enc, W_dec, b_dec, threshold;
};

Weights random_weights(std::mt19937& rng, const Case& c) {
  std::normal_distribution<float> n(0.f, 1.f);
  Weights w;
  w.W_enc.resize(c.d_in * c.d_sae);
  w.W_dec.resize(c.d_sae * c.d_in);
  w.b_enc.resize(c.d_sae);
  w.b_dec.resize(c.d_in);
  w.threshold.resize(c.d_sae);
  const float s = 1.f / std::sqrt(static_cast<float>(c.d_in));
  for (auto& v : w.W_enc) v = n(rng) * s;
  for (auto& v : w.W_dec) v = n(rng) * s;
  for (auto& v : w.b_enc) v = n(rng) * 0.1f - 0.05f;
  for (auto& v : w.b_dec) v = n(rng) * 0.1f;
  for (auto& v : w.threshold) v = std::fabs(n(rng)) * 0.3f;
  return w;
}

/** Per row: the two codes agree except between values within TOL of the row's cut. */
bool same_codes(const SparseCodes& a, const SparseCodes& b, int64_t rows, float tol, std::string* why) {
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<std::pair<int, float>> ra, rb;
    for (uint32_t e = a.indptr[r]; e < a.indptr[r + 1]; ++e) ra.push_back({a.indices[e], a.values[e]});
    for (uint32_t e = b.indptr[r]; e < b.indptr[r + 1]; ++e) rb.push_back({b.indices[e], b.values[e]});
    float cut = INFINITY;
    for (auto& p : ra) cut = std::min(cut, p.second);
    for (auto& p : rb) cut = std::min(cut, p.second);
    size_t i = 0, j = 0;
    while (i < ra.size() || j < rb.size()) {
      if (i < ra.size() && j < rb.size() && ra[i].first == rb[j].first) {
        if (std::fabs(ra[i].second - rb[j].second) > tol) {
          *why = "row " + std::to_string(r) + " latent " + std::to_string(ra[i].first) + " values differ";
          return false;
        }
        ++i, ++j;
      } else if (j >= rb.size() || (i < ra.size() && ra[i].first < rb[j].first)) {
        if (ra[i].second > cut + tol && ra[i].second > tol) {
          *why = "row " + std::to_string(r) + " latent " + std::to_string(ra[i].first) + " only on the CPU";
          return false;
        }
        ++i;
      } else {
        if (rb[j].second > cut + tol && rb[j].second > tol) {
          *why = "row " + std::to_string(r) + " latent " + std::to_string(rb[j].first) + " only on the GPU";
          return false;
        }
        ++j;
      }
    }
  }
  return true;
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
  const Case cases[] = {
      {"topk 1 row", Activation::TopK, 1, 64, 96, 8},          {"topk odd, k=1", Activation::TopK, 7, 33, 70, 1},
      {"topk k=d_sae", Activation::TopK, 5, 17, 45, 45},      {"topk gpt2-ish", Activation::TopK, 300, 768, 4096, 32},
      {"standard odd", Activation::Standard, 9, 33, 100, 0},  {"jumprelu odd", Activation::JumpReLU, 9, 33, 100, 0},
      {"jumprelu wide", Activation::JumpReLU, 64, 256, 2048, 0},
  };
  line("");
  line("## parity with the CPU backend");
  for (const Case& c : cases) {
    Weights w = random_weights(rng, c);
    SaeSpec spec;
    spec.d_in = c.d_in;
    spec.d_sae = c.d_sae;
    spec.k = c.k;
    spec.activation = c.act;
    SaeWeightsView view{w.W_enc.data(), false, w.b_enc.data(), w.W_dec.data(), w.b_dec.data(), c.act == Activation::JumpReLU ? w.threshold.data() : nullptr};
    std::normal_distribution<float> n(0.f, 1.f);
    std::vector<float> x(c.rows * c.d_in);
    for (auto& v : x) v = n(rng);
    std::string why;
    bool ok = true;
    try {
      auto cpu_model = cpu_backend().load(spec, view);
      auto gpu_model = gpu->load(spec, view);
      SparseCodes a, b;
      cpu_model->encode(x.data(), c.rows, &a);
      b.indptr.assign(1, 0);
      gpu_model->encode(x.data(), c.rows, &b);
      ok = same_codes(a, b, c.rows, 1e-4f, &why);
      if (ok) {
        std::vector<float> ya(c.rows * c.d_in, NAN), yb(c.rows * c.d_in, NAN);
        SparseCodesView v{c.rows, a.indptr.data(), a.indices.data(), a.values.data(), nullptr, nullptr};
        cpu_model->decode(v, ya.data());
        gpu_model->decode(v, yb.data());
        for (size_t i = 0; i < ya.size() && ok; ++i)
          if (!(std::fabs(ya[i] - yb[i]) <= 1e-4f * (1.f + std::fabs(ya[i])))) ok = false, why = "decode differs at " + std::to_string(i);
      }
    } catch (const std::exception& e) {
      ok = false;
      why = e.what();
    }
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
