// The CPU engine: the fp32 reference transformer with a host page pool, behind
// model/engine.h. What every other engine is tested against.
#pragma once

#include <filesystem>
#include <memory>

#include "absl/status/statusor.h"
#include "model/engine.h"

namespace gistmem::model {

absl::StatusOr<std::unique_ptr<Engine>> LoadCpuEngine(const std::filesystem::path& model_dir,
                                                      const EngineOptions& options);

}  // namespace gistmem::model
