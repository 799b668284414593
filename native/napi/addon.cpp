// Registration only: the one place that lists what the addon exports. src/addon.ts mirrors
// this surface in TypeScript.
#include <napi.h>

#include "../backend.h"
#include "../cpu/isa.h"
#include "../cpu/kernel_choice.h"
#include "../cpu/probes.h"
#include "../thread_pool.h"
#include "AddonSae.h"
#include "AddonTrainer.h"
#include "instance_data.h"
#include "promise_worker.h"

namespace saekit::napi {
namespace {

Napi::Object capabilities_object(Napi::Env env, const Capabilities& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", c.name);
  o.Set("available", c.available);
  o.Set("detail", c.detail);
  return o;
}

// backends() -> [{name, available, detail}], cpu first; cuda listed when compiled.
Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env);
  a.Set(uint32_t{0}, capabilities_object(env, cpu_backend().capabilities()));
  if (Backend* cuda = cuda_backend()) a.Set(uint32_t{1}, capabilities_object(env, cuda->capabilities()));
  return a;
}

// trainingBackends() -> the same list, each saying whether device 'auto' may train on it
// (Backend::training(): for CUDA, the trainer's self-test).
Napi::Value TrainingBackends(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array a = Napi::Array::New(env);
  a.Set(uint32_t{0}, capabilities_object(env, cpu_backend().training()));
  if (Backend* cuda = cuda_backend()) a.Set(uint32_t{1}, capabilities_object(env, cuda->training()));
  return a;
}

Napi::Value Threads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), threads()); }

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  set_threads(info[0].As<Napi::Number>().Int32Value());
  return Napi::Number::New(info.Env(), threads());
}

// cpuVariant() -> {current, best, supported: string[], bf16Screening, screens: string[],
//                 kernels: string[], amx, cpuModel, kernelCache, encodeKernel, encodeKernelSource?,
//                 encodeKernelError?}
Napi::Value CpuVariant(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  try {
    o.Set("current", cpu::isa_name(cpu::current_isa()));
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, e.what());
  }
  o.Set("best", cpu::isa_name(cpu::best_isa()));
  Napi::Array supported = Napi::Array::New(env);
  uint32_t n = 0;
  for (cpu::Isa isa : {cpu::Isa::Generic, cpu::Isa::Avx2, cpu::Isa::Avx512})
    if (cpu::isa_supported(isa)) supported.Set(n++, cpu::isa_name(isa));
  o.Set("supported", supported);
  o.Set("bf16Screening", cpu::bf16_screening_supported());
  Napi::Array screens = Napi::Array::New(env);
  n = 0;
  for (cpu::Screen sc : {cpu::Screen::Bf16, cpu::Screen::Int8, cpu::Screen::Int8x256, cpu::Screen::AmxBf16, cpu::Screen::AmxBf16Emu})
    if (cpu::screen_supported(sc)) screens.Set(n++, cpu::screen_name(sc));
  o.Set("screens", screens);
  Napi::Array kernels = Napi::Array::New(env);
  n = 0;
  for (cpu::Screen sc : cpu::encode_kernel_candidates()) kernels.Set(n++, cpu::kernel_name(sc));
  o.Set("kernels", kernels);
  o.Set("amx", cpu::amx_status());
  o.Set("cpuModel", cpu::cpu_model_string());
  o.Set("kernelCache", cpu::kernel_cache_path());
  try {
    const cpu::KernelRequest req = cpu::kernel_request_from_env();
    o.Set("encodeKernel", req.forced ? cpu::kernel_name(req.kernel) : "auto");
    if (req.forced) o.Set("encodeKernelSource", req.source);
  } catch (const std::exception& e) {
    o.Set("encodeKernel", "auto");
    o.Set("encodeKernelError", e.what());
  }
  return o;
}

// cachedKernelDecisions() -> JSON text: every decision in the kernel choice cache file.
Napi::Value CachedKernelDecisions(const Napi::CallbackInfo& info) {
  std::string out = "[";
  for (const auto& d : cpu::cached_decisions()) out += (out.size() > 1 ? "," : "") + cpu::decision_json(d);
  return Napi::String::New(info.Env(), out + "]");
}

Napi::Value SetCpuVariant(const Napi::CallbackInfo& info) {
  try {
    cpu::set_isa(info[0].As<Napi::String>());
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

// probeFmaPeak(seconds) -> Promise<GFLOP/s>
Napi::Value ProbeFmaPeak(const Napi::CallbackInfo& info) {
  double seconds = info[0].As<Napi::Number>().DoubleValue();
  auto result = std::make_shared<double>(0);
  return queue(new LambdaWorker(
      info.Env(), [=] { *result = cpu::probe_fma_gflops(seconds); },
      [=](Napi::Env env) { return Napi::Number::New(env, *result); }));
}

// probeBf16Peak(seconds) -> Promise<GFLOP/s> (0 without AVX512-BF16)
Napi::Value ProbeBf16Peak(const Napi::CallbackInfo& info) {
  double seconds = info[0].As<Napi::Number>().DoubleValue();
  auto result = std::make_shared<double>(0);
  return queue(new LambdaWorker(
      info.Env(), [=] { *result = cpu::probe_bf16_gflops(seconds); },
      [=](Napi::Env env) { return Napi::Number::New(env, *result); }));
}

// probeAmxBf16Peak(seconds) -> Promise<GFLOP/s> (0 where AMX-BF16 cannot run)
Napi::Value ProbeAmxBf16Peak(const Napi::CallbackInfo& info) {
  double seconds = info[0].As<Napi::Number>().DoubleValue();
  auto result = std::make_shared<double>(0);
  return queue(new LambdaWorker(
      info.Env(), [=] { *result = cpu::probe_amx_bf16_gflops(seconds); },
      [=](Napi::Env env) { return Napi::Number::New(env, *result); }));
}

// probeVnniPeak(seconds, wide) -> Promise<GOP/s> (0 without AVX512-VNNI / AVX-VNNI)
Napi::Value ProbeVnniPeak(const Napi::CallbackInfo& info) {
  double seconds = info[0].As<Napi::Number>().DoubleValue();
  bool wide = info[1].As<Napi::Boolean>().Value();
  auto result = std::make_shared<double>(0);
  return queue(new LambdaWorker(
      info.Env(), [=] { *result = cpu::probe_vnni_gops(seconds, wide); },
      [=](Napi::Env env) { return Napi::Number::New(env, *result); }));
}

// probeCopyBandwidth(bytes, reps) -> Promise<GB/s> (read + written bytes)
Napi::Value ProbeCopyBandwidth(const Napi::CallbackInfo& info) {
  int64_t bytes = info[0].As<Napi::Number>().Int64Value();
  int reps = info[1].As<Napi::Number>().Int32Value();
  auto result = std::make_shared<double>(0);
  return queue(new LambdaWorker(
      info.Env(), [=] { *result = cpu::probe_copy_gbps(bytes, reps); },
      [=](Napi::Env env) { return Napi::Number::New(env, *result); }));
}

}  // namespace
}  // namespace saekit::napi

using namespace saekit::napi;  // NOLINT: registration table below

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) {
  auto* data = new InstanceData();
  Napi::Function sae = AddonSae::Define(env);
  Napi::Function trainer = AddonTrainer::Define(env);
  data->sae = Napi::Persistent(sae);
  data->trainer = Napi::Persistent(trainer);
  env.SetInstanceData<InstanceData>(data);
  exports.Set("AddonSae", sae);
  exports.Set("createSae", Napi::Function::New(env, AddonSae::Create));
  exports.Set("AddonTrainer", trainer);
  exports.Set("createTrainer", Napi::Function::New(env, AddonTrainer::Create));
  exports.Set("backends", Napi::Function::New(env, Backends));
  exports.Set("trainingBackends", Napi::Function::New(env, TrainingBackends));
  exports.Set("threads", Napi::Function::New(env, Threads));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("cpuVariant", Napi::Function::New(env, CpuVariant));
  exports.Set("setCpuVariant", Napi::Function::New(env, SetCpuVariant));
  exports.Set("probeFmaPeak", Napi::Function::New(env, ProbeFmaPeak));
  exports.Set("probeBf16Peak", Napi::Function::New(env, ProbeBf16Peak));
  exports.Set("probeVnniPeak", Napi::Function::New(env, ProbeVnniPeak));
  exports.Set("probeAmxBf16Peak", Napi::Function::New(env, ProbeAmxBf16Peak));
  exports.Set("cachedKernelDecisions", Napi::Function::New(env, CachedKernelDecisions));
  exports.Set("probeCopyBandwidth", Napi::Function::New(env, ProbeCopyBandwidth));
  return exports;
}

NODE_API_MODULE(saekit_addon, InitAddon)
