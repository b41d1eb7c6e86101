// The shipped gist model served with its own gist policy against the training mask
// (tests/fixtures/gistmem-16k/gist_reference_*, written by training/export.py), as a check any
// engine can be put through: the CPU engine (tests/unit/shipped_model_gist_test.cc) and the
// CUDA engine (tests/gpu/cuda_shipped_gist_test.cc), each with its own tolerance.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "model/gist_config.h"
#include "model/weights.h"

namespace gistmem::memory {

// Pages of 8 entries: the window's pages come and go within the fixture's stream.
constexpr int32_t kShippedGistBlockSize = 8;

// Serves the fixture's stream on `engine` (models/gistmem-16k under `root`, pages of
// kShippedGistBlockSize) under the model's gist policy in steps of 24 rows; the stream layout
// must be training's and every reference row's logits within `tolerance` (row-relative).
inline void CheckShippedGistServing(model::Engine& engine, const std::filesystem::path& root,
                                    double tolerance) {
  constexpr int32_t kBlockSize = kShippedGistBlockSize;
  const auto gist =
      model::GistConfig::FromModelDir(root / "models/gistmem-16k", engine.config().vocab_size);
  ASSERT_TRUE(gist.has_value());
  std::ifstream in(root / "tests/fixtures/gistmem-16k/gist_reference_case.json");
  const nlohmann::json c = nlohmann::json::parse(in);
  const nlohmann::json& mode = c.at("mode");
  const Policy policy{.kind = PolicyKind::kGist,
                      .ratio = mode.at("ratio"),
                      .window = mode.at("window"),
                      .sink_tokens = mode.at("sink"),
                      .gist_token_id = gist->gist_token_id};
  ASSERT_TRUE(Validate(policy).ok());

  std::vector<int32_t> raw;
  const auto& stream = c.at("stream");
  const auto& is_gist = c.at("is_gist");
  for (size_t i = 0; i < stream.size(); ++i) {
    if (is_gist[i].get<int>() == 0) raw.push_back(stream[i].get<int32_t>());
  }
  SessionMemory memory(engine.kv_pool(), policy);
  const RowPlan plan = memory.Plan(raw);
  ASSERT_EQ(plan.size(), static_cast<int64_t>(stream.size()));
  for (size_t i = 0; i < stream.size(); ++i) {
    ASSERT_EQ(plan.tokens[i], stream[i].get<int32_t>()) << "stream row " << i;
  }

  const int64_t vocab = engine.config().vocab_size;
  std::vector<float> got(plan.size() * vocab);
  for (int64_t begin = 0; begin < plan.size(); begin += 24) {
    const int64_t end = std::min(plan.size(), begin + 24);
    const absl::StatusOr<std::vector<float>> logits =
        ReadRows(engine, memory, plan, begin, end, model::LogitsMode::kAll);
    ASSERT_TRUE(logits.ok()) << logits.status();
    std::copy(logits->begin(), logits->end(), got.begin() + begin * vocab);
  }
  // Entries really left, and their pages went back: what the session holds is what the
  // policy keeps, up to partly used pages (at most one at each end of the window, one at the
  // pinned segment's tail).
  const int64_t retained = memory.Counts().total();
  EXPECT_LT(retained, plan.size());
  const memory::PageLayout& layout = engine.kv_pool().layout();
  EXPECT_LE(memory.kv().pages_held() * layout.block_size, retained + 3 * (kBlockSize - 1));
  EXPECT_LT(memory.kv().pages_held() * layout.block_size, plan.size());

  const auto expected = model::SafetensorsFile::Open(
      root / "tests/fixtures/gistmem-16k/gist_reference_logits.safetensors");
  const std::vector<float> want = expected->tensors().at("logits").ToFloat32();
  double worst = 0;
  const auto& positions = c.at("positions");
  for (size_t k = 0; k < positions.size(); ++k) {
    const int64_t row = positions[k];
    double diff = 0, scale = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      diff = std::max(diff, std::fabs(double(got[row * vocab + v]) - want[k * vocab + v]));
      scale = std::max(scale, std::fabs(double(want[k * vocab + v])));
    }
    worst = std::max(worst, diff / scale);
  }
  std::printf("max row-relative error %.3g over %zu rows\n", worst, positions.size());
  EXPECT_LE(worst, tolerance);
}

}  // namespace gistmem::memory
