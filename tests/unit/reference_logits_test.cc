// Logits of the CPU runtime against Hugging Face transformers (fp32) on random-weight
// checkpoints that transformers wrote (tests/fixtures/make_fixtures.py made them).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "model/engine.h"
#include "model/weights.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::model {
namespace {

const std::filesystem::path kModels =
    std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/models";

struct ReferenceCase {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [tokens, vocab]
};

std::vector<ReferenceCase> LoadCases(const std::filesystem::path& dir) {
  std::ifstream in(dir / "reference_cases.json");
  const nlohmann::json cases = nlohmann::json::parse(in).at("cases");
  const auto expected = SafetensorsFile::Open(dir / "reference_logits.safetensors");
  std::vector<ReferenceCase> result;
  for (const auto& c : cases) {
    ReferenceCase rc;
    for (int64_t id : c.at("tokens"))
      rc.tokens.push_back(static_cast<int32_t>(id));
    rc.logits = expected->tensors().at(c.at("logits").get<std::string>()).ToFloat32();
    result.push_back(std::move(rc));
  }
  return result;
}

// Largest |got - want| in a row divided by the row's largest |want|: relative to the scale
// of the logits, so entries near zero do not blow the ratio up.
double MaxRowRelativeError(const std::vector<float>& got, const std::vector<float>& want,
                           int64_t vocab) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t row = 0; row * vocab < want.size(); ++row) {
    double diff = 0, scale = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const size_t i = row * vocab + v;
      diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
      scale = std::max(scale, std::fabs(double(want[i])));
    }
    worst = std::max(worst, diff / scale);
  }
  std::printf("max row-relative error %.3g\n", worst);  // the margin, for the record
  return worst;
}

std::vector<int64_t> Iota(int64_t begin, size_t count) {
  std::vector<int64_t> positions(count);
  std::iota(positions.begin(), positions.end(), begin);
  return positions;
}

class ReferenceLogits : public ::testing::TestWithParam<std::string> {};

TEST_P(ReferenceLogits, FullForwardMatchesTransformers) {
  const auto dir = kModels / GetParam();
  const auto model = LoadCpu(dir, 2);
  const int64_t vocab = model->config().vocab_size;
  for (const ReferenceCase& rc : LoadCases(dir)) {
    PlainSequence sequence(*model);
    const std::vector<float> logits =
        sequence.Forward(rc.tokens, Iota(0, rc.tokens.size()), LogitsMode::kAll);
    EXPECT_LE(MaxRowRelativeError(logits, rc.logits, vocab), 1e-4)
        << GetParam() << ", " << rc.tokens.size() << " tokens";
  }
}

TEST_P(ReferenceLogits, ChunkedPrefillAndDecodeMatchTransformers) {
  const auto dir = kModels / GetParam();
  const auto model = LoadCpu(dir, 2);
  const int64_t vocab = model->config().vocab_size;
  for (const ReferenceCase& rc : LoadCases(dir)) {
    // A prefill of the first third, then one token at a time, as a chat turn would run.
    PlainSequence sequence(*model);
    const size_t prefill = rc.tokens.size() / 3;
    std::vector<float> logits;
    if (prefill > 0) {
      logits =
          sequence.Forward(std::span(rc.tokens).first(prefill), Iota(0, prefill), LogitsMode::kAll);
    }
    for (size_t i = prefill; i < rc.tokens.size(); ++i) {
      const std::vector<float> row = sequence.Forward(std::span(rc.tokens).subspan(i, 1),
                                                      Iota(int64_t(i), 1), LogitsMode::kLast);
      logits.insert(logits.end(), row.begin(), row.end());
    }
    EXPECT_EQ(sequence.size(), int64_t(rc.tokens.size()));
    EXPECT_LE(MaxRowRelativeError(logits, rc.logits, vocab), 1e-4)
        << GetParam() << ", " << rc.tokens.size() << " tokens";
  }
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, ReferenceLogits,
                         ::testing::Values("llama-gqa-bf16", "qwen2-tied-f32",
                                           "mistral-window-f16"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

}  // namespace
}  // namespace gistmem::model
