// Which encode kernel an SAE uses on this CPU: decided by timing the kernels this CPU can run
// (isa.h, encode_kernel_candidates: fp32 and each screen) on the SAE's own weights at first
// use, per shape class, and remembered in memory and on disk. This is the one place the
// choice is made: cpuid flags say what CAN run (a CPU may run vdpbf16ps at half the fp32 rate,
// as the AMX Xeon in bench/NOTES.md does); only timing says what is fast.
//
// Shape class: d_in, d_sae, the selection (topk k / jumprelu), the batch size class (small
// batches are bound by streaming W_enc, large ones by arithmetic: their winners differ), and
// whether the weights are exactly bf16 (then the bf16 screens' weight error is zero and they
// admit fewer candidates). Keyed on disk with the saekit version, the CPU (brand string,
// family/model/stepping) and the thread count.
//
// The rule: the fastest measured kernel, but a screen only when it beats fp32 by at least
// kMinGain: noise must not pick a kernel no faster than fp32 (the encode must never end up
// slower than the plain kernel). All kernels give bit-identical codes (screen.h), so the
// choice changes speed only.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../backend.h"
#include "isa.h"

namespace saekit::cpu {

constexpr double kMinGain = 0.03;

enum class BatchClass { Small = 0, Large = 1 };  // rows <= 256 | more
constexpr int kBatchClasses = 2;
BatchClass batch_class(int64_t rows);
const char* batch_class_name(BatchClass c);

struct KernelDecision {
  Screen kernel = Screen::Off;
  std::string how;  // "measured", "cached (file)", "only fp32 runs here"
  std::string why;  // one sentence with the figures
  std::string key;
  int64_t sample_rows = 0;
  std::vector<std::pair<std::string, double>> us_per_row;  // kernel name -> microseconds per row (best run); < 0: could not hold this SAE
};

// The shape-class key (see the top of this file).
std::string choice_key(const SaeSpec& spec, BatchClass c, bool bf16_weights, int threads);

// Rows to time each kernel on for a first call of `rows` rows: all of a small batch; for a
// large one enough for every thread's blocks (>= 256) within ~2e10 FLOPs per run, <= 1024.
int64_t calibration_rows(const SaeSpec& spec, int64_t rows);

// Times each candidate with run(kernel) (seconds for one encode of the sample; < 0 when the
// kernel cannot hold this SAE): one warm-up run each (it builds the kernel's weight copy and
// learns its hints), then two timed rounds, each measurement repeated to >= 5 ms; slow
// candidates (> 3x the best after the first round) skip the second.
KernelDecision measure_kernels(const std::vector<Screen>& candidates, int64_t sample_rows,
                               const std::function<double(Screen)>& run);

// The disk cache: SAEKIT_KERNEL_CACHE (a file), else $SAEKIT_CACHE_DIR, $XDG_CACHE_HOME/saekit
// or ~/.cache/saekit, file kernel-choice.tsv. SAEKIT_KERNEL_CACHE=0 turns it off ("" path).
std::string kernel_cache_path();
bool load_cached_decision(const std::string& key, KernelDecision* out);
// Merges the decision into the file (temp file + rename: a crash leaves the old file).
// Failures are ignored: the cache only saves time.
void save_decision(const KernelDecision& d);
// Every decision in the cache file (for saekit doctor).
std::vector<KernelDecision> cached_decisions();

// {"kernel":..,"how":..,"why":..,"key":..,"sampleRows":..,"usPerRow":{..}}
std::string decision_json(const KernelDecision& d);

// "AMD EPYC ... (family 26 model 2 stepping 1)"
const std::string& cpu_model_string();

}  // namespace saekit::cpu
