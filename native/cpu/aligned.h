// Aligned float buffers for packed operands (aligned vector loads, no split cache lines).
//
// Large buffers (weights) are 2 MiB aligned and advised as transparent huge pages: decode
// jumps to a random W_dec row per entry, and with 4 KiB pages nearly every jump was a TLB miss
// (a page walk the prefetcher cannot hide). Linux only; elsewhere the advice is a no-op.
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace saekit::cpu {

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;

inline AlignedFloats aligned_floats(int64_t count) {
  constexpr size_t kHuge = size_t{2} << 20;
  size_t bytes = static_cast<size_t>(count > 0 ? count : 1) * sizeof(float);
  const size_t align = bytes >= 2 * kHuge ? kHuge : 64;
  bytes = (bytes + align - 1) / align * align;
  void* p = std::aligned_alloc(align, bytes);
  if (p == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == kHuge) madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return AlignedFloats(static_cast<float*>(p));
}

}  // namespace saekit::cpu
