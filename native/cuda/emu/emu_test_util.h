// The emulated-CUDA test programs' shared harness (kernel_emu_test.cpp, train_emu_test.cpp):
// one output line per case ("ok  " / "FAIL" + what was measured), a failure count for the exit
// status, and the small helpers both need. test/cuda.emu.test.ts parses these lines, so the
// format lives in one place. Flushed per line: a crash (or a sanitizer abort) still shows the
// cases that ran before it.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

namespace saekit::emu_test {

inline int failures = 0;

inline std::string fmt(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", x);
  return buf;
}

inline void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  std::fflush(stdout);
  if (!ok) ++failures;
}

inline std::vector<float> randn(std::mt19937& rng, size_t n, float sigma = 1.f) {
  std::normal_distribution<float> nd(0.f, sigma);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

/** max |a - b| / (max |b| + tiny): the error relative to the tensor's scale. */
template <class A, class B>
double rel_err(const std::vector<A>& a, const std::vector<B>& b) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - static_cast<double>(b[i])));
    scale = std::max(scale, std::fabs(static_cast<double>(b[i])));
  }
  return worst / (scale + 1e-30);
}

}  // namespace saekit::emu_test
