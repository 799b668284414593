// JS class wrapping one loaded SAE (a BackendModel). Created by createSae() (async: packing
// a large W_enc takes a while); encode()/decode() return Promises; dispose() frees the native
// memory at once (workers still running keep the model alive until they finish).
#pragma once
#include <napi.h>

#include <memory>

#include "../backend.h"

namespace saekit::napi {

class AddonSae : public Napi::ObjectWrap<AddonSae> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Value Create(const Napi::CallbackInfo& info);  // createSae(spec, weights, device)
  explicit AddonSae(const Napi::CallbackInfo& info);

 private:
  Napi::Value Encode(const Napi::CallbackInfo& info);
  Napi::Value Decode(const Napi::CallbackInfo& info);
  Napi::Value AddSkip(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value HintMisses(const Napi::CallbackInfo& info);
  Napi::Value ScreenStats(const Napi::CallbackInfo& info);
  Napi::Value KernelReport(const Napi::CallbackInfo& info);
  std::shared_ptr<BackendModel> model(Napi::Env env);

  std::shared_ptr<BackendModel> model_;
  SaeSpec spec_;
};

}  // namespace saekit::napi
