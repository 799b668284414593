// The CUDA backend's model: weights on the device, the fp32 baseline kernels launched per
// chunk of rows, CSR assembled on the host. A header so that the same code is compiled by nvcc
// into the addon (cuda_backend.cu) and by g++ against the CPU emulation (emu/), where CI runs
// it through the backend interface against the CPU backend.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "../backend.h"
#include "../error.h"
#include "kernels/decode.cuh"
#include "kernels/encode_threshold.cuh"
#include "kernels/encode_screened.cuh"
#include "kernels/encode_topk.cuh"

#if defined(__CUDACC__)
#define SAEKIT_LAUNCH(kernel, grid, block, ...) kernel<<<(grid), (block)>>>(__VA_ARGS__)
#else
#define SAEKIT_LAUNCH(kernel, grid, block, ...) ::saekit::emu::launch(::saekit::emu::dim3(grid), ::saekit::emu::dim3(block), kernel, __VA_ARGS__)
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

/** A device allocation freed with its owner. */
template <class T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) { resize(n); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  void resize(size_t n) {
    if (n <= cap_) return;
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    cap_ = 0;
    SAEKIT_CUDA_CHECK(cudaMalloc(&ptr_, std::max<size_t>(n, 1) * sizeof(T)));
    cap_ = n;
  }
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
  T* ptr_ = nullptr;
  size_t cap_ = 0;
};

/**
 * The SAE on the GPU with the fp32 baseline kernels (kernels/, tested under CPU emulation):
 * weights uploaded once, inputs processed in chunks of rows so any batch fits the card.
 * Synchronous copies for now; pinned buffers and copy/compute overlap come with the tensor-core
 * kernels.
 */
class CudaModel final : public BackendModel {
 public:
  CudaModel(const SaeSpec& spec, const SaeWeightsView& w) : spec_(spec) {
    if (spec.normalization != Normalization::None) throw Error("CUDA backend: per-row input normalization is not implemented yet; use device 'cpu'");
    if (spec.activation == Activation::TopK && (spec.k < 1 || spec.k > cuda::ENCODE_TOPK_MAX_K || spec.k > spec.d_sae)) {
      throw Error("CUDA backend: top-k with k = " + std::to_string(spec.k) + " is not supported (1 <= k <= " + std::to_string(cuda::ENCODE_TOPK_MAX_K) + ")");
    }
    SAEKIT_CUDA_CHECK(cudaSetDevice(0));
    const size_t din = static_cast<size_t>(spec.d_in), dsae = static_cast<size_t>(spec.d_sae);
    // Screened top-k reads W_enc latent-major (the rescoring) and in bf16 (the screen) only.
    if (spec.activation == Activation::TopK && spec.k <= cuda::SCREEN_MAX_K && screening_enabled()) {
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
    W_dec_.upload(w.W_dec, dsae * din);
    b_dec_.upload(w.b_dec, din);
    if (spec.activation == Activation::JumpReLU) threshold_.upload(w.threshold, dsae);
  }

  void encode(const float* x, int64_t rows, SparseCodes* out) override {
    const int64_t din = spec_.d_in;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < din; ++i)
        if (!std::isfinite(x[r * din + i])) throw InputError("non-finite input", r, i);
    out->indptr.assign(static_cast<size_t>(rows) + 1, 0);
    out->indices.clear();
    out->values.clear();
    out->row_scale.clear();
    out->row_shift.clear();
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(rows, (int64_t{1} << 26) / std::max<int64_t>(din, 1)));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
      const int n = static_cast<int>(std::min(chunk, rows - r0));
      x_.upload(x + r0 * din, static_cast<size_t>(n) * din);
      if (spec_.activation == Activation::TopK) encode_topk(n, r0, out);
      else encode_threshold(n, r0, out);
    }
  }

  void decode(const SparseCodesView& c, float* out) override {
    const int64_t din = spec_.d_in;
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(c.rows, (int64_t{1} << 26) / std::max<int64_t>(din, 1)));
    for (int64_t r0 = 0; r0 < c.rows; r0 += chunk) {
      const int64_t n = std::min(chunk, c.rows - r0);
      const uint32_t base = c.indptr[r0];
      std::vector<uint32_t> ip(static_cast<size_t>(n) + 1);
      for (int64_t r = 0; r <= n; ++r) ip[r] = c.indptr[r0 + r] - base;
      indptr_.upload(ip.data(), ip.size());
      idx_.upload(c.indices + base, ip[n]);
      val_.upload(c.values + base, ip[n]);
      y_.resize(static_cast<size_t>(n) * din);
      SAEKIT_LAUNCH(cuda::sparse_decode_kernel, static_cast<unsigned>(std::min<int64_t>(n, 65535)), 128, W_dec_.get(), b_dec_.get(), indptr_.get(), idx_.get(),
                                                                                          val_.get(), static_cast<int>(n), static_cast<int>(din), y_.get());
      SAEKIT_CUDA_CHECK(cudaGetLastError());
      y_.download(out + r0 * din, static_cast<size_t>(n) * din);
    }
  }

  int64_t bytes() const override {
    return static_cast<int64_t>(W_enc_.bytes() + b_enc_.bytes() + W_dec_.bytes() + b_dec_.bytes() + threshold_.bytes() + Wt_.bytes() + WT_.bytes() +
                                werr_.bytes() + wtil_.bytes());
  }

 private:
  /** SAEKIT_SCREEN=0 turns the tensor-core screen off (fp32 kernel), as on the CPU. */
  static bool screening_enabled() {
    const char* v = std::getenv("SAEKIT_SCREEN");
    return v == nullptr || std::string(v) != "0";
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

  /** Exact top-k through the tensor-core screen (kernels/encode_screened.cuh). */
  void encode_topk_screened(int n, int k) {
    const int rows_pad = (n + cuda::SCREEN_BM - 1) / cuda::SCREEN_BM * cuda::SCREEN_BM;
    const int cap = cuda::screen_default_cap(k);
    const int din = static_cast<int>(spec_.d_in), dsae = static_cast<int>(spec_.d_sae), apply = spec_.apply_b_dec_to_input ? 1 : 0;
    xb_.resize(static_cast<size_t>(rows_pad) * Kp_);
    rnorm_.resize(rows_pad);
    rerr_.resize(rows_pad);
    cand_d_.resize(static_cast<size_t>(rows_pad) * cap);
    cand_j_.resize(static_cast<size_t>(rows_pad) * cap);
    ncand_.resize(rows_pad);
    SAEKIT_LAUNCH(cuda::screen_prep_rows_kernel, static_cast<unsigned>(std::min(65535, (rows_pad + 3) / 4)), 128, x_.get(), b_dec_.get(), apply, n, rows_pad,
                  din, Kp_, xb_.get(), rnorm_.get(), rerr_.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    SAEKIT_LAUNCH(cuda::screen_candidates_kernel, static_cast<unsigned>(std::min(65535, rows_pad / cuda::SCREEN_BM)), cuda::SCREEN_THREADS, xb_.get(), Wt_.get(),
                  b_enc_.get(), rnorm_.get(), rerr_.get(), werr_.get(), wtil_.get(), n, rows_pad, din, Kp_, dsae, Np_, k, cap, cand_d_.get(), cand_j_.get(),
                  ncand_.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    SAEKIT_LAUNCH(cuda::screen_rescore_kernel, static_cast<unsigned>(std::min(65535, (n + 3) / 4)), 128, x_.get(), WT_.get(), b_enc_.get(), b_dec_.get(), apply,
                  n, din, dsae, k, cap, cand_j_.get(), ncand_.get(), oi_.get(), ov_.get(), oc_.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
  }

  void encode_topk(int n, int64_t r0, SparseCodes* out) {
    const int k = static_cast<int>(spec_.k);
    oi_.resize(static_cast<size_t>(n) * k);
    ov_.resize(static_cast<size_t>(n) * k);
    oc_.resize(n);
    if (screened_) {
      encode_topk_screened(n, k);
      collect_topk(n, k, r0, out);
      return;
    }
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + cuda::ENCODE_WARPS_PER_BLOCK - 1) / cuda::ENCODE_WARPS_PER_BLOCK, 65535));
    SAEKIT_LAUNCH(cuda::encode_topk_f32_kernel, grid, 32 * cuda::ENCODE_WARPS_PER_BLOCK, x_.get(), W_enc_.get(), b_enc_.get(), b_dec_.get(), spec_.apply_b_dec_to_input ? 1 : 0, n,
                                                                              static_cast<int>(spec_.d_in), static_cast<int>(spec_.d_sae), k, oi_.get(), ov_.get(), oc_.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    collect_topk(n, k, r0, out);
  }

  /** The [n, k] slot outputs of a top-k kernel appended to OUT's CSR. */
  void collect_topk(int n, int k, int64_t r0, SparseCodes* out) {
    std::vector<int32_t> idx(static_cast<size_t>(n) * k), cnt(n);
    std::vector<float> val(static_cast<size_t>(n) * k);
    oi_.download(idx.data(), idx.size());
    ov_.download(val.data(), val.size());
    oc_.download(cnt.data(), cnt.size());
    for (int r = 0; r < n; ++r) {
      for (int e = 0; e < cnt[r]; ++e) {
        out->indices.push_back(idx[static_cast<size_t>(r) * k + e]);
        out->values.push_back(val[static_cast<size_t>(r) * k + e]);
      }
      out->indptr[r0 + r + 1] = static_cast<uint32_t>(out->indices.size());
    }
  }

  void encode_threshold(int n, int64_t r0, SparseCodes* out) {
    const float* th = spec_.activation == Activation::JumpReLU ? threshold_.get() : nullptr;
    const unsigned grid = static_cast<unsigned>(std::min<int64_t>((n + cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK - 1) / cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK, 65535));
    const unsigned block = 32 * cuda::ENCODE_THRESHOLD_WARPS_PER_BLOCK;
    const int din = static_cast<int>(spec_.d_in), dsae = static_cast<int>(spec_.d_sae), apply = spec_.apply_b_dec_to_input ? 1 : 0;
    oc_.resize(n);
    SAEKIT_LAUNCH(cuda::encode_threshold_f32_kernel, grid, block, x_.get(), W_enc_.get(), b_enc_.get(), b_dec_.get(), th, apply, n, din, dsae, nullptr, oc_.get(), nullptr, nullptr);
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    std::vector<int32_t> cnt(n);
    oc_.download(cnt.data(), cnt.size());
    std::vector<uint32_t> ip(static_cast<size_t>(n) + 1, 0);
    for (int r = 0; r < n; ++r) ip[r + 1] = ip[r] + static_cast<uint32_t>(cnt[r]);
    indptr_.upload(ip.data(), ip.size());
    oi_.resize(ip[n]);
    ov_.resize(ip[n]);
    SAEKIT_LAUNCH(cuda::encode_threshold_f32_kernel, grid, block, x_.get(), W_enc_.get(), b_enc_.get(), b_dec_.get(), th, apply, n, din, dsae, indptr_.get(), nullptr, oi_.get(), ov_.get());
    SAEKIT_CUDA_CHECK(cudaGetLastError());
    const size_t base = out->indices.size();
    out->indices.resize(base + ip[n]);
    out->values.resize(base + ip[n]);
    oi_.download(out->indices.data() + base, ip[n]);
    ov_.download(out->values.data() + base, ip[n]);
    for (int r = 0; r < n; ++r) out->indptr[r0 + r + 1] = static_cast<uint32_t>(base + ip[r + 1]);
  }

  SaeSpec spec_;
  DeviceBuffer<float> W_enc_, b_enc_, W_dec_, b_dec_, threshold_, x_, y_, ov_, val_;
  DeviceBuffer<int32_t> oi_, oc_, idx_;
  DeviceBuffer<uint32_t> indptr_;
  // The tensor-core screen (topk, k <= SCREEN_MAX_K): bf16 W_enc, per-latent norms, scratch.
  bool screened_ = false;
  int Kp_ = 0, Np_ = 0;
  DeviceBuffer<uint16_t> Wt_, xb_;
  DeviceBuffer<float> WT_, werr_, wtil_, rnorm_, rerr_, cand_d_;
  DeviceBuffer<int32_t> cand_j_, ncand_;
};

}  // namespace
}  // namespace saekit
