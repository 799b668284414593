// Per-environment constructors (each worker thread loads its own copy of the addon; Node
// deletes this at the environment's teardown). Set once in addon.cpp.
#pragma once
#include <napi.h>

namespace saekit::napi {

struct InstanceData {
  Napi::FunctionReference sae;
  Napi::FunctionReference trainer;
};

}  // namespace saekit::napi
