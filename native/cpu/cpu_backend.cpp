// The CPU backend: always available; loads SAEs as CpuModels (cpu_model.h) and creates
// trainers (cpu_trainer.cpp).
#include <memory>
#include <string>

#include "../backend.h"
#include "../thread_pool.h"
#include "cpu_model.h"
#include "isa.h"

namespace saekit::cpu {
std::unique_ptr<BackendTrainer> make_cpu_trainer(const TrainSpec& spec, const TrainParamsView& init);

namespace {

class CpuBackend final : public Backend {
 public:
  Capabilities capabilities() const override {
    Capabilities c;
    c.name = "cpu";
    c.available = true;
    c.detail = std::string(isa_name(current_isa())) + " kernels, " + std::to_string(threads()) + " threads";
    return c;
  }

  std::unique_ptr<BackendModel> load(const SaeSpec& spec, const SaeWeightsView& weights) override {
    return std::make_unique<CpuModel>(spec, weights);
  }

  std::unique_ptr<BackendTrainer> trainer(const TrainSpec& spec, const TrainParamsView& init) override {
    return make_cpu_trainer(spec, init);
  }
};

}  // namespace
}  // namespace saekit::cpu

namespace saekit {
Backend& cpu_backend() {
  static cpu::CpuBackend backend;
  return backend;
}
}  // namespace saekit
