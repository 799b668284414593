// Run-time choice of the CPU kernel variant. Detected from cpuid at first use; forceable with
// the SAEKIT_ISA environment variable (generic | avx2 | avx512) or set_isa() so the tests can
// run every variant on one machine.
#pragma once
#include <string>
#include <vector>

namespace saekit::cpu {

enum class Isa { Generic = 0, Avx2 = 1, Avx512 = 2 };

const char* isa_name(Isa isa);
bool isa_supported(Isa isa);
Isa best_isa();
// AVX512-BF16 (vdpbf16ps): what the exact bf16 screen of the topk encode needs (screen.h).
bool bf16_screening_supported();

// The encode kernels: the plain fp32 kernel (Off) and the low-precision screens of the exact
// screened encode (screen.h). Bf16: vdpbf16ps (AVX512-BF16). Int8: vpdpbusd on zmm
// (AVX512-VNNI). Int8x256: vpdpbusd on ymm (AVX-VNNI, cpuid leaf 7 subleaf 1 EAX bit 4).
// AmxBf16: _tile_dpbf16ps (AMX-TILE + AMX-BF16, with the OS's permission for tile state).
// AmxBf16Emu: the same AMX kernel source compiled against a scalar emulation of the tile
// instructions (amx_tiles.h): for tests on CPUs without AMX, never chosen by "auto".
// Which kernel an SAE uses is decided by measurement (kernel_choice.h), not from these flags.
enum class Screen { Off = 0, Bf16 = 1, Int8 = 2, Int8x256 = 3, AmxBf16 = 4, AmxBf16Emu = 5 };
constexpr int kScreenKinds = 6;
const char* screen_name(Screen s);  // off | bf16 | int8 | int8-256 | amx-bf16 | amx-bf16-emu
const char* kernel_name(Screen s);  // as screen_name, but "fp32" for Off
// Whether this CPU (and OS) can run the kernel. AmxBf16Emu runs wherever AVX2+FMA does (its
// rescoring is the AVX2/AVX-512 fp32 order).
bool screen_supported(Screen s);
// Every kernel "auto" may choose on this CPU, fp32 first (the emulation never).
std::vector<Screen> encode_kernel_candidates();
// AMX: usable (cpuid AMX-TILE + AMX-BF16, XCR0 tile state, arch_prctl(ARCH_REQ_XCOMP_PERM)
// granted once per process) and, either way, a sentence saying why. SAEKIT_AMX=0 turns it off.
bool amx_usable();
const std::string& amx_status();
// What SAEKIT_ENCODE_KERNEL (or, when unset, the older SAEKIT_SCREEN) asks for, read at each
// call. Unset, "", "auto" (SAEKIT_SCREEN also "1" / "on"): forced = false, the measured choice.
// "fp32" ("0" / "off"): the plain kernel; a kernel's name: that one. Throws saekit::Error
// naming the variable and the value for an unknown name or a kernel this CPU cannot run.
struct KernelRequest {
  bool forced = false;
  Screen kernel = Screen::Off;
  std::string source;  // e.g. "SAEKIT_ENCODE_KERNEL=bf16"; empty when not forced
};
KernelRequest kernel_request_from_env();
Isa current_isa();
// Throws saekit::Error for an unknown name or a variant this CPU cannot run. "auto" or ""
// restores the detected best.
void set_isa(const std::string& name);

}  // namespace saekit::cpu
