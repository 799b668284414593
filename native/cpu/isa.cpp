#include "isa.h"

#include <atomic>
#include <cstdlib>

#include "../error.h"

namespace saekit::cpu {
namespace {

Isa parse(const std::string& name) {
  if (name == "generic") return Isa::Generic;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx512") return Isa::Avx512;
  throw Error("unknown CPU kernel variant '" + name + "' (expected auto, generic, avx2 or avx512)");
}

Isa initial() {
  const char* env = std::getenv("SAEKIT_ISA");
  if (env == nullptr || *env == 0 || std::string(env) == "auto") return best_isa();
  Isa isa = parse(env);  // a bad value surfaces at the first kernel call, as an Error
  if (!isa_supported(isa)) throw Error(std::string("SAEKIT_ISA=") + env + ": this CPU cannot run that variant");
  return isa;
}

std::atomic<int>& chosen() {
  static std::atomic<int> value{-1};
  return value;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::Avx512: return "avx512";
    case Isa::Avx2: return "avx2";
    default: return "generic";
  }
}

bool isa_supported(Isa isa) {
  __builtin_cpu_init();
  switch (isa) {
    case Isa::Avx512:
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    case Isa::Avx2: return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    default: return true;
  }
}

Isa best_isa() {
  if (isa_supported(Isa::Avx512)) return Isa::Avx512;
  if (isa_supported(Isa::Avx2)) return Isa::Avx2;
  return Isa::Generic;
}

Isa current_isa() {
  int v = chosen().load();
  if (v < 0) {
    Isa isa = initial();
    chosen().store(static_cast<int>(isa));
    return isa;
  }
  return static_cast<Isa>(v);
}

void set_isa(const std::string& name) {
  if (name.empty() || name == "auto") {
    chosen().store(static_cast<int>(best_isa()));
    return;
  }
  Isa isa = parse(name);
  if (!isa_supported(isa)) throw Error("CPU kernel variant '" + name + "' is not supported by this CPU");
  chosen().store(static_cast<int>(isa));
}

bool bf16_screening_supported() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16");
}

}  // namespace saekit::cpu
