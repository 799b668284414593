#include "isa.h"

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

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
    case Screen::AmxBf16: return "amx-bf16";
    case Screen::AmxBf16Emu: return "amx-bf16-emu";
    default: return "off";
  }
}

const char* kernel_name(Screen s) { return s == Screen::Off ? "fp32" : screen_name(s); }

namespace {

struct AmxProbe {
  bool usable = false;
  std::string status;
};

uint64_t xcr0() {
  uint32_t lo = 0, hi = 0;
  __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  return (static_cast<uint64_t>(hi) << 32) | lo;
}

// Once per process: Linux hands out the 8 KiB of tile data state only on request
// (ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); the permission covers every thread.
AmxProbe probe_amx() {
  AmxProbe p;
  const char* env = std::getenv("SAEKIT_AMX");
  if (env != nullptr && (std::string(env) == "0" || std::string(env) == "off")) {
    p.status = "off (SAEKIT_AMX=0)";
    return p;
  }
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (__get_cpuid_max(0, nullptr) < 7) {
    p.status = "no (cpuid has no leaf 7)";
    return p;
  }
  __cpuid_count(7, 0, a, b, c, d);
  const bool tile = (d >> 24) & 1u, bf16 = (d >> 22) & 1u;
  if (!tile || !bf16) {
    p.status = "no (this CPU has no AMX-TILE/AMX-BF16)";
    return p;
  }
  __cpuid(1, a, b, c, d);
  if (!((c >> 27) & 1u)) {
    p.status = "no (OSXSAVE off: the OS does not manage extended state)";
    return p;
  }
  if ((xcr0() & (3ull << 17)) != (3ull << 17)) {
    p.status = "no (the OS does not enable tile state in XCR0)";
    return p;
  }
#if defined(__linux__)
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  if (syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) != 0) {
    p.status = std::string("no (arch_prctl(ARCH_REQ_XCOMP_PERM, XTILEDATA) failed: ") + std::strerror(errno) + ")";
    return p;
  }
  p.usable = true;
  p.status = "yes (AMX-TILE, AMX-BF16; tile data permitted by arch_prctl)";
#else
  p.status = "no (AMX is only enabled on Linux here)";
#endif
  return p;
}

const AmxProbe& amx_probe() {
  static const AmxProbe probe = probe_amx();
  return probe;
}

}  // namespace

bool amx_usable() { return amx_probe().usable; }
const std::string& amx_status() { return amx_probe().status; }

bool screen_supported(Screen s) {
  __builtin_cpu_init();
  switch (s) {
    case Screen::Bf16: return bf16_screening_supported();
    case Screen::Int8: return isa_supported(Isa::Avx512) && __builtin_cpu_supports("avx512vnni");
    case Screen::Int8x256: return isa_supported(Isa::Avx2) && avx_vnni();
    case Screen::AmxBf16: return isa_supported(Isa::Avx512) && amx_usable();
    case Screen::AmxBf16Emu: return isa_supported(Isa::Avx2);
    default: return true;
  }
}

std::vector<Screen> encode_kernel_candidates() {
  std::vector<Screen> out{Screen::Off};
  for (Screen s : {Screen::AmxBf16, Screen::Bf16, Screen::Int8, Screen::Int8x256})
    if (screen_supported(s)) out.push_back(s);
  return out;
}

namespace {

const char* needs(Screen s) {
  switch (s) {
    case Screen::Bf16: return "needs AVX512-BF16";
    case Screen::Int8: return "needs AVX512-VNNI";
    case Screen::Int8x256: return "needs AVX-VNNI";
    case Screen::AmxBf16: return "needs AMX-BF16 and the OS's tile permission";
    default: return "needs AVX2";
  }
}

KernelRequest parse_request(const char* var, const std::string& v, bool legacy) {
  KernelRequest r;
  if (v.empty() || v == "auto" || (legacy && (v == "1" || v == "on"))) return r;
  r.forced = true;
  r.source = std::string(var) + "=" + v;
  if (v == "fp32" || (legacy && (v == "0" || v == "off"))) return r;
  for (Screen s : {Screen::Bf16, Screen::Int8, Screen::Int8x256, Screen::AmxBf16, Screen::AmxBf16Emu}) {
    if (v != screen_name(s)) continue;
    if (!screen_supported(s))
      throw Error(r.source + ": this CPU cannot run the " + v + " kernel (" + needs(s) + "; AMX: " + amx_status() + ")");
    r.kernel = s;
    return r;
  }
  throw Error(r.source + ": unknown encode kernel (expected auto, fp32, bf16, int8, int8-256, amx-bf16 or amx-bf16-emu" +
              (legacy ? std::string(", or 0 / off") : std::string()) + ")");
}

}  // namespace

KernelRequest kernel_request_from_env() {
  const char* k = std::getenv("SAEKIT_ENCODE_KERNEL");
  if (k != nullptr && *k != 0) return parse_request("SAEKIT_ENCODE_KERNEL", k, false);
  const char* s = std::getenv("SAEKIT_SCREEN");
  return parse_request("SAEKIT_SCREEN", s ? s : "", true);
}

}  // namespace saekit::cpu
