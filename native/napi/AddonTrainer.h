// JS class wrapping one BackendTrainer. createTrainer() and step() return Promises (the step
// runs on the kernel pool off the main thread); state accessors copy synchronously and refuse
// to run while a step is in flight, so a checkpoint never sees half-updated parameters.
#pragma once
#include <napi.h>

#include <memory>

#include "../backend.h"

namespace saekit::napi {

struct TrainerHandle {
  std::unique_ptr<BackendTrainer> trainer;
  bool busy = false;  // main thread only: set by step(), cleared when its Promise settles
};

class AddonTrainer : public Napi::ObjectWrap<AddonTrainer> {
 public:
  static Napi::Function Define(Napi::Env env);
  static Napi::Value Create(const Napi::CallbackInfo& info);  // createTrainer(spec, params, device)
  explicit AddonTrainer(const Napi::CallbackInfo& info);

 private:
  Napi::Value Step(const Napi::CallbackInfo& info);
  Napi::Value GetState(const Napi::CallbackInfo& info);
  Napi::Value SetState(const Napi::CallbackInfo& info);
  Napi::Value LastSelection(const Napi::CallbackInfo& info);
  Napi::Value Bytes(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);
  std::shared_ptr<TrainerHandle> idle(Napi::Env env);

  std::shared_ptr<TrainerHandle> handle_;
};

}  // namespace saekit::napi
