// Hardware probes for the benchmark: the roofline every kernel is reported against is
// measured in the same process, on the same threads, right before the kernels run.
#pragma once
#include <cstdint>

namespace saekit::cpu {

// Peak fp32 FMA throughput in GFLOP/s on the kernel thread pool (AVX-512 when available).
double probe_fma_gflops(double seconds);
// Peak bf16 dot-product throughput (vdpbf16ps, 2 multiply-adds per fp32 lane) in GFLOP/s;
// 0 where the CPU lacks AVX512-BF16. The roofline of the screened encode.
double probe_bf16_gflops(double seconds);
// Peak u8 x s8 dot-product throughput (vpdpbusd, 4 multiply-adds per int32 lane) in GOP/s
// counting 2 ops per multiply-add: zmm (AVX512-VNNI) when wide, else ymm (AVX-VNNI); 0 where
// the CPU lacks it. The roofline of the int8 screens.
double probe_vnni_gops(double seconds, bool wide);
// AMX TDPBF16PS into 4 independent tiles on every pool thread, GFLOP/s (0 without AMX-BF16).
double probe_amx_bf16_gflops(double seconds);
// Copy bandwidth in GB/s, counting bytes read + bytes written, over buffers of `bytes` each.
double probe_copy_gbps(int64_t bytes, int reps);

}  // namespace saekit::cpu
