// Asynchronous global -> shared copies (sm_80 cp.async), the staging of the tiled tensor-core
// kernels. Under nvcc they are the PTX instructions; under the CPU emulation each copy is
// captured at issue and lands in shared memory only when its group is waited for, so a kernel
// that reads a stage before cp_async_wait (or without the __syncthreads after it, for other
// threads' copies) reads stale data in CI too, as it would on a GPU.
//   cp_async_16(dst, src)  16 bytes, both 16-byte aligned
//   cp_async_commit()      closes the group of copies issued since the last commit
//   cp_async_wait<N>()     waits until at most N of this thread's committed groups are pending
#pragma once
#include <cstdint>
#include <cstring>

#include "compat.h"

#if !defined(__CUDACC__)
#include <array>
#include <deque>
#include <vector>
#endif

namespace saekit::cuda {

#if defined(__CUDACC__)
__device__ __forceinline__ void cp_async_16(void* smem_dst, const void* gmem_src) {
#if __CUDA_ARCH__ >= 800
  const unsigned dst = static_cast<unsigned>(__cvta_generic_to_shared(smem_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(gmem_src));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::);
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}
#else
/** This emulated thread's copies in flight: committed groups (oldest first), then the open one. */
struct PendingCopy {
  void* dst;
  std::array<unsigned char, 16> bytes;
};
struct CopyQueue {
  std::deque<std::vector<PendingCopy>> committed;
  std::vector<PendingCopy> open;
};
inline thread_local CopyQueue copy_queue;

inline void cp_async_16(void* smem_dst, const void* gmem_src) {
  PendingCopy c{smem_dst, {}};
  std::memcpy(c.bytes.data(), gmem_src, 16);  // the source is read at issue (it does not change during a kernel)
  copy_queue.open.push_back(c);
}
inline void cp_async_commit() {
  copy_queue.committed.push_back(std::move(copy_queue.open));
  copy_queue.open.clear();
}
template <int N>
inline void cp_async_wait() {
  while (copy_queue.committed.size() > static_cast<size_t>(N)) {
    for (const PendingCopy& c : copy_queue.committed.front()) std::memcpy(c.dst, c.bytes.data(), 16);
    copy_queue.committed.pop_front();
  }
}
#endif

}  // namespace saekit::cuda
