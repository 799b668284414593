// 64-byte aligned float buffers for packed operands (aligned vector loads, no split lines).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>

namespace saekit::cpu {

struct FreeDeleter {
  void operator()(float* p) const { std::free(p); }
};
using AlignedFloats = std::unique_ptr<float[], FreeDeleter>;

inline AlignedFloats aligned_floats(int64_t count) {
  size_t bytes = static_cast<size_t>(count > 0 ? count : 1) * sizeof(float);
  bytes = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, bytes);
  if (p == nullptr) throw std::bad_alloc();
  return AlignedFloats(static_cast<float*>(p));
}

}  // namespace saekit::cpu
