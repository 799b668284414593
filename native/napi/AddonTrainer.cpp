// The N-API surface of a trainer. src/train/trainer.ts validates everything first (shapes,
// option ranges); here typed arrays are unpacked and kept alive while a worker reads them.
#include "AddonTrainer.h"

#include <cstring>
#include <string>
#include <vector>

#include "../error.h"
#include "instance_data.h"
#include "promise_worker.h"

namespace saekit::napi {
namespace {

const float* floats(const Napi::Object& o, const char* key) {
  return o.Get(key).As<Napi::Float32Array>().Data();
}

double number(const Napi::Object& o, const char* key, double fallback) {
  Napi::Value v = o.Get(key);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : fallback;
}

}  // namespace

Napi::Function AddonTrainer::Define(Napi::Env env) {
  return DefineClass(env, "AddonTrainer",
                     {InstanceMethod("step", &AddonTrainer::Step), InstanceMethod("getState", &AddonTrainer::GetState),
                      InstanceMethod("setState", &AddonTrainer::SetState),
                      InstanceMethod("lastSelection", &AddonTrainer::LastSelection),
                      InstanceMethod("bytes", &AddonTrainer::Bytes), InstanceMethod("dispose", &AddonTrainer::Dispose)});
}

AddonTrainer::AddonTrainer(const Napi::CallbackInfo& info) : Napi::ObjectWrap<AddonTrainer>(info) {
  if (info.Length() < 1 || !info[0].IsExternal()) {
    Napi::TypeError::New(info.Env(), "AddonTrainer is created by createTrainer()").ThrowAsJavaScriptException();
    return;
  }
  handle_ = *info[0].As<Napi::External<std::shared_ptr<TrainerHandle>>>().Data();
}

// createTrainer({dIn, dSae, k, kAux, architecture}, {W_enc, b_enc, W_dec, b_dec}, device) -> Promise<AddonTrainer>
Napi::Value AddonTrainer::Create(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    Napi::Object s = info[0].As<Napi::Object>();
    TrainSpec spec;
    spec.d_in = s.Get("dIn").As<Napi::Number>().Int64Value();
    spec.d_sae = s.Get("dSae").As<Napi::Number>().Int64Value();
    spec.k = s.Get("k").As<Napi::Number>().Int64Value();
    spec.k_aux = static_cast<int64_t>(number(s, "kAux", 0));
    const std::string arch = s.Get("architecture").IsString() ? s.Get("architecture").As<Napi::String>().Utf8Value() : "topk";
    if (arch == "topk") spec.arch = TrainArch::TopK;
    else if (arch == "batchtopk") spec.arch = TrainArch::BatchTopK;
    else if (arch == "standard") spec.arch = TrainArch::Standard;
    else if (arch == "jumprelu") spec.arch = TrainArch::JumpReLU;
    else throw Error("unknown training architecture '" + arch + "'");
    spec.d_out = static_cast<int64_t>(number(s, "dOut", 0));
    spec.transcoder = s.Get("transcoder").ToBoolean();
    spec.skip = s.Get("skip").ToBoolean();
    if (s.Get("matryoshkaWidths").IsArray()) {
      Napi::Array widths = s.Get("matryoshkaWidths").As<Napi::Array>();
      for (uint32_t i = 0; i < widths.Length(); ++i) spec.matryoshka_widths.push_back(widths.Get(i).As<Napi::Number>().Int64Value());
    }
    Napi::Object params = info[1].As<Napi::Object>();
    TrainParamsView view;
    view.W_enc = floats(params, "W_enc");
    view.b_enc = floats(params, "b_enc");
    view.W_dec = floats(params, "W_dec");
    view.b_dec = floats(params, "b_dec");
    if (params.Get("log_threshold").IsTypedArray()) view.log_threshold = floats(params, "log_threshold");
    if (params.Get("W_skip").IsTypedArray()) view.W_skip = floats(params, "W_skip");
    const std::string device = info[2].As<Napi::String>();
    Backend* backend = device == "cuda" ? cuda_backend() : &cpu_backend();
    if (backend == nullptr) throw Error("this build of saekit has no CUDA backend");
    auto handle = std::make_shared<TrainerHandle>();
    auto params_ref = std::make_shared<Napi::ObjectReference>(Napi::Persistent(params));
    return queue(new LambdaWorker(
        env, [=] { handle->trainer = backend->trainer(spec, view); },
        [=](Napi::Env env) {
          params_ref->Reset();
          auto* holder = new std::shared_ptr<TrainerHandle>(handle);
          auto ext = Napi::External<std::shared_ptr<TrainerHandle>>::New(env, holder);
          Napi::Object obj = env.GetInstanceData<InstanceData>()->trainer.New({ext});
          delete holder;
          return obj;
        }));
  } catch (const std::exception& e) {
    auto d = Napi::Promise::Deferred::New(env);
    d.Reject(Napi::Error::New(env, e.what()).Value());
    return d.Promise();
  }
}

std::shared_ptr<TrainerHandle> AddonTrainer::idle(Napi::Env env) {
  if (!handle_) throw Napi::Error::New(env, "this trainer was disposed");
  if (handle_->busy) throw Napi::Error::New(env, "a training step is in flight: await it first");
  return handle_;
}

// step(x: Float32Array, y: Float32Array | null, rows, opts) -> Promise<stats>
Napi::Value AddonTrainer::Step(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<TrainerHandle> h = idle(env);
  auto x = info[0].As<Napi::Float32Array>();
  const bool has_y = info[1].IsTypedArray();
  const int64_t rows = info[2].As<Napi::Number>().Int64Value();
  Napi::Object o = info[3].As<Napi::Object>();
  TrainStepOptions opts;
  opts.input_scale = static_cast<float>(number(o, "inputScale", 1.0));
  opts.output_scale = static_cast<float>(number(o, "outputScale", 1.0));
  opts.lr = number(o, "lr", 0.0);
  opts.beta1 = number(o, "beta1", 0.9);
  opts.beta2 = number(o, "beta2", 0.999);
  opts.eps = number(o, "eps", 1e-8);
  opts.clip = number(o, "clip", 0.0);
  opts.t = static_cast<int64_t>(number(o, "t", 1.0));
  opts.aux_coeff = number(o, "auxCoeff", 0.0);
  opts.dead_tokens = number(o, "deadTokens", 0.0);
  opts.l1_coeff = number(o, "l1Coeff", 0.0);
  opts.l0_coeff = number(o, "l0Coeff", 0.0);
  opts.bandwidth = number(o, "bandwidth", 1e-3);
  opts.apply = o.Get("apply").IsBoolean() ? o.Get("apply").As<Napi::Boolean>().Value() : true;
  auto x_ref = std::make_shared<Napi::Reference<Napi::Float32Array>>(Napi::Persistent(x));
  const float* data = x.Data();
  std::shared_ptr<Napi::Reference<Napi::Float32Array>> y_ref;
  const float* target = nullptr;
  if (has_y) {
    auto y = info[1].As<Napi::Float32Array>();
    y_ref = std::make_shared<Napi::Reference<Napi::Float32Array>>(Napi::Persistent(y));
    target = y.Data();
  }
  auto stats = std::make_shared<TrainStepStats>();
  h->busy = true;
  return queue(new LambdaWorker(
      env,
      [=] { *stats = h->trainer->step(data, target, rows, opts); },
      [=](Napi::Env env) {
        x_ref->Reset();
        if (y_ref) y_ref->Reset();
        Napi::Object r = Napi::Object::New(env);
        r.Set("mse", stats->mse);
        r.Set("fvu", stats->fvu);
        r.Set("l0", stats->l0);
        r.Set("auxLoss", stats->aux_loss);
        r.Set("sparsityLoss", stats->l1_loss);
        r.Set("gradNorm", stats->grad_norm);
        r.Set("dead", static_cast<double>(stats->dead));
        r.Set("innerMse", stats->inner_mse);
        return r;
      },
      // Busy until the Promise settles (on the main thread), not merely until the kernel ends.
      [h] { h->busy = false; }));
}

// getState(name) -> Float32Array | Float64Array (a copy)
Napi::Value AddonTrainer::GetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<TrainerHandle> h = idle(env);
  const std::string name = info[0].As<Napi::String>();
  try {
    const int64_t n = h->trainer->state_size(name);
    if (h->trainer->state_is_f64(name)) {
      auto a = Napi::Float64Array::New(env, n);
      h->trainer->get_state(name, a.Data());
      return a;
    }
    auto a = Napi::Float32Array::New(env, n);
    h->trainer->get_state(name, a.Data());
    return a;
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// setState(name, array): the length was checked by the TS layer.
Napi::Value AddonTrainer::SetState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<TrainerHandle> h = idle(env);
  const std::string name = info[0].As<Napi::String>();
  try {
    Napi::TypedArray a = info[1].As<Napi::TypedArray>();
    const size_t bytes = a.ByteLength();
    const size_t want = h->trainer->state_size(name) * (h->trainer->state_is_f64(name) ? 8 : 4);
    if (bytes != want) throw Error("state '" + name + "' needs " + std::to_string(want) + " bytes, got " + std::to_string(bytes));
    const auto* base = static_cast<const uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset();
    h->trainer->set_state(name, base);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  return env.Undefined();
}

// lastSelection(aux: boolean) -> {indptr: Uint32Array, indices: Int32Array}
Napi::Value AddonTrainer::LastSelection(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::shared_ptr<TrainerHandle> h = idle(env);
  std::vector<uint32_t> indptr;
  std::vector<int32_t> indices;
  h->trainer->last_selection(&indptr, &indices, info[0].ToBoolean());
  auto p = Napi::Uint32Array::New(env, indptr.size());
  if (!indptr.empty()) std::memcpy(p.Data(), indptr.data(), indptr.size() * 4);
  auto i = Napi::Int32Array::New(env, indices.size());
  if (!indices.empty()) std::memcpy(i.Data(), indices.data(), indices.size() * 4);
  Napi::Object o = Napi::Object::New(env);
  o.Set("indptr", p);
  o.Set("indices", i);
  return o;
}

Napi::Value AddonTrainer::Bytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), handle_ && handle_->trainer ? static_cast<double>(handle_->trainer->bytes()) : 0.0);
}

// Frees the parameters at once; a step in flight keeps them alive until it finishes.
Napi::Value AddonTrainer::Dispose(const Napi::CallbackInfo& info) {
  handle_.reset();
  return info.Env().Undefined();
}

}  // namespace saekit::napi
