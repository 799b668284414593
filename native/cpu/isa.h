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
// AVX512-BF16 (vdpbf16ps): what the exact screened topk encode needs (screen.h).
bool bf16_screening_supported();
Isa current_isa();
// Throws saekit::Error for an unknown name or a variant this CPU cannot run. "auto" or ""
// restores the detected best.
void set_isa(const std::string& name);

}  // namespace saekit::cpu
