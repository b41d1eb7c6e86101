#include "model/backend/cpu/cpu_engine.h"

#include <exception>
#include <stdexcept>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "model/backend/cpu/cpu_transformer.h"

namespace gistmem::model {
namespace {

class CpuEngine final : public Engine {
 public:
  CpuEngine(std::unique_ptr<CpuTransformer> transformer, const EngineOptions& options)
      : transformer_(std::move(transformer)),
        pool_(memory::MakeHostPageStorage(
            {.block_size = options.block_size,
             .num_layers = static_cast<int32_t>(transformer_->config().num_layers),
             .kv_dim = static_cast<int32_t>(transformer_->config().kv_dim()),
             .element_bytes = sizeof(float)},
            options.kv_pool_bytes)) {}

  const ModelConfig& config() const override { return transformer_->config(); }
  std::string device() const override { return "cpu"; }
  memory::BlockPool& kv_pool() override { return pool_; }

  absl::StatusOr<std::vector<std::vector<float>>> ForwardBatch(
      std::span<const SequenceStep> steps) override {
    try {
      return transformer_->ForwardBatch(steps, pool_);
    } catch (const std::invalid_argument& error) {
      return absl::InvalidArgumentError(error.what());
    } catch (const std::bad_alloc&) {
      return absl::ResourceExhaustedError("out of host memory in a forward step");
    } catch (const std::exception& error) {
      return absl::InternalError(error.what());
    }
  }

 private:
  std::unique_ptr<CpuTransformer> transformer_;
  memory::BlockPool pool_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Engine>> LoadCpuEngine(const std::filesystem::path& model_dir,
                                                      const EngineOptions& options) {
  if (options.block_size < 1 || options.kv_pool_bytes < 1) {
    return absl::InvalidArgumentError("the KV pool needs a block size and a budget of at least 1");
  }
  try {
    return std::make_unique<CpuEngine>(CpuTransformer::Load(model_dir, options.num_threads),
                                       options);
  } catch (const std::exception& error) {
    return absl::InvalidArgumentError(
        absl::StrCat("cannot load ", model_dir.string(), ": ", error.what()));
  }
}

}  // namespace gistmem::model
