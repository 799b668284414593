#include "isa.h"

#include <cpuid.h>

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
  return isa_supported(Isa::Avx512) && __builtin_cpu_supports("avx512bf16");
}

namespace {
// AVX-VNNI (the VEX-encoded vpdpbusd): cpuid leaf 7, subleaf 1, EAX bit 4. The OS saving ymm
// state is implied by __builtin_cpu_supports("avx2").
bool avx_vnni() {
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) return false;
  __cpuid_count(7, 1, a, b, c, d);
  return (a >> 4) & 1u;
}
}  // namespace

const char* screen_name(Screen s) {
  switch (s) {
    case Screen::Bf16: return "bf16";
    case Screen::Int8: return "int8";
    case Screen::Int8x256: return "int8-256";
    default: return "off";
  }
}

bool screen_supported(Screen s) {
  __builtin_cpu_init();
  switch (s) {
    case Screen::Bf16: return bf16_screening_supported();
    case Screen::Int8: return isa_supported(Isa::Avx512) && __builtin_cpu_supports("avx512vnni");
    case Screen::Int8x256: return isa_supported(Isa::Avx2) && avx_vnni();
    default: return true;
  }
}

Screen best_screen() {
  for (Screen s : {Screen::Bf16, Screen::Int8, Screen::Int8x256})
    if (screen_supported(s)) return s;
  return Screen::Off;
}

Screen screen_from_env() {
  const char* env = std::getenv("SAEKIT_SCREEN");
  const std::string v = env ? env : "";
  if (v.empty() || v == "auto" || v == "1" || v == "on") return best_screen();
  if (v == "0" || v == "off") return Screen::Off;
  for (Screen s : {Screen::Bf16, Screen::Int8, Screen::Int8x256}) {
    if (v != screen_name(s)) continue;
    if (!screen_supported(s))
      throw Error("SAEKIT_SCREEN=" + v + ": this CPU cannot run the " + v + " screen (" +
                  (s == Screen::Bf16 ? "needs AVX512-BF16" : s == Screen::Int8 ? "needs AVX512-VNNI" : "needs AVX-VNNI") + ")");
    return s;
  }
  throw Error("SAEKIT_SCREEN=" + v + ": unknown screen (expected auto, bf16, int8, int8-256, 0 or off)");
}

}  // namespace saekit::cpu
