#include "kernel_choice.h"

#include <cpuid.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>
#include <sstream>

#ifndef SAEKIT_VERSION
#define SAEKIT_VERSION "dev"
#endif

namespace saekit::cpu {

BatchClass batch_class(int64_t rows) { return rows <= 256 ? BatchClass::Small : BatchClass::Large; }

const char* batch_class_name(BatchClass c) { return c == BatchClass::Small ? "rows<=256" : "rows>256"; }

const std::string& cpu_model_string() {
  static const std::string model = [] {
    unsigned regs[12] = {};
    std::string brand;
    if (__get_cpuid_max(0x80000000u, nullptr) >= 0x80000004u) {
      for (unsigned i = 0; i < 3; ++i) __cpuid(0x80000002u + i, regs[4 * i], regs[4 * i + 1], regs[4 * i + 2], regs[4 * i + 3]);
      brand.assign(reinterpret_cast<const char*>(regs), 48);
      brand = brand.c_str();  // up to the first NUL
      const auto b = brand.find_first_not_of(' '), e = brand.find_last_not_of(' ');
      brand = b == std::string::npos ? "" : brand.substr(b, e - b + 1);
    }
    unsigned a = 0, bx = 0, c = 0, d = 0;
    __cpuid(1, a, bx, c, d);
    const unsigned family = ((a >> 8) & 0xF) + (((a >> 8) & 0xF) == 0xF ? (a >> 20) & 0xFF : 0);
    const unsigned model = ((a >> 4) & 0xF) | (((a >> 8) & 0xF) >= 6 ? ((a >> 16) & 0xF) << 4 : 0);
    return (brand.empty() ? std::string("unknown x86") : brand) + " (family " + std::to_string(family) + " model " +
           std::to_string(model) + " stepping " + std::to_string(a & 0xF) + ")";
  }();
  return model;
}

std::string choice_key(const SaeSpec& spec, BatchClass c, bool bf16_weights, int threads) {
  std::string sel = spec.activation == Activation::TopK       ? "topk k=" + std::to_string(spec.k)
                    : spec.activation == Activation::JumpReLU ? std::string("jumprelu")
                                                              : std::string("relu");
  return std::string("saekit ") + SAEKIT_VERSION + " | " + cpu_model_string() + " | threads " + std::to_string(threads) +
         " | d_in " + std::to_string(spec.d_in) + " d_sae " + std::to_string(spec.d_sae) + " " + sel + " | " +
         batch_class_name(c) + " | " + (bf16_weights ? "bf16 weights" : "f32 weights");
}

int64_t calibration_rows(const SaeSpec& spec, int64_t rows) {
  if (batch_class(rows) == BatchClass::Small) return rows;
  const double flops_per_row = 2.0 * static_cast<double>(spec.d_in) * static_cast<double>(spec.d_sae);
  const int64_t budget = static_cast<int64_t>(2e10 / std::max(1.0, flops_per_row));
  return std::min(rows, std::max<int64_t>(257, std::min<int64_t>(1024, budget)));
}

KernelDecision measure_kernels(const std::vector<Screen>& candidates, int64_t sample_rows,
                               const std::function<double(Screen)>& run) {
  using Clock = std::chrono::steady_clock;
  KernelDecision d;
  d.how = "measured";
  d.sample_rows = sample_rows;
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> best(candidates.size(), inf);
  std::vector<bool> live(candidates.size(), true);
  // One measurement: repeat the encode until >= 5 ms have passed, seconds per encode.
  // SAEKIT_KERNEL_TRACE=1: every measurement on stderr.
  const char* trace_env = std::getenv("SAEKIT_KERNEL_TRACE");
  const bool trace = trace_env != nullptr && std::string(trace_env) == "1";
  auto measure = [&](Screen s) {
    const auto t0 = Clock::now();
    int n = 0;
    double elapsed = 0;
    do {
      if (run(s) < 0) return -1.0;
      ++n;
      elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
    } while (elapsed < 0.005 && n < 64);
    if (trace) std::fprintf(stderr, "saekit kernel choice: %s %d run(s) of %lld rows, %.3f ms each\n", kernel_name(s), n, static_cast<long long>(sample_rows), 1e3 * elapsed / n);
    return elapsed / n;
  };
  for (size_t i = 0; i < candidates.size(); ++i) {
    const double t = run(candidates[i]);  // warm-up
    if (t < 0) live[i] = false;
    if (trace) std::fprintf(stderr, "saekit kernel choice: %s warm-up %.3f ms\n", kernel_name(candidates[i]), 1e3 * t);
  }
  for (int round = 0; round < 2; ++round) {
    double lead = inf;
    for (size_t i = 0; i < candidates.size(); ++i)
      if (live[i]) lead = std::min(lead, best[i]);
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (!live[i] || (round > 0 && best[i] > 3.0 * lead)) continue;
      const double t = measure(candidates[i]);
      if (t < 0) live[i] = false;
      else best[i] = std::min(best[i], t);
    }
  }
  size_t fp32 = 0, pick = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    if (candidates[i] == Screen::Off) fp32 = i;
    if (live[i] && best[i] < best[pick]) pick = i;
  }
  const double rows = static_cast<double>(std::max<int64_t>(1, sample_rows));
  for (size_t i = 0; i < candidates.size(); ++i)
    d.us_per_row.emplace_back(kernel_name(candidates[i]), live[i] ? best[i] / rows * 1e6 : -1.0);
  char buf[256];
  if (candidates[pick] != Screen::Off && best[pick] > (1.0 - kMinGain) * best[fp32]) {
    std::snprintf(buf, sizeof buf, "fastest screen %s (%.2f us/row) is not %.0f%% faster than fp32 (%.2f us/row)",
                  kernel_name(candidates[pick]), best[pick] / rows * 1e6, kMinGain * 100, best[fp32] / rows * 1e6);
    pick = fp32;
  } else if (candidates[pick] == Screen::Off) {
    std::snprintf(buf, sizeof buf, "fp32 (%.2f us/row) was the fastest of %zu kernels", best[fp32] / rows * 1e6, candidates.size());
  } else {
    std::snprintf(buf, sizeof buf, "%s: %.2f us/row, %.2fx the fp32 kernel's speed (%.2f us/row)", kernel_name(candidates[pick]),
                  best[pick] / rows * 1e6, best[fp32] / best[pick], best[fp32] / rows * 1e6);
  }
  d.kernel = candidates[pick];
  d.why = buf;
  return d;
}

// ---- disk cache ----------------------------------------------------------------------

std::string kernel_cache_path() {
  const char* file = std::getenv("SAEKIT_KERNEL_CACHE");
  if (file != nullptr && *file != 0) return std::string(file) == "0" || std::string(file) == "off" ? "" : file;
  std::string dir;
  if (const char* d = std::getenv("SAEKIT_CACHE_DIR"); d != nullptr && *d != 0) dir = d;
  else if (const char* x = std::getenv("XDG_CACHE_HOME"); x != nullptr && *x != 0) dir = std::string(x) + "/saekit";
  else if (const char* h = std::getenv("HOME"); h != nullptr && *h != 0) dir = std::string(h) + "/.cache/saekit";
  else return "";
  return dir + "/kernel-choice.tsv";
}

namespace {

std::mutex& cache_mutex() {
  static std::mutex m;
  return m;
}

// One decision per line: key, kernel, sample rows, timings (name=us,...), how it was decided
// first, why. Tabs never occur in the fields (keys and sentences are built here).
std::string to_line(const KernelDecision& d) {
  std::string t;
  for (const auto& [name, us] : d.us_per_row) {
    if (!t.empty()) t += ",";
    char b[64];
    std::snprintf(b, sizeof b, "%s=%.4g", name.c_str(), us);
    t += b;
  }
  return d.key + "\t" + kernel_name(d.kernel) + "\t" + std::to_string(d.sample_rows) + "\t" + t + "\t" + d.why;
}

bool from_line(const std::string& line, KernelDecision* d) {
  std::vector<std::string> f;
  std::string cur;
  std::istringstream in(line);
  while (std::getline(in, cur, '\t')) f.push_back(cur);
  if (f.size() != 5) return false;
  d->key = f[0];
  bool found = false;
  for (Screen s : {Screen::Off, Screen::Bf16, Screen::Int8, Screen::Int8x256, Screen::AmxBf16})
    if (f[1] == kernel_name(s)) d->kernel = s, found = true;
  if (!found) return false;
  d->sample_rows = std::strtoll(f[2].c_str(), nullptr, 10);
  d->us_per_row.clear();
  std::istringstream ts(f[3]);
  while (std::getline(ts, cur, ',')) {
    const auto eq = cur.find('=');
    if (eq != std::string::npos) d->us_per_row.emplace_back(cur.substr(0, eq), std::strtod(cur.c_str() + eq + 1, nullptr));
  }
  d->why = f[4];
  return true;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::vector<std::string> lines;
  std::ifstream in(path);
  std::string line;
  // The file is small; a damaged or huge one is ignored past 4096 lines.
  while (lines.size() < 4096 && std::getline(in, line))
    if (!line.empty()) lines.push_back(line);
  return lines;
}

}  // namespace

bool load_cached_decision(const std::string& key, KernelDecision* out) {
  const std::string path = kernel_cache_path();
  if (path.empty()) return false;
  std::lock_guard<std::mutex> lock(cache_mutex());
  for (const std::string& line : read_lines(path)) {
    KernelDecision d;
    if (!from_line(line, &d) || d.key != key) continue;
    // A kernel this CPU cannot run now (SAEKIT_AMX=0, another VM) is not a decision.
    if (!screen_supported(d.kernel)) return false;
    d.how = "cached (" + path + ")";
    *out = d;
    return true;
  }
  return false;
}

void save_decision(const KernelDecision& d) {
  const std::string path = kernel_cache_path();
  if (path.empty()) return;
  std::lock_guard<std::mutex> lock(cache_mutex());
  const auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    // mkdir -p of the directory (a missing cache dir is normal on a fresh machine).
    const std::string dir = path.substr(0, slash);
    for (size_t pos = 1; pos <= dir.size(); ++pos)
      if (pos == dir.size() || dir[pos] == '/') (void)!::mkdir(dir.substr(0, pos).c_str(), 0755);
  }
  std::vector<std::string> lines = read_lines(path);
  lines.erase(std::remove_if(lines.begin(), lines.end(), [&](const std::string& l) { return l.rfind(d.key + "\t", 0) == 0; }),
              lines.end());
  lines.push_back(to_line(d));
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    if (!out) return;
    for (const auto& l : lines) out << l << "\n";
    if (!out.flush()) {
      std::remove(tmp.c_str());
      return;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) std::remove(tmp.c_str());
}

std::vector<KernelDecision> cached_decisions() {
  std::vector<KernelDecision> out;
  const std::string path = kernel_cache_path();
  if (path.empty()) return out;
  std::lock_guard<std::mutex> lock(cache_mutex());
  for (const std::string& line : read_lines(path)) {
    KernelDecision d;
    if (from_line(line, &d)) {
      d.how = "cached (" + path + ")";
      out.push_back(d);
    }
  }
  return out;
}

namespace {
std::string json_string(const std::string& s) {
  std::string o = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\', o += c;
    else if (static_cast<unsigned char>(c) < 0x20) o += ' ';
    else o += c;
  }
  return o + "\"";
}
}  // namespace

std::string decision_json(const KernelDecision& d) {
  std::string t;
  for (const auto& [name, us] : d.us_per_row) {
    if (!t.empty()) t += ",";
    char b[64];
    std::snprintf(b, sizeof b, "%.6g", us);
    t += json_string(name) + ":" + b;
  }
  return "{\"kernel\":" + json_string(kernel_name(d.kernel)) + ",\"how\":" + json_string(d.how) + ",\"why\":" + json_string(d.why) +
         ",\"key\":" + json_string(d.key) + ",\"sampleRows\":" + std::to_string(d.sample_rows) + ",\"usPerRow\":{" + t + "}}";
}

}  // namespace saekit::cpu
