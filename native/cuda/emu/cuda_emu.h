// CUDA emulation on the CPU, so the SAME kernel source that nvcc compiles for the GPU runs in
// CI (no GPU there) and can be checked against the CPU backend.
//
// Model: a launch runs its blocks one at a time; a block runs as one OS thread per CUDA thread
// (C++20 std::barrier for __syncthreads, one barrier per warp for the warp intrinsics), so
// barriers, shared memory and intra-warp data exchange behave as the CUDA programming model
// defines them (not as a particular GPU schedules them). `__shared__` becomes `static`: with
// blocks run one at a time, one copy per kernel is exactly "one per block". Warps are formed
// from the linearized thread index, x fastest, as on the GPU.
//
// Kernels use only what this header provides; each warp intrinsic is implemented from its
// documented per-lane semantics (values exchanged through per-warp slots between two barrier
// phases). Slow (threads are created per block), meant for small test shapes.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace saekit::emu {

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

/** What one emulated thread knows about its place in the launch. */
struct ThreadState {
  dim3 threadIdx, blockIdx, blockDim, gridDim;
  std::barrier<>* block_barrier = nullptr;
  std::barrier<>* warp_barrier = nullptr;
  /** This warp's exchange slots (32 x 8 bytes) for shuffles and votes. */
  uint64_t* warp_slots = nullptr;
  /** This warp's matrix-fragment exchange area (32 lanes x 8 registers) for mma. */
  uint32_t* warp_frags = nullptr;
  unsigned lane = 0;
};

inline thread_local ThreadState tls;

inline void syncthreads() { tls.block_barrier->arrive_and_wait(); }

/** Every lane publishes V, all wait, each reads SRC_LANE's value, all wait again (slots reusable). */
template <class T>
T warp_exchange(T v, unsigned src_lane) {
  static_assert(sizeof(T) <= 8, "warp shuffles move at most 8 bytes");
  uint64_t bits = 0;
  std::memcpy(&bits, &v, sizeof(T));
  tls.warp_slots[tls.lane] = bits;
  tls.warp_barrier->arrive_and_wait();
  uint64_t got = tls.warp_slots[src_lane & 31u];
  tls.warp_barrier->arrive_and_wait();
  T out;
  std::memcpy(&out, &got, sizeof(T));
  return out;
}

/**
 * Runs KERNEL(args...) over GRID x BLOCK emulated threads. Blocks run one after another;
 * blockDim.x*y*z must be a whole number of warps (a multiple of 32, at most 1024).
 */
template <class Kernel, class... Args>
void launch(dim3 grid, dim3 block, Kernel kernel, Args... args) {
  const unsigned nthreads = block.x * block.y * block.z;
  if (nthreads == 0 || nthreads % 32 != 0 || nthreads > 1024) throw std::invalid_argument("emulated launch: threads per block must be a multiple of 32, at most 1024");
  const unsigned nwarps = nthreads / 32;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::barrier<> block_barrier(nthreads);
        std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
        for (unsigned w = 0; w < nwarps; ++w) warp_barriers.push_back(std::make_unique<std::barrier<>>(32));
        std::vector<uint64_t> slots(nwarps * 32);
        std::vector<uint32_t> frags(nwarps * 32 * 8);
        std::vector<std::thread> threads;
        threads.reserve(nthreads);
        for (unsigned t = 0; t < nthreads; ++t) {
          threads.emplace_back([&, t] {
            ThreadState& s = tls;
            s.threadIdx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
            s.blockIdx = dim3(bx, by, bz);
            s.blockDim = block;
            s.gridDim = grid;
            s.block_barrier = &block_barrier;
            s.warp_barrier = warp_barriers[t / 32].get();
            s.warp_slots = &slots[(t / 32) * 32];
            s.warp_frags = &frags[(t / 32) * 32 * 8];
            s.lane = t % 32;
            kernel(args...);
          });
        }
        for (auto& th : threads) th.join();
      }
}

}  // namespace saekit::emu

using ::saekit::emu::dim3;

// The CUDA names the kernels use, mapped onto the emulation.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define threadIdx (::saekit::emu::tls.threadIdx)
#define blockIdx (::saekit::emu::tls.blockIdx)
#define blockDim (::saekit::emu::tls.blockDim)
#define gridDim (::saekit::emu::tls.gridDim)
inline void __syncthreads() { ::saekit::emu::syncthreads(); }
inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) { ::saekit::emu::tls.warp_barrier->arrive_and_wait(); }
inline int __ffs(int x) { return __builtin_ffs(x); }
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
// Shared-memory atomics: the emulated threads of a block are OS threads, so a real atomic.
inline int atomicAdd(int* address, int value) { return __atomic_fetch_add(address, value, __ATOMIC_RELAXED); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
using std::fmaf;
template <class T>
T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask, int width = 32) {
  const unsigned lane = ::saekit::emu::tls.lane;
  const unsigned base = lane & ~static_cast<unsigned>(width - 1);
  return ::saekit::emu::warp_exchange(v, base + ((lane - base) ^ static_cast<unsigned>(lane_mask)) % static_cast<unsigned>(width));
}
template <class T>
T __shfl_sync(unsigned /*mask*/, T v, int src_lane, int width = 32) {
  const unsigned lane = ::saekit::emu::tls.lane;
  const unsigned base = lane & ~static_cast<unsigned>(width - 1);
  return ::saekit::emu::warp_exchange(v, base + static_cast<unsigned>(src_lane) % static_cast<unsigned>(width));
}
/** redux.sync.add (sm_80+): every lane gets the warp's sum. */
inline unsigned __reduce_add_sync(unsigned /*mask*/, unsigned value) {
  auto& t = ::saekit::emu::tls;
  t.warp_slots[t.lane] = value;
  t.warp_barrier->arrive_and_wait();
  unsigned sum = 0;
  for (unsigned l = 0; l < 32; ++l) sum += static_cast<unsigned>(t.warp_slots[l]);
  t.warp_barrier->arrive_and_wait();
  return sum;
}
inline unsigned __ballot_sync(unsigned /*mask*/, int predicate) {
  // Each lane publishes its bit, all wait, each reads all 32, all wait again.
  auto& t = ::saekit::emu::tls;
  t.warp_slots[t.lane] = predicate ? 1u : 0u;
  t.warp_barrier->arrive_and_wait();
  unsigned bits = 0;
  for (unsigned l = 0; l < 32; ++l) bits |= static_cast<unsigned>(t.warp_slots[l] & 1u) << l;
  t.warp_barrier->arrive_and_wait();
  return bits;
}
struct float4 {
  float x, y, z, w;
};

// The runtime API calls the CUDA backend's model uses, on host memory: "device" buffers are
// plain allocations and copies are memcpy. Static, so they never meet cudart's symbols.
enum cudaError_t { cudaSuccess = 0, cudaErrorMemoryAllocation = 2 };
enum cudaMemcpyKind { cudaMemcpyHostToHost = 0, cudaMemcpyHostToDevice = 1, cudaMemcpyDeviceToHost = 2, cudaMemcpyDeviceToDevice = 3 };
template <class T>
static inline cudaError_t cudaMalloc(T** p, size_t bytes) {
  *p = static_cast<T*>(std::malloc(bytes));
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
static inline cudaError_t cudaFree(void* p) {
  std::free(p);
  return cudaSuccess;
}
static inline cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind) {
  std::memcpy(dst, src, bytes);
  return cudaSuccess;
}
static inline cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  std::memset(p, value, bytes);
  return cudaSuccess;
}
static inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
/** The emulated "device" has 1 SM: a one-row-tile batch splits its latents in two (the latent split is exercised). */
static inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr, int) {
  *value = 1;
  return cudaSuccess;
}
// Streams: launches and copies run synchronously here, so a stream is only a handle.
using cudaStream_t = int*;
constexpr unsigned cudaStreamNonBlocking = 1;
static inline cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) {
  static int handle;
  *s = &handle;
  return cudaSuccess;
}
static inline cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
static inline cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) { return cudaMemcpy(dst, src, bytes, kind); }
static inline cudaError_t cudaMallocHost(void** p, size_t bytes) {
  *p = std::malloc(bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
static inline cudaError_t cudaFreeHost(void* p) {
  std::free(p);
  return cudaSuccess;
}
static inline cudaError_t cudaGetLastError() { return cudaSuccess; }
static inline const char* cudaGetErrorName(cudaError_t e) { return e == cudaSuccess ? "cudaSuccess" : "cudaErrorMemoryAllocation"; }
static inline const char* cudaGetErrorString(cudaError_t e) { return e == cudaSuccess ? "no error" : "out of memory"; }
