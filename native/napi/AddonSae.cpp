// The N-API surface of a loaded SAE. The TypeScript layer (src/addon.ts types it) has already
// validated shapes and dtypes; here we unpack typed arrays, keep them alive while a worker reads
// them (Napi::Persistent), and check again what a wrong value would turn into an out-of-bounds
// read (lengths, code offsets and indices), so a caller that bypasses the TS layer gets an error.
// A buffer transferred/detached by JS while a worker runs is not detected: the TS layer
// documents that inputs must not be transferred mid-call.
#include "AddonSae.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "../error.h"
#include "instance_data.h"
#include "promise_worker.h"

namespace saekit::napi {
namespace {

// Float32Array-like views: works for ArrayBuffer and SharedArrayBuffer backed arrays.
const float* floats(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return nullptr;
  return v.As<Napi::Float32Array>().Data();
}

// One typed-array member of a JS object, of the one element type the native side reads.
template <typename Arr>
Arr typed(const Napi::Object& o, const char* key, napi_typedarray_type type) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw Error(std::string("decode: codes.") + key + " is not a typed array of the expected element type");
  return v.As<Arr>();
}

Activation parse_activation(const std::string& s) {
  if (s == "standard") return Activation::Standard;
  if (s == "topk") return Activation::TopK;
  if (s == "jumprelu") return Activation::JumpReLU;
  throw Error("unknown architecture '" + s + "'");
}

Normalization parse_normalization(const std::string& s) {
  if (s == "none" || s == "expected_average_only_in") return Normalization::None;
  if (s == "constant_norm_rescale") return Normalization::ConstantNormRescale;
  if (s == "layer_norm") return Normalization::LayerNorm;
  throw Error("unknown normalization '" + s + "'");
}

template <typename Arr, typename T>
Arr copy_out(Napi::Env env, const std::vector<T>& v) {
  Arr a = Arr::New(env, v.size());
  if (!v.empty()) std::memcpy(a.Data(), v.data(), v.size() * sizeof(T));
  return a;
}

class LoadWorker final : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, const Napi::Object& weights, SaeSpec spec, Backend* backend)
      : PromiseWorker(env), weights_ref_(Napi::Persistent(weights)), spec_(spec), backend_(backend) {
    view_.W_enc = floats(weights, "W_enc");
    view_.enc_transposed = weights.Get("encTransposed").ToBoolean();
    view_.b_enc = floats(weights, "b_enc");
    view_.W_dec = floats(weights, "W_dec");
    view_.b_dec = floats(weights, "b_dec");
    view_.threshold = floats(weights, "threshold");
    view_.W_skip = floats(weights, "W_skip");
  }

 protected:
  void Run() override { model_ = std::shared_ptr<BackendModel>(backend_->load(spec_, view_)); }

  Napi::Value Result(Napi::Env env) override {
    auto* holder = new std::shared_ptr<BackendModel>(model_);
    auto ext = Napi::External<std::shared_ptr<BackendModel>>::New(env, holder);
    Napi::Object spec = Napi::Object::New(env);
    spec.Set("dIn", static_cast<double>(spec_.d_in));
    spec.Set("dSae", static_cast<double>(spec_.d_sae));
    spec.Set("k", static_cast<double>(spec_.k));
    spec.Set("activation", static_cast<double>(static_cast<int>(spec_.activation)));
    spec.Set("normalization", static_cast<double>(static_cast<int>(spec_.normalization)));
    spec.Set("applyBDec", spec_.apply_b_dec_to_input);
    spec.Set("dOut", static_cast<double>(spec_.out_width()));
    Napi::Object obj = env.GetInstanceData<InstanceData>()->sae.New({ext, spec});
    delete holder;
    return obj;
  }

 private:
  Napi::ObjectReference weights_ref_;
  SaeSpec spec_;
  SaeWeightsView view_;
  Backend* backend_;
  std::shared_ptr<BackendModel> model_;
};

// A call's optional cancel word: an Int32Array(1) the JS side sets (Atomics.store) when the
// call's AbortSignal fires; the backend polls it. Referenced until the worker is deleted, so
// the memory outlives every read.
struct CancelWord {
  Napi::Reference<Napi::Int32Array> ref;
  CancelFlag flag;

  static CancelWord from(const Napi::Value& v) {
    CancelWord w;
    if (v.IsUndefined()) return w;
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array || v.As<Napi::Int32Array>().ElementLength() < 1)
      throw Napi::TypeError::New(v.Env(), "the cancel word must be an Int32Array of length >= 1");
    auto a = v.As<Napi::Int32Array>();
    w.ref = Napi::Persistent(a);
    w.flag = CancelFlag(a.Data());
    return w;
  }
};

class EncodeWorker final : public PromiseWorker {
 public:
  EncodeWorker(Napi::Env env, std::shared_ptr<BackendModel> model, const Napi::Float32Array& x, int64_t rows, CancelWord cancel)
      : PromiseWorker(env), model_(std::move(model)), x_ref_(Napi::Persistent(x)), x_(x.Data()), rows_(rows), cancel_(std::move(cancel)) {}

 protected:
  void Run() override { model_->encode(x_, rows_, &codes_, cancel_.flag); }

  Napi::Value Result(Napi::Env env) override {
    Napi::Object o = Napi::Object::New(env);
    o.Set("indptr", copy_out<Napi::Uint32Array>(env, codes_.indptr));
    o.Set("indices", copy_out<Napi::Int32Array>(env, codes_.indices));
    o.Set("values", copy_out<Napi::Float32Array>(env, codes_.values));
    if (!codes_.row_scale.empty()) {
      o.Set("rowScale", copy_out<Napi::Float32Array>(env, codes_.row_scale));
      o.Set("rowShift", copy_out<Napi::Float32Array>(env, codes_.row_shift));
    }
    return o;
  }

 private:
  std::shared_ptr<BackendModel> model_;
  Napi::Reference<Napi::Float32Array> x_ref_;
  const float* x_;
  int64_t rows_;
  CancelWord cancel_;
  SparseCodes codes_;
};

class DecodeWorker final : public PromiseWorker {
 public:
  DecodeWorker(Napi::Env env, std::shared_ptr<BackendModel> model, const SaeSpec& spec, const Napi::Object& codes,
               Napi::Float32Array out, CancelWord cancel)
      : PromiseWorker(env), model_(std::move(model)), codes_ref_(Napi::Persistent(codes)), out_ref_(Napi::Persistent(out)), spec_(spec),
        cancel_(std::move(cancel)) {
    auto indptr = typed<Napi::Uint32Array>(codes, "indptr", napi_uint32_array);
    auto indices = typed<Napi::Int32Array>(codes, "indices", napi_int32_array);
    auto values = typed<Napi::Float32Array>(codes, "values", napi_float32_array);
    if (indptr.ElementLength() < 1) throw Error("decode: codes.indptr is empty (it holds rows + 1 offsets)");
    view_.indptr = indptr.Data();
    view_.rows = static_cast<int64_t>(indptr.ElementLength()) - 1;
    view_.indices = indices.Data();
    view_.values = values.Data();
    nnz_capacity_ = std::min(indices.ElementLength(), values.ElementLength());
    view_.row_scale = floats(codes, "rowScale");
    view_.row_shift = floats(codes, "rowShift");
    if ((view_.row_scale && codes.Get("rowScale").As<Napi::Float32Array>().ElementLength() < static_cast<size_t>(view_.rows)) ||
        (view_.row_shift && codes.Get("rowShift").As<Napi::Float32Array>().ElementLength() < static_cast<size_t>(view_.rows)))
      throw Error("decode: codes.rowScale/rowShift hold fewer than one value per row");
    if (out.ElementLength() < static_cast<size_t>(view_.rows * spec_.out_width()))
      throw Error("decode: the output holds " + std::to_string(out.ElementLength()) + " floats, fewer than rows * d_in = " +
                  std::to_string(view_.rows * spec_.out_width()));
    out_ = out.Data();
  }

 protected:
  // The TS layer validates codes (src/codes.ts); this second check, O(nnz) off the JS thread,
  // keeps a bad offset or an index >= d_sae from ever reaching a gather.
  void Run() override {
    const uint32_t* p = view_.indptr;
    if (p[0] != 0) throw InputError("decode: codes.indptr[0] is " + std::to_string(p[0]) + ", not 0", 0, -1);
    for (int64_t r = 0; r < view_.rows; r++) {
      if (p[r + 1] < p[r] || p[r + 1] > nnz_capacity_)
        throw InputError("decode: codes.indptr[" + std::to_string(r + 1) + "] = " + std::to_string(p[r + 1]) +
                             " is below the row's start or past the " + std::to_string(nnz_capacity_) + " stored codes",
                         r, -1);
      for (uint32_t i = p[r]; i < p[r + 1]; i++) {
        const int32_t j = view_.indices[i];
        if (j < 0 || j >= spec_.d_sae)
          throw InputError("decode: codes.indices[" + std::to_string(i) + "] = " + std::to_string(j) + " is outside [0, d_sae = " +
                               std::to_string(spec_.d_sae) + ")",
                           r, j);
      }
    }
    model_->decode(view_, out_, cancel_.flag);
  }
  Napi::Value Result(Napi::Env) override { return out_ref_.Value(); }

 private:
  std::shared_ptr<BackendModel> model_;
  Napi::ObjectReference codes_ref_;
  Napi::Reference<Napi::Float32Array> out_ref_;
  SparseCodesView view_;
  SaeSpec spec_;
  CancelWord cancel_;
  size_t nnz_capacity_ = 0;
  float* out_;
};

// out [rows, d_out] += x [rows, d_in] @ W_skip^T (skip transcoders).
class SkipWorker final : public PromiseWorker {
 public:
  SkipWorker(Napi::Env env, std::shared_ptr<BackendModel> model, const Napi::Float32Array& x, int64_t rows, Napi::Float32Array out,
             CancelWord cancel)
      : PromiseWorker(env), model_(std::move(model)), x_ref_(Napi::Persistent(x)), out_ref_(Napi::Persistent(out)), x_(x.Data()),
        out_(out.Data()), rows_(rows), cancel_(std::move(cancel)) {}

 protected:
  void Run() override { model_->add_skip(x_, rows_, out_, cancel_.flag); }
  Napi::Value Result(Napi::Env) override { return out_ref_.Value(); }

 private:
  std::shared_ptr<BackendModel> model_;
  Napi::Reference<Napi::Float32Array> x_ref_, out_ref_;
  const float* x_;
  float* out_;
  int64_t rows_;
  CancelWord cancel_;
};

}  // namespace

Napi::Function AddonSae::Define(Napi::Env env) {
  Napi::Function f = DefineClass(env, "AddonSae",
                                 {InstanceMethod("encode", &AddonSae::Encode), InstanceMethod("decode", &AddonSae::Decode),
                                  InstanceMethod("addSkip", &AddonSae::AddSkip),
                                  InstanceMethod("dispose", &AddonSae::Dispose), InstanceMethod("bytes", &AddonSae::Bytes),
                                  InstanceMethod("hintMisses", &AddonSae::HintMisses),
                                  InstanceMethod("screenStats", &AddonSae::ScreenStats),
                                  InstanceMethod("kernelReport", &AddonSae::KernelReport)});
  return f;
}

AddonSae::AddonSae(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonSae>(info) {
  if (info.Length() < 2 || !info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "AddonSae is created by createSae()").ThrowAsJavaScriptException();
    return;
  }
  model_ = *info[0].As<Napi::External<std::shared_ptr<BackendModel>>>().Data();
  Napi::Object spec = info[1].As<Napi::Object>();
  spec_.d_in = spec.Get("dIn").As<Napi::Number>().Int64Value();
  spec_.d_sae = spec.Get("dSae").As<Napi::Number>().Int64Value();
  spec_.d_out = spec.Get("dOut").As<Napi::Number>().Int64Value();
}

// createSae(spec, weights, device) -> Promise<AddonSae>
Napi::Value AddonSae::Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    Napi::Object s = info[0].As<Napi::Object>();
    SaeSpec spec;
    spec.d_in = s.Get("dIn").As<Napi::Number>().Int64Value();
    spec.d_sae = s.Get("dSae").As<Napi::Number>().Int64Value();
    spec.k = s.Get("k").IsNumber() ? s.Get("k").As<Napi::Number>().Int64Value() : 0;
    spec.activation = parse_activation(s.Get("architecture").As<Napi::String>());
    spec.normalization = parse_normalization(s.Get("normalizeActivations").As<Napi::String>());
    spec.apply_b_dec_to_input = s.Get("applyBDecToInput").ToBoolean();
    spec.d_out = s.Get("dOut").IsNumber() ? s.Get("dOut").As<Napi::Number>().Int64Value() : 0;
    spec.skip = s.Get("skip").ToBoolean();
    if (spec.skip && !info[1].As<Napi::Object>().Get("W_skip").IsTypedArray()) throw Error("createSae: spec.skip is set but weights.W_skip is missing");
    const std::string device = info[2].As<Napi::String>();
    Backend* backend = device == "cuda" ? cuda_backend() : &cpu_backend();
    if (backend == nullptr) throw Error("this build of saekit has no CUDA backend (built without nvcc or with SAEKIT_CPU_ONLY)");
    auto* w = new LoadWorker(env, info[1].As<Napi::Object>(), spec, backend);
    Napi::Promise p = w->Promise();
    w->Queue();
    return p;
  } catch (const std::exception& e) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(Napi::Error::New(env, e.what()).Value());
    return d.Promise();
  }
}

std::shared_ptr<BackendModel> AddonSae::model(Napi::Env env) {
  if (!model_) throw Napi::Error::New(env, "this SAE was disposed");
  return model_;
}

// encode(x: Float32Array, rows, cancel?: Int32Array) -> Promise<{indptr, indices, values, rowScale?, rowShift?}>
Napi::Value AddonSae::Encode(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array || !info[1].IsNumber())
    throw Napi::TypeError::New(info.Env(), "encode(x: Float32Array, rows: number)");
  auto x = info[0].As<Napi::Float32Array>();
  int64_t rows = info[1].As<Napi::Number>().Int64Value();
  if (rows < 0 || static_cast<uint64_t>(rows) * static_cast<uint64_t>(spec_.d_in) > x.ElementLength())
    throw Napi::RangeError::New(info.Env(), "encode: " + std::to_string(rows) + " rows of d_in " + std::to_string(spec_.d_in) +
                                                " need more than the " + std::to_string(x.ElementLength()) + " floats given");
  auto* w = new EncodeWorker(info.Env(), model(info.Env()), x, rows, CancelWord::from(info[2]));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// decode(codes, out: Float32Array, cancel?: Int32Array) -> Promise<out>
Napi::Value AddonSae::Decode(const Napi::CallbackInfo& info) {
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsTypedArray())
    throw Napi::TypeError::New(info.Env(), "decode(codes, out: Float32Array)");
  DecodeWorker* w;
  try {
    w = new DecodeWorker(info.Env(), model(info.Env()), spec_, info[0].As<Napi::Object>(), info[1].As<Napi::Float32Array>(),
                         CancelWord::from(info[2]));
  } catch (const saekit::Error& e) {
    throw Napi::RangeError::New(info.Env(), e.what());
  }
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

// addSkip(x: Float32Array, rows, out: Float32Array, cancel?: Int32Array) -> Promise<out>
Napi::Value AddonSae::AddSkip(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const auto is_f32 = [](const Napi::Value& v) { return v.IsTypedArray() && v.As<Napi::TypedArray>().TypedArrayType() == napi_float32_array; };
  if (info.Length() < 3 || !is_f32(info[0]) || !info[1].IsNumber() || !is_f32(info[2]))
    throw Napi::TypeError::New(env, "addSkip(x: Float32Array, rows: number, out: Float32Array)");
  auto x = info[0].As<Napi::Float32Array>();
  auto out = info[2].As<Napi::Float32Array>();
  const int64_t rows = info[1].As<Napi::Number>().Int64Value();
  if (rows < 0 || static_cast<uint64_t>(rows) * static_cast<uint64_t>(spec_.d_in) > x.ElementLength() ||
      static_cast<uint64_t>(rows) * static_cast<uint64_t>(spec_.out_width()) > out.ElementLength())
    throw Napi::RangeError::New(env, "addSkip: " + std::to_string(rows) + " rows need " + std::to_string(rows * spec_.d_in) + " input and " +
                                         std::to_string(rows * spec_.out_width()) + " output floats");
  auto* w = new SkipWorker(env, model(env), x, rows, out, CancelWord::from(info[3]));
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

Napi::Value AddonSae::Dispose(const Napi::CallbackInfo& info) {
  model_.reset();
  return info.Env().Undefined();
}

Napi::Value AddonSae::Bytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), model_ ? static_cast<double>(model_->bytes()) : 0.0);
}

Napi::Value AddonSae::HintMisses(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), model_ ? static_cast<double>(model_->hint_misses()) : 0.0);
}

}  // namespace saekit::napi

namespace saekit::napi {

// screenStats() -> {rows, candidates, fallbacks, screen}
Napi::Value AddonSae::ScreenStats(const Napi::CallbackInfo& info) {
  int64_t rows = 0, candidates = 0, fallbacks = 0;
  if (model_) model_->screen_stats(&rows, &candidates, &fallbacks);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("rows", static_cast<double>(rows));
  o.Set("candidates", static_cast<double>(candidates));
  o.Set("fallbacks", static_cast<double>(fallbacks));
  o.Set("screen", model_ ? model_->last_screen() : "off");
  return o;
}

// kernelReport() -> JSON text: the measured encode kernel decisions (native/cpu/kernel_choice.h)
Napi::Value AddonSae::KernelReport(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), model_ ? model_->kernel_report() : std::string("[]"));
}

}  // namespace saekit::napi
