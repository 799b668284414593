// Runs the CUDA kernels under CPU emulation (cuda_emu.h) against float64 references, at small
// and awkward shapes: the CI check of the GPU kernel source on a machine without a GPU. Also
// checks the emulation's own warp intrinsics on a test kernel. Prints one line per case and
// exits 1 on the first mismatch. Seeded from argv[1] (fresh seed per run from the test).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "../kernels/decode.cuh"

namespace {

int failures = 0;

std::string fmt(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", x);
  return buf;
}

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// A test kernel for the emulated warp intrinsics: butterfly sum, broadcast, ballot.
__global__ void warp_probe_kernel(const int* in, int* sum_out, int* bcast_out, unsigned* ballot_out) {
  const int t = static_cast<int>(threadIdx.x + blockIdx.x * blockDim.x);
  int v = in[t];
  for (int m = 16; m >= 1; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  sum_out[t] = v;
  bcast_out[t] = __shfl_sync(0xffffffffu, in[t], 5);
  ballot_out[t] = __ballot_sync(0xffffffffu, in[t] % 3 == 0);
}

void test_warp_intrinsics(std::mt19937& rng) {
  const int blocks = 2, threads = 96;
  const int n = blocks * threads;
  std::vector<int> in(n), sum(n, -1), bcast(n, -1);
  std::vector<unsigned> ballot(n, 0xdeadbeef);
  for (auto& x : in) x = static_cast<int>(rng() % 1000);
  saekit::emu::launch(saekit::emu::dim3(blocks), saekit::emu::dim3(threads), warp_probe_kernel, in.data(), sum.data(), bcast.data(), ballot.data());
  bool ok = true;
  for (int w = 0; w < n / 32; ++w) {
    int s = 0;
    unsigned b = 0;
    for (int l = 0; l < 32; ++l) {
      s += in[w * 32 + l];
      if (in[w * 32 + l] % 3 == 0) b |= 1u << l;
    }
    for (int l = 0; l < 32; ++l) {
      ok = ok && sum[w * 32 + l] == s && bcast[w * 32 + l] == in[w * 32 + 5] && ballot[w * 32 + l] == b;
    }
  }
  check(ok, "warp intrinsics: __shfl_xor_sync butterfly sum, __shfl_sync broadcast, __ballot_sync (2 blocks x 3 warps)");
}

void test_decode(std::mt19937& rng, int rows, int d_in, int d_sae, int max_nnz, int grid, int block) {
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> W(static_cast<size_t>(d_sae) * d_in), b(d_in);
  for (auto& x : W) x = normal(rng);
  for (auto& x : b) x = normal(rng);
  std::vector<uint32_t> indptr(rows + 1, 0);
  std::vector<int32_t> indices;
  std::vector<float> values;
  for (int r = 0; r < rows; ++r) {
    const int nnz = max_nnz == 0 ? 0 : static_cast<int>(rng() % (max_nnz + 1));
    std::vector<int32_t> picked;
    while (static_cast<int>(picked.size()) < std::min(nnz, d_sae)) {
      const int32_t f = static_cast<int32_t>(rng() % d_sae);
      bool seen = false;
      for (auto p : picked) seen = seen || p == f;
      if (!seen) picked.push_back(f);
    }
    std::sort(picked.begin(), picked.end());
    for (auto f : picked) {
      indices.push_back(f);
      values.push_back(std::fabs(normal(rng)) + 0.01f);
    }
    indptr[r + 1] = static_cast<uint32_t>(indices.size());
  }
  std::vector<float> out(static_cast<size_t>(rows) * d_in, std::nanf(""));  // poisoned
  saekit::emu::launch(saekit::emu::dim3(grid), saekit::emu::dim3(block), saekit::cuda::sparse_decode_kernel, W.data(), b.data(),
                      indptr.data(), indices.data(), values.data(), rows, d_in, out.data());
  double worst = 0;
  for (int r = 0; r < rows; ++r) {
    for (int j = 0; j < d_in; ++j) {
      double ref = b[j];
      double mag = std::fabs(b[j]);
      for (uint32_t e = indptr[r]; e < indptr[r + 1]; ++e) {
        ref += static_cast<double>(values[e]) * W[static_cast<size_t>(indices[e]) * d_in + j];
        mag += std::fabs(static_cast<double>(values[e]) * W[static_cast<size_t>(indices[e]) * d_in + j]);
      }
      const double got = out[static_cast<size_t>(r) * d_in + j];
      const double err = std::isfinite(got) ? std::fabs(got - ref) / (1e-30 + mag) : INFINITY;
      if (err > worst) worst = err;
    }
  }
  // fp32 accumulation of at most max_nnz + 1 terms: relative to the sum of magnitudes.
  const bool ok = worst <= 1e-6 * (max_nnz + 2);
  check(ok, "sparse_decode rows " + std::to_string(rows) + " d_in " + std::to_string(d_in) + " d_sae " + std::to_string(d_sae) + " nnz<=" +
                std::to_string(max_nnz) + " grid " + std::to_string(grid) + " block " + std::to_string(block) + ": worst error " + fmt(worst));
}

}  // namespace

int main(int argc, char** argv) {
  const unsigned seed = argc > 1 ? static_cast<unsigned>(std::strtoul(argv[1], nullptr, 10)) : 1u;
  std::printf("kernel emulation tests, seed %u\n", seed);
  std::mt19937 rng(seed);
  test_warp_intrinsics(rng);
  // Awkward shapes: one row, odd widths (scalar path), d_in < threads, more nonzeros than one
  // shared-memory chunk (64), fewer blocks than rows (grid-stride), empty rows, k = d_sae.
  test_decode(rng, 1, 768, 1000, 32, 1, 128);
  test_decode(rng, 5, 33, 40, 40, 2, 64);
  test_decode(rng, 7, 4, 9, 9, 3, 32);
  test_decode(rng, 3, 1, 5, 5, 3, 32);
  test_decode(rng, 6, 96, 300, 150, 4, 32);
  test_decode(rng, 4, 130, 200, 0, 4, 64);
  test_decode(rng, 9, 2051, 70, 70, 4, 96);
  std::printf("%s\n", failures == 0 ? "all passed" : "FAILED");
  return failures == 0 ? 0 : 1;
}
