// The shipped model over 4096 tokens against transformers (tests/fixtures/gistmem-16k/
// long_reference_*, written by training/export.py --long 4096): full causal attention read in
// prefill chunks, and the model's r=8 gist policy served with real eviction, each compared at
// every 128th row. Short fixtures cannot catch RoPE or attention errors that only grow with
// distance; this one reaches a quarter of the model's 16384 positions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <span>
#include <vector>

#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "model/gist_config.h"
#include "model/weights.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::memory {
namespace {

using nlohmann::json;

const std::filesystem::path kRoot(GISTMEM_SOURCE_DIR);
const std::filesystem::path kModel = kRoot / "models/gistmem-16k";
const std::filesystem::path kFixtures = kRoot / "tests/fixtures/gistmem-16k";
constexpr int64_t kChunk = 512;  // rows a step: the logits of one step stay at 16 MiB

json ReadCase() {
  std::ifstream in(kFixtures / "long_reference_case.json");
  return json::parse(in);
}

// Largest row-relative |got - want| over the reference rows; got holds `got_rows` rows
// starting at stream row `first`, want one row per entry of `positions`.
void Compare(const std::vector<float>& got, int64_t first, int64_t vocab, const json& positions,
             const std::vector<float>& want, std::vector<double>& worst) {
  const int64_t rows = int64_t(got.size()) / vocab;
  for (size_t k = 0; k < positions.size(); ++k) {
    const int64_t row = positions[k].get<int64_t>() - first;
    if (row < 0 || row >= rows) continue;
    double diff = 0, scale = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      diff = std::max(diff, std::fabs(double(got[row * vocab + v]) - want[k * vocab + v]));
      scale = std::max(scale, std::fabs(double(want[k * vocab + v])));
    }
    worst[k] = diff / scale;
  }
}

TEST(ShippedModelLong, FullAttentionMatchesTransformers) {
  const auto engine = model::LoadCpu(kModel, 2);
  const int64_t vocab = engine->config().vocab_size;
  const json c = ReadCase();
  const std::vector<int32_t> tokens = c.at("full_tokens").get<std::vector<int32_t>>();
  ASSERT_EQ(tokens.size(), 4096u);
  const auto expected =
      model::SafetensorsFile::Open(kFixtures / "long_reference_logits.safetensors");
  const std::vector<float> want = expected->tensors().at("logits_full").ToFloat32();
  const json& positions = c.at("positions");
  ASSERT_EQ(want.size(), positions.size() * vocab);

  std::vector<double> worst(positions.size(), -1);
  model::PlainSequence sequence(*engine);
  for (int64_t begin = 0; begin < int64_t(tokens.size()); begin += kChunk) {
    const int64_t end = std::min<int64_t>(tokens.size(), begin + kChunk);
    std::vector<int64_t> pos(end - begin);
    std::iota(pos.begin(), pos.end(), begin);
    const std::vector<float> logits = sequence.Forward(
        std::span(tokens).subspan(begin, end - begin), pos, model::LogitsMode::kAll);
    Compare(logits, begin, vocab, positions, want, worst);
  }
  const double max = *std::max_element(worst.begin(), worst.end());
  EXPECT_GE(*std::min_element(worst.begin(), worst.end()), 0);  // every reference row read
  std::printf("full: max row-relative error %.3g over %zu rows\n", max, positions.size());
  EXPECT_LE(max, 1e-4);
}

TEST(ShippedModelLong, GistR8ServingWithEvictionMatchesTheTrainingMask) {
  const auto engine = model::LoadCpu(kModel, 2, 16);
  const int64_t vocab = engine->config().vocab_size;
  const json c = ReadCase();
  const json& mode = c.at("mode");
  const auto gist = model::GistConfig::FromModelDir(kModel, vocab);
  ASSERT_TRUE(gist.has_value());
  const Policy policy{.kind = PolicyKind::kGist,
                      .ratio = mode.at("ratio"),
                      .window = mode.at("window"),
                      .sink_tokens = mode.at("sink"),
                      .gist_token_id = gist->gist_token_id};
  ASSERT_TRUE(Validate(policy).ok());
  ASSERT_EQ(policy.ratio, 8);

  const json& stream = c.at("gist_stream");
  const json& is_gist = c.at("is_gist");
  std::vector<int32_t> raw;
  for (size_t i = 0; i < stream.size(); ++i) {
    if (is_gist[i].get<int>() == 0) raw.push_back(stream[i].get<int32_t>());
  }
  SessionMemory memory(engine->kv_pool(), policy);
  const RowPlan plan = memory.Plan(raw);
  ASSERT_EQ(plan.size(), int64_t(stream.size()));
  for (size_t i = 0; i < stream.size(); ++i) {
    ASSERT_EQ(plan.tokens[i], stream[i].get<int32_t>()) << "stream row " << i;
  }

  const auto expected =
      model::SafetensorsFile::Open(kFixtures / "long_reference_logits.safetensors");
  const std::vector<float> want = expected->tensors().at("logits_gist").ToFloat32();
  const json& positions = c.at("gist_positions");
  ASSERT_EQ(want.size(), positions.size() * vocab);
  std::vector<double> worst(positions.size(), -1);
  for (int64_t begin = 0; begin < plan.size(); begin += kChunk) {
    const int64_t end = std::min(plan.size(), begin + kChunk);
    const absl::StatusOr<std::vector<float>> logits =
        ReadRows(*engine, memory, plan, begin, end, model::LogitsMode::kAll);
    ASSERT_TRUE(logits.ok()) << logits.status();
    Compare(*logits, begin, vocab, positions, want, worst);
  }
  // Eviction really happened: the session keeps far fewer entries than the stream has.
  EXPECT_LT(memory.Counts().total(), plan.size() / 4);
  const double max = *std::max_element(worst.begin(), worst.end());
  EXPECT_GE(*std::min_element(worst.begin(), worst.end()), 0);
  std::printf("gist r8: max row-relative error %.3g over %zu rows\n", max, positions.size());
  EXPECT_LE(max, 1e-4);
}

}  // namespace
}  // namespace gistmem::memory
