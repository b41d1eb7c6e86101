// The shipped gist model served with its own gist policy: the stream layout the engine makes
// (a gist after every 8th raw token) is the one training used, and incremental serving with
// real eviction gives the logits the training model gave under the gist mask (fixture
// written by training/export.py on the GPU machine, where transformers agreed to 1.6e-5).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "model/gist_config.h"
#include "model/weights.h"
#include "tests/unit/plain_sequence.h"
#include "tests/unit/shipped_gist_check.h"

namespace gistmem::memory {
namespace {

const std::filesystem::path kRoot(GISTMEM_SOURCE_DIR);

TEST(ShippedGistModel, ServingWithEvictionMatchesTheTrainingMask) {
  const auto engine = model::LoadCpu(kRoot / "models/gistmem-16k", 2, kShippedGistBlockSize);
  CheckShippedGistServing(*engine, kRoot, 1e-4);
}

}  // namespace
}  // namespace gistmem::memory
