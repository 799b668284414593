// The CUDA backend's model: weights on the device, batches streamed through pinned host
// buffers in chunks of rows, CSR assembled on the host. A header so that the same code is
// compiled by nvcc into the addon (cuda_backend.cu) and by g++ against the CPU emulation
// (emu/), where CI runs it through the backend interface against the CPU backend.
//
// Data path of a top-k encode (the common case), two slots in flight:
//   host rows -> (checked, normalized) pinned slot buffer -> cudaMemcpyAsync on the slot's
//   stream -> prep / screen / rescore kernels -> cudaMemcpyAsync of the [n, k] slots back ->
//   host CSR, collected when the slot comes round again.
// While the GPU works on chunk c, the host stages chunk c + 1 and collects chunk c - 1.
#pragma once
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <mutex>
#include <string>
#include <vector>

#include "../backend.h"
#include "../error.h"
#include "../normalization.h"
#include "kernels/decode.cuh"
#include "kernels/encode_screened.cuh"
#include "kernels/encode_threshold.cuh"
#include "kernels/encode_topk.cuh"

#if defined(__CUDACC__)
#define SAEKIT_LAUNCH(kernel, grid, block, stream, ...) kernel<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#else
#define SAEKIT_LAUNCH(kernel, grid, block, stream, ...) ::saekit::emu::launch(::saekit::emu::dim3(grid), ::saekit::emu::dim3(block), kernel, __VA_ARGS__)
#endif

namespace saekit {
namespace {

#define SAEKIT_CUDA_CHECK(call)                                                                                       \
  do {                                                                                                                \
    cudaError_t err_ = (call);                                                                                        \
    if (err_ != cudaSuccess) {                                                                                        \
      cudaGetLastError();                                                                                             \
      ::saekit::fail(std::string("CUDA error: ") + #call + " failed with " + cudaGetErrorName(err_) + " (" + cudaGetErrorString(err_) + ")", \
                     __FILE__, __LINE__);                                                                             \
    }                                                                                                                 \
  } while (0)

/** Where a Buffer lives: device memory, or page-locked host memory (what cudaMemcpyAsync needs to overlap with kernels). */
enum class Memory { Device, Pinned };

/** An allocation of N elements of T, freed with its owner; grows on demand, never shrinks. */
template <class T, Memory M>
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { release(); }
  void resize(size_t n) {
    if (n <= cap_) return;
    release();
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(n, 1) * sizeof(T);
    if constexpr (M == Memory::Device) SAEKIT_CUDA_CHECK(cudaMalloc(&p, bytes));
    else SAEKIT_CUDA_CHECK(cudaMallocHost(&p, bytes));
    ptr_ = static_cast<T*>(p);
    cap_ = n;
  }
  /** Device buffers: synchronous copies from / to the host. */
  void upload(const T* host, size_t n) {
    resize(n);
    if (n) SAEKIT_CUDA_CHECK(cudaMemcpy(ptr_, host, n * sizeof(T), cudaMemcpyHostToDevice));
  }
  void download(T* host, size_t n) const {
    if (n) SAEKIT_CUDA_CHECK(cudaMemcpy(host, ptr_, n * sizeof(T), cudaMemcpyDeviceToHost));
  }
  T* get() const { return ptr_; }
  size_t bytes() const { return cap_ * sizeof(T); }

 private:
  void release() {
    if (ptr_ == nullptr) return;
    if constexpr (M == Memory::Device) cudaFree(ptr_);
    else cudaFreeHost(ptr_);
    ptr_ = nullptr;
    cap_ = 0;
  }
  T* ptr_ = nullptr;
  size_t cap_ = 0;
};
template <class T>
using DeviceBuffer = Buffer<T, Memory::Device>;
template <class T>
using PinnedBuffer = Buffer<T, Memory::Pinned>;

/** Async copies on a stream (sizes in elements). */
template <class T>
void copy_to_device(T* dst, const T* src, size_t n, cudaStream_t s) {
  if (n) SAEKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyHostToDevice, s));
}
template <class T>
void copy_to_host(T* dst, const T* src, size_t n, cudaStream_t s) {
  if (n) SAEKIT_CUDA_CHECK(cudaMemcpyAsync(dst, src, n * sizeof(T), cudaMemcpyDeviceToHost, s));
}

/** One chunk in flight: its stream, pinned staging, device inputs, outputs and screen scratch. */
struct Slot {
  cudaStream_t stream{};
  int n = 0;           // rows of the chunk in flight (0: idle)
  int64_t r0 = 0;      // its first row
  PinnedBuffer<float> hx, hv, hscale, hshift;
  PinnedBuffer<int32_t> hi, hc;
  PinnedBuffer<uint32_t> hptr;
  DeviceBuffer<float> x, ov, y;
  DeviceBuffer<int32_t> oi, oc;
  DeviceBuffer<uint32_t> indptr;
  // The tensor-core screen's per-chunk scratch.
  DeviceBuffer<uint16_t> xb;
  DeviceBuffer<float> rnorm, rerr, cand_d;
  DeviceBuffer<int32_t> cand_j, ncand, merged_j;
};

/**
 * The SAE on the GPU (kernels/, tested under CPU emulation): weights uploaded once per load
 * and freed with the model; inputs streamed in chunks of rows so any batch fits the card.
 * Top-k with k <= SCREEN_MAX_K runs the exact tensor-core screen; larger k and the threshold
 * architectures run the fp32 kernels. Per-row normalization is applied on the host while a
 * chunk is staged (the rows are read there anyway, for the finiteness check).
 */
class CudaModel final : public BackendModel {
 public:
  CudaModel(const SaeSpec& spec, const SaeWeightsView& w) : spec_(spec) {
    // A transcoder's decode is the same kernel at width d_out; the dense skip term has no CUDA
    // kernel yet.
    if (spec.skip) throw Error("CUDA backend: skip transcoders (a dense W_skip term) run on the CPU backend");
    if (spec.activation == Activation::TopK && (spec.k < 1 || spec.k > cuda::ENCODE_TOPK_MAX_K || spec.k > spec.d_sae)) {
      throw Error("CUDA backend: top-k with k = " + std::to_string(spec.k) + " is not supported (1 <= k <= " + std::to_string(cuda::ENCODE_TOPK_MAX_K) + ")");
    }
    SAEKIT_CUDA_CHECK(cudaSetDevice(0));
    SAEKIT_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, 0));
    for (Slot& s : slots_) SAEKIT_CUDA_CHECK(cudaStreamCreateWithFlags(&s.stream, cudaStreamNonBlocking));
    const size_t din = static_cast<size_t>(spec.d_in), dsae = static_cast<size_t>(spec.d_sae);
    // Screened top-k reads W_enc latent-major (the rescoring) and in bf16 (the screen) only.
    if ((spec.activation != Activation::TopK || spec.k <= cuda::SCREEN_MAX_K) && screening_enabled()) {
      prepare_screen(w);
    } else if (w.enc_transposed) {
      std::vector<float> t(din * dsae);
      for (size_t j = 0; j < dsae; ++j)
        for (size_t i = 0; i < din; ++i) t[i * dsae + j] = w.W_enc[j * din + i];
      W_enc_.upload(t.data(), t.size());
    } else {
      W_enc_.upload(w.W_enc, din * dsae);
    }
    b_enc_.upload(w.b_enc, dsae);
    const size_t dout = static_cast<size_t>(spec.out_width());  // d_out for transcoders
    W_dec_.upload(w.W_dec, dsae * dout);
    b_dec_.upload(w.b_dec, dout);
    if (spec.activation == Activation::JumpReLU) threshold_.upload(w.threshold, dsae);
    if (screened_ && spec.activation != Activation::TopK) {
      // The threshold screen's admission: a latent can only be kept if its exact value passes max(threshold_j, 0).
      std::vector<float> admit(dsae, 0.f);
      if (spec.activation == Activation::JumpReLU)
        for (size_t j = 0; j < dsae; ++j) admit[j] = std::max(w.threshold[j], 0.f);
      admit_.upload(admit.data(), dsae);
    }
  }

  ~CudaModel() override {
    for (Slot& s : slots_) {
      if (s.stream) {
        cudaStreamSynchronize(s.stream);
        cudaStreamDestroy(s.stream);
      }
    }
  }

  void encode(const float* x, int64_t rows, SparseCodes* out, CancelFlag cancel = {}) override {
    std::lock_guard<std::mutex> lock(mu_);  // the addon runs calls on several pool threads; the slots are one set
    const bool per_row = spec_.normalization != Normalization::None;
    out->indptr.assign(static_cast<size_t>(rows) + 1, 0);
    out->indices.clear();
    out->values.clear();
    out->row_scale.assign(per_row ? rows : 0, 1.0f);
    out->row_shift.assign(per_row ? rows : 0, 0.0f);
    const int64_t chunk = chunk_rows(rows);
    try {
      if (spec_.activation != Activation::TopK) {
        for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
          if (cancel.requested()) throw Cancelled("encode: aborted by the caller");
          Slot& s = slots_[0];
          stage_rows(s, x, r0, static_cast<int>(std::min(chunk, rows - r0)), out);
          encode_threshold(s, out);
        }
        return;
      }
      int64_t c = 0;
      for (int64_t r0 = 0; r0 < rows; r0 += chunk, ++c) {
        if (cancel.requested()) throw Cancelled("encode: aborted by the caller");  // the catch drains the chunks in flight
        Slot& s = slots_[c % 2];
        if (s.n) collect_topk(s, out);  // chunk c - 2, in order (chunk c - 1 is in the other slot)
        stage_rows(s, x, r0, static_cast<int>(std::min(chunk, rows - r0)), out);
        launch_topk(s);
      }
      for (int64_t e = c; e < c + 2; ++e)
        if (slots_[e % 2].n) collect_topk(slots_[e % 2], out);
    } catch (...) {
      drain();
      throw;
    }
  }

  void decode(const SparseCodesView& c, float* out, CancelFlag cancel = {}) override {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t width = spec_.out_width();  // d_out for transcoders
    const int64_t chunk = chunk_rows(c.rows);
    try {
      int64_t ci = 0;
      for (int64_t r0 = 0; r0 < c.rows; r0 += chunk, ++ci) {
        if (cancel.requested()) throw Cancelled("decode: aborted by the caller");
        Slot& s = slots_[ci % 2];
        if (s.n) finish_decode(s, c, out);
        s.n = static_cast<int>(std::min(chunk, c.rows - r0));
        s.r0 = r0;
        const uint32_t base = c.indptr[r0];
        const uint32_t nnz = c.indptr[r0 + s.n] - base;
        s.hptr.resize(static_cast<size_t>(s.n) + 1);
        s.hi.resize(nnz);
        s.hv.resize(nnz);
        for (int r = 0; r <= s.n; ++r) s.hptr.get()[r] = c.indptr[r0 + r] - base;
        for (uint32_t e = 0; e < nnz; ++e) {
          const int32_t j = c.indices[base + e];
          if (j < 0 || j >= spec_.d_sae) throw Error("decode: latent index " + std::to_string(j) + " out of range [0, " + std::to_string(spec_.d_sae) + ")");
        }
        std::copy(c.indices + base, c.indices + base + nnz, s.hi.get());
        std::copy(c.values + base, c.values + base + nnz, s.hv.get());
        s.indptr.resize(static_cast<size_t>(s.n) + 1);
        s.oi.resize(nnz);
        s.ov.resize(nnz);
        s.y.resize(static_cast<size_t>(s.n) * width);
        s.hx.resize(static_cast<size_t>(s.n) * width);
        copy_to_device(s.indptr.get(), s.hptr.get(), static_cast<size_t>(s.n) + 1, s.stream);
        copy_to_device(s.oi.get(), s.hi.get(), nnz, s.stream);
        copy_to_device(s.ov.get(), s.hv.get(), nnz, s.stream);
        SAEKIT_LAUNCH(cuda::sparse_decode_kernel, static_cast<unsigned>(std::min<int64_t>(s.n, 65535)), 128, s.stream, W_dec_.get(), b_dec_.get(),
                      s.indptr.get(), s.oi.get(), s.ov.get(), s.n, static_cast<int>(width), s.y.get());
        SAEKIT_CUDA_CHECK(cudaGetLastError());
        copy_to_host(s.hx.get(), s.y.get(), static_cast<size_t>(s.n) * width, s.stream);
      }
      for (int64_t e = ci; e < ci + 2; ++e)
        if (slots_[e % 2].n) finish_decode(slots_[e % 2], c, out);
    } catch (...) {
      drain();
      throw;
    }
  }

  int64_t bytes() const override {
    return static_cast<int64_t>(W_enc_.bytes() + b_enc_.bytes() + W_dec_.bytes() + b_dec_.bytes() + threshold_.bytes() + Wt_.bytes() + WT_.bytes() +
                                werr_.bytes() + wtil_.bytes() + admit_.bytes());
  }

  // --- For the GPU benchmark (cuda_backend.cu): the kernels alone on device-resident data. ---

  /** Uploads up to one chunk of X (N rows) into slot 0 as an encode would; returns the rows staged. */
  int bench_stage(const float* x, int64_t rows) {
    SparseCodes scratch;
    scratch.row_scale.assign(rows, 1.f);
    scratch.row_shift.assign(rows, 0.f);
    const int n = static_cast<int>(std::min(chunk_rows(rows), rows));
    stage_rows(slots_[0], x, 0, n, &scratch);
    SAEKIT_CUDA_CHECK(cudaStreamSynchronize(slots_[0].stream));
    return n;
  }
  /** Launches the top-k kernels on the staged chunk (no copies); the caller times the stream. */
  void bench_encode_kernels() { launch_topk(slots_[0], false); }
  cudaStream_t bench_stream() const { return slots_[0].stream; }
  /** Candidates per screened row and the overflow rate of the last staged chunk's screen. */
  void bench_screen_stats(double* candidates_per_row, double* overflow_rate) {
    Slot& s = slots_[0];
    std::vector<int32_t> nc(s.n);
    SAEKIT_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    if (!screened_ || s.n == 0) {
      *candidates_per_row = 0;
      *overflow_rate = 0;
      return;
    }
    s.ncand.download(nc.data(), nc.size());
    const int cap = cuda::screen_default_cap(static_cast<int>(spec_.k));
    int64_t total = 0, over = 0;
    for (int v : nc) {
      if (v > cap) ++over;
      else total += v;
    }
    *candidates_per_row = s.n > over ? static_cast<double>(total) / (s.n - over) : 0;
    *overflow_rate = static_cast<double>(over) / s.n;
  }
  bool screened() const { return screened_; }
  /** Uploads codes (the first chunk of C) into slot 0 for bench_decode_kernel; returns the rows. */
  int bench_stage_codes(const SparseCodesView& c) {
    Slot& s = slots_[0];
    s.n = static_cast<int>(std::min(chunk_rows(c.rows), c.rows));
    const uint32_t nnz = c.indptr[s.n];
    s.indptr.upload(c.indptr, static_cast<size_t>(s.n) + 1);
    s.oi.upload(c.indices, nnz);
    s.ov.upload(c.values, nnz);
    s.y.resize(static_cast<size_t>(s.n) * spec_.out_width());
    return s.n;
  }
  void bench_decode_kernel() {
    Slot& s = slots_[0];
    SAEKIT_LAUNCH(cuda::sparse_decode_kernel, static_cast<unsigned>(std::min<int64_t>(s.n, 65535)), 128, s.stream, W_dec_.get(), b_dec_.get(), s.indptr.get(),
                  s.oi.get(), s.ov.get(), s.n, static_cast<int>(spec_.out_width()), s.y.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
  }

 private:
  /** SAEKIT_SCREEN=0 turns the tensor-core screen off (fp32 kernel), as on the CPU. */
  static bool screening_enabled() {
    const char* v = std::getenv("SAEKIT_SCREEN");
    return v == nullptr || std::string(v) != "0";
  }

  /**
   * Rows per chunk. Big enough to fill the card (the screen runs one block per 128 rows, two
   * blocks per SM: 32768 rows is ~one wave on 132 SMs), at most ~512 MiB of fp32 input, and
   * two or more chunks once a batch is large so the copies overlap the kernels; chunks are
   * balanced (65536 rows: 2 x 32768, not 32768 + 32768 + 0).
   */
  int64_t chunk_rows(int64_t rows) const {
    rows = std::max<int64_t>(rows, 1);
    // SAEKIT_CUDA_CHUNK_ROWS: a test knob, so small batches run many chunks through the two slots.
    if (const char* v = std::getenv("SAEKIT_CUDA_CHUNK_ROWS")) {
      const long long forced = std::atoll(v);
      if (forced > 0) return std::min<int64_t>(forced, rows);
    }
    const int64_t by_bytes = std::max<int64_t>(1, (int64_t{512} << 20) / (4 * std::max<int64_t>(spec_.d_in, 1)));
    const int64_t wanted = std::min(by_bytes, std::max<int64_t>(32768, (rows + 1) / 2));
    const int64_t chunks = (rows + wanted - 1) / wanted;
    return (rows + chunks - 1) / chunks;
  }

  /**
   * Latent ranges the screen splits a chunk into: enough blocks for two per SM when the
   * chunk has few row tiles (a 128-row batch alone would occupy one SM), at most one latent
   * tile per range. SAEKIT_CUDA_SCREEN_PARTS forces it (tests).
   */
  int screen_parts(int row_tiles) const {
    const int n_tiles = Np_ / cuda::SCREEN_BN;
    if (const char* v = std::getenv("SAEKIT_CUDA_SCREEN_PARTS")) {
      const int forced = std::atoi(v);
      if (forced > 0) return std::min(forced, n_tiles);
    }
    const int want = (2 * sm_count_ + row_tiles - 1) / std::max(row_tiles, 1);
    return std::max(1, std::min({want, n_tiles, 65535}));
  }

  /** Waits for both slots and forgets their chunks (after an error: nothing is left in flight). */
  void drain() {
    for (Slot& s : slots_) {
      cudaStreamSynchronize(s.stream);
      cudaGetLastError();
      s.n = 0;
    }
  }

  /**
   * Rows R0 .. R0 + N of X into the slot: checked finite (an error names the row and column),
   * normalized per row when the SAE asks (stats into OUT), copied to pinned memory and sent to
   * the device on the slot's stream.
   */
  void stage_rows(Slot& s, const float* x, int64_t r0, int n, SparseCodes* out) {
    SAEKIT_CUDA_CHECK(cudaStreamSynchronize(s.stream));  // the slot's previous copies are done with its buffers
    const int64_t din = spec_.d_in;
    s.hx.resize(static_cast<size_t>(n) * din);
    float* dst = s.hx.get();
    for (int r = 0; r < n; ++r) {
      const float* xr = x + (r0 + r) * din;
      double sum = 0, sumsq = 0;
      for (int64_t i = 0; i < din; ++i) {
        if (!std::isfinite(xr[i])) throw InputError("input row " + std::to_string(r0 + r) + " has a non-finite value at column " + std::to_string(i), r0 + r, i);
        sum += xr[i];
        sumsq += static_cast<double>(xr[i]) * xr[i];
      }
      float* d = dst + static_cast<int64_t>(r) * din;
      if (spec_.normalization == Normalization::None) {
        std::copy(xr, xr + din, d);
        continue;
      }
      const RowNormalization norm = row_normalization(spec_.normalization, xr, din, sum, sumsq);
      out->row_scale[r0 + r] = norm.out_scale;
      out->row_shift[r0 + r] = norm.out_shift;
      for (int64_t i = 0; i < din; ++i) d[i] = static_cast<float>((xr[i] - norm.shift) * norm.scale);
    }
    s.x.resize(static_cast<size_t>(n) * din);
    copy_to_device(s.x.get(), dst, static_cast<size_t>(n) * din, s.stream);
    s.n = n;
    s.r0 = r0;
  }

  /** The screen's copies of W_enc (bf16 [Np, Kp] and fp32 latent-major) and per-latent norms. */
  void prepare_screen(const SaeWeightsView& w) {
    const cuda::ScreenWeights p = cuda::screen_pack_weights(w.W_enc, w.enc_transposed, static_cast<int>(spec_.d_in), static_cast<int>(spec_.d_sae));
    Kp_ = p.Kp;
    Np_ = p.Np;
    Wt_.upload(p.Wt.data(), p.Wt.size());
    WT_.upload(p.WT.data(), p.WT.size());
    werr_.upload(p.werr.data(), p.werr.size());
    wtil_.upload(p.wtil.data(), p.wtil.size());
    screened_ = true;
  }

  /**
   * The tensor-core screen on the slot's staged rows (prep, candidates, merge of a latent
   * split): returns the candidate lists [rows_pad, cap] with counts in s.ncand (cap + 1:
   * overflowed). K: top-k's k; 0 for the threshold architectures (admission by admit_).
   */
  const int32_t* launch_screen(Slot& s, int k, int cap) {
    const int n = s.n, din = static_cast<int>(spec_.d_in), dsae = static_cast<int>(spec_.d_sae), apply = spec_.apply_b_dec_to_input ? 1 : 0;
    const bool topk = spec_.activation == Activation::TopK;
    const int rows_pad = (n + cuda::SCREEN_BM - 1) / cuda::SCREEN_BM * cuda::SCREEN_BM;
    const int parts = screen_parts(rows_pad / cuda::SCREEN_BM);
    s.xb.resize(static_cast<size_t>(rows_pad) * Kp_);
    s.rnorm.resize(rows_pad);
    s.rerr.resize(rows_pad);
    s.cand_d.resize(static_cast<size_t>(parts) * rows_pad * cap);
    s.cand_j.resize(static_cast<size_t>(parts) * rows_pad * cap);
    s.ncand.resize(static_cast<size_t>(parts) * rows_pad);
    if (parts > 1) s.merged_j.resize(static_cast<size_t>(rows_pad) * cap);
    SAEKIT_LAUNCH(cuda::screen_prep_rows_kernel, static_cast<unsigned>(std::min(65535, (rows_pad + 3) / 4)), 128, s.stream, s.x.get(), b_dec_.get(), apply, n,
                  rows_pad, din, Kp_, s.xb.get(), s.rnorm.get(), s.rerr.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    SAEKIT_LAUNCH(cuda::screen_candidates_kernel, dim3(static_cast<unsigned>(std::min(65535, rows_pad / cuda::SCREEN_BM)), static_cast<unsigned>(parts)),
                  cuda::SCREEN_THREADS, s.stream, s.xb.get(), Wt_.get(), b_enc_.get(), s.rnorm.get(), s.rerr.get(), werr_.get(), wtil_.get(),
                  topk ? nullptr : admit_.get(), n, rows_pad, din, Kp_, dsae, Np_, k, cap, s.cand_d.get(), s.cand_j.get(), s.ncand.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    if (parts == 1) return s.cand_j.get();
    // The threshold architectures keep every admitted latent: the merge joins without a cut.
    SAEKIT_LAUNCH(cuda::screen_merge_kernel, static_cast<unsigned>(std::min(65535, (n + 3) / 4)), 128, s.stream, s.cand_d.get(), s.cand_j.get(), s.ncand.get(),
                  parts, n, rows_pad, cap, topk ? k : INT_MAX, din, b_enc_.get(), werr_.get(), wtil_.get(), s.rnorm.get(), s.rerr.get(), s.merged_j.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    return s.merged_j.get();
  }

  /** The top-k kernels on the slot's staged rows, then (COPY_BACK) the [n, k] results to its pinned buffers. */
  void launch_topk(Slot& s, bool copy_back = true) {
    const int n = s.n, k = static_cast<int>(spec_.k);
    const int din = static_cast<int>(spec_.d_in), dsae = static_cast<int>(spec_.d_sae), apply = spec_.apply_b_dec_to_input ? 1 : 0;
    s.oi.resize(static_cast<size_t>(n) * k);
    s.ov.resize(static_cast<size_t>(n) * k);
    s.oc.resize(n);
    if (screened_) {
      const int cap = cuda::screen_default_cap(k);
      const int32_t* cand = launch_screen(s, k, cap);
      SAEKIT_LAUNCH(cuda::screen_rescore_kernel, static_cast<unsigned>(std::min(65535, (n + 3) / 4)), 128, s.stream, s.x.get(), WT_.get(), b_enc_.get(),
                    b_dec_.get(), apply, n, din, dsae, k, cap, cand, s.ncand.get(), s.oi.get(), s.ov.get(), s.oc.get());
      SAEKIT_CUDA_CHECK(cudaGetLastError());
    } else {
      const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + cuda::ENCODE_WARPS_PER_BLOCK - 1) / cuda::ENCODE_WARPS_PER_BLOCK, 65535));
      SAEKIT_LAUNCH(cuda::encode_topk_f32_kernel, grid, 32 * cuda::ENCODE_WARPS_PER_BLOCK, s.stream, s.x.get(), W_enc_.get(), b_enc_.get(), b_dec_.get(), apply,
                    n, din, dsae, k, s.oi.get(), s.ov.get(), s.oc.get());
      SAEKIT_CUDA_CHECK(cudaGetLastError());
    }
    if (!copy_back) return;
    s.hi.resize(static_cast<size_t>(n) * k);
    s.hv.resize(static_cast<size_t>(n) * k);
    s.hc.resize(n);
    copy_to_host(s.hi.get(), s.oi.get(), static_cast<size_t>(n) * k, s.stream);
    copy_to_host(s.hv.get(), s.ov.get(), static_cast<size_t>(n) * k, s.stream);
    copy_to_host(s.hc.get(), s.oc.get(), n, s.stream);
  }

  /** Waits for the slot's chunk and appends its [n, k] slot outputs to OUT's CSR. */
  void collect_topk(Slot& s, SparseCodes* out) {
    SAEKIT_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    const int k = static_cast<int>(spec_.k);
    for (int r = 0; r < s.n; ++r) {
      const int32_t* idx = s.hi.get() + static_cast<size_t>(r) * k;
      const float* val = s.hv.get() + static_cast<size_t>(r) * k;
      out->indices.insert(out->indices.end(), idx, idx + s.hc.get()[r]);
      out->values.insert(out->values.end(), val, val + s.hc.get()[r]);
      out->indptr[s.r0 + r + 1] = static_cast<uint32_t>(out->indices.size());
    }
    s.n = 0;
  }

  /** Count then fill (kernels/encode_threshold.cuh), synchronous: the host turns the counts into row offsets. */
  /**
   * Standard / jumprelu, count then fill: the tensor-core screen's candidates rescored in fp32
   * (kernels/encode_screened.cuh) or the fp32 kernel over every latent
   * (kernels/encode_threshold.cuh), same keep rule and values either way.
   */
  void encode_threshold(Slot& s, SparseCodes* out) {
    const int n = s.n, din = static_cast<int>(spec_.d_in), dsae = static_cast<int>(spec_.d_sae), apply = spec_.apply_b_dec_to_input ? 1 : 0;
    const float* th = spec_.activation == Activation::JumpReLU ? threshold_.get() : nullptr;
    if (screened_) {
      const int cap = cuda::SCREEN_THRESHOLD_CAP;
      const int32_t* cand = launch_screen(s, 0, cap);
      const unsigned grid = static_cast<unsigned>(std::min(65535, (n + 3) / 4));
      // Candidates arrive in list order: each row is sorted by latent on the way out.
      count_then_fill(s, out, true, [&](const uint32_t* indptr, int32_t* count, int32_t* idx, float* val) {
        SAEKIT_LAUNCH(cuda::screen_rescore_threshold_kernel, grid, 128, s.stream, s.x.get(), WT_.get(), b_enc_.get(), b_dec_.get(), th, apply, n, din, dsae, cap,
                      cand, s.ncand.get(), indptr, count, idx, val);
      });
      return;
    }
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK - 1) / cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK, 65535));
    count_then_fill(s, out, false, [&](const uint32_t* indptr, int32_t* count, int32_t* idx, float* val) {
      SAEKIT_LAUNCH(cuda::encode_threshold_f32_kernel, grid, 32 * cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK, s.stream, s.x.get(), W_enc_.get(), b_enc_.get(),
                    b_dec_.get(), th, apply, n, din, dsae, indptr, count, idx, val);
    });
  }

  /**
   * The count-then-fill protocol on the slot's stream: PASS(nullptr, counts, nullptr, nullptr)
   * writes each row's count, the host turns them into row offsets, PASS(indptr, nullptr,
   * indices, values) fills; the result is appended to OUT's CSR (each row sorted by latent when
   * SORT_ROWS).
   */
  template <class Pass>
  void count_then_fill(Slot& s, SparseCodes* out, bool sort_rows, Pass pass) {
    const int n = s.n;
    s.oc.resize(n);
    s.hc.resize(n);
    pass(static_cast<const uint32_t*>(nullptr), s.oc.get(), static_cast<int32_t*>(nullptr), static_cast<float*>(nullptr));
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    copy_to_host(s.hc.get(), s.oc.get(), n, s.stream);
    SAEKIT_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    s.hptr.resize(static_cast<size_t>(n) + 1);
    uint32_t* ip = s.hptr.get();
    ip[0] = 0;
    for (int r = 0; r < n; ++r) ip[r + 1] = ip[r] + static_cast<uint32_t>(s.hc.get()[r]);
    const uint32_t nnz = ip[n];
    s.indptr.resize(static_cast<size_t>(n) + 1);
    s.oi.resize(nnz);
    s.ov.resize(nnz);
    copy_to_device(s.indptr.get(), ip, static_cast<size_t>(n) + 1, s.stream);
    pass(static_cast<const uint32_t*>(s.indptr.get()), static_cast<int32_t*>(nullptr), s.oi.get(), s.ov.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    s.hi.resize(nnz);
    s.hv.resize(nnz);
    copy_to_host(s.hi.get(), s.oi.get(), nnz, s.stream);
    copy_to_host(s.hv.get(), s.ov.get(), nnz, s.stream);
    SAEKIT_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    const size_t base = out->indices.size();
    out->indices.resize(base + nnz);
    out->values.resize(base + nnz);
    std::vector<std::pair<int32_t, float>> row;
    for (int r = 0; r < n; ++r) {
      if (sort_rows) {
        row.clear();
        for (uint32_t e = ip[r]; e < ip[r + 1]; ++e) row.emplace_back(s.hi.get()[e], s.hv.get()[e]);
        std::sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
        for (size_t e = 0; e < row.size(); ++e) {
          out->indices[base + ip[r] + e] = row[e].first;
          out->values[base + ip[r] + e] = row[e].second;
        }
      } else {
        std::copy(s.hi.get() + ip[r], s.hi.get() + ip[r + 1], out->indices.data() + base + ip[r]);
        std::copy(s.hv.get() + ip[r], s.hv.get() + ip[r + 1], out->values.data() + base + ip[r]);
      }
      out->indptr[s.r0 + r + 1] = static_cast<uint32_t>(base + ip[r + 1]);
    }
    s.n = 0;
  }

  /** Waits for the slot's decoded chunk and writes it to OUT, undoing the per-row normalization. */
  void finish_decode(Slot& s, const SparseCodesView& c, float* out) {
    SAEKIT_CUDA_CHECK(cudaStreamSynchronize(s.stream));
    const int64_t din = spec_.out_width();  // the row width decode writes
    const float* y = s.hx.get();
    for (int r = 0; r < s.n; ++r) {
      const int64_t row = s.r0 + r;
      float* o = out + row * din;
      const float* yr = y + static_cast<int64_t>(r) * din;
      const float scale = c.row_scale ? c.row_scale[row] : 1.0f, shift = c.row_shift ? c.row_shift[row] : 0.0f;
      if (scale == 1.0f && shift == 0.0f) std::copy(yr, yr + din, o);
      else
        for (int64_t i = 0; i < din; ++i) o[i] = yr[i] * scale + shift;
    }
    s.n = 0;
  }

  SaeSpec spec_;
  std::mutex mu_;  // one encode or decode at a time: they share the slots
  DeviceBuffer<float> W_enc_, b_enc_, W_dec_, b_dec_, threshold_;
  Slot slots_[2];
  // The tensor-core screen (topk, k <= SCREEN_MAX_K): bf16 W_enc, fp32 latent-major W_enc, norms.
  bool screened_ = false;
  int Kp_ = 0, Np_ = 0, sm_count_ = 1;
  DeviceBuffer<uint16_t> Wt_;
  DeviceBuffer<float> WT_, werr_, wtil_, admit_;
};

}  // namespace
}  // namespace saekit
