// Run-time choice of the CPU kernel variant. Detected from cpuid at first use; forceable with
// the SAEKIT_ISA environment variable (generic | avx2 | avx512) or set_isa() so the tests can
// run every variant on one machine.
#pragma once
#include <string>

namespace saekit::cpu {

enum class Isa { Generic = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);
Isa best_isa();
// AVX512-BF16 (vdpbf16ps): what the exact bf16 screen of the topk encode needs (screen.h).
bool bf16_screening_supported();

// The low-precision screens of the exact screened encode (screen.h). Off: the plain fp32
// kernel. Bf16: vdpbf16ps (AVX512-BF16). Int8: vpdpbusd on zmm (AVX512-VNNI). Int8x256:
// vpdpbusd on ymm (AVX-VNNI, cpuid leaf 7 subleaf 1 EAX bit 4).
enum class Screen { Off = 0, Bf16 = 1, Int8 = 2, Int8x256 = 3 };
constexpr int kScreenKinds = 4;
const char* screen_name(Screen s);  // off | bf16 | int8 | int8-256
bool screen_supported(Screen s);
// The default ("auto"): bf16 where it runs (measured fastest on Zen 5, bench/NOTES.md), then
// int8, then int8-256, else off.
Screen best_screen();
// The screen SAEKIT_SCREEN asks for, read at each call: unset, "", "auto", "1" or "on":
// best_screen();
// "0" or "off": Off; "bf16", "int8", "int8-256": that one. Throws saekit::Error naming
// SAEKIT_SCREEN and the value for an unknown name or a screen this CPU cannot run.
Screen screen_from_env();
Isa current_isa();
// Throws saekit::Error for an unknown name or a variant this CPU cannot run. "auto" or ""
// restores the detected best.
void set_isa(const std::string& name);

}  // namespace saekit::cpu
