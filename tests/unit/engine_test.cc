// The engine registry (model/engine.h): "cpu" loads, "cuda" loads or says why not, an unknown
// device lists the names there are; an engine refuses a KV made from another engine's pool;
// ForwardPlain leaves the KV as it was when a step fails.
#include "model/engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "memory/session_kv.h"

namespace gistmem::model {
namespace {

using ::testing::HasSubstr;

const std::filesystem::path kModel =
    std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/models/qwen2-tied-f32";

std::unique_ptr<Engine> MustLoad(const EngineOptions& options) {
  absl::StatusOr<std::unique_ptr<Engine>> engine = LoadEngine(kModel, options);
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

TEST(EngineTest, CpuLoadsWithAPoolOfTheModelsShape) {
  const auto engine = MustLoad({.device = "cpu", .num_threads = 2, .block_size = 8});
  ASSERT_NE(engine, nullptr);
  EXPECT_EQ(engine->device(), "cpu");
  const memory::PageLayout& layout = engine->kv_pool().layout();
  EXPECT_EQ(layout.block_size, 8);
  EXPECT_EQ(layout.num_layers, engine->config().num_layers);
  EXPECT_EQ(layout.kv_dim, engine->config().kv_dim());
  EXPECT_EQ(layout.element_bytes, 4);
  EXPECT_EQ(engine->kv_pool().tier(), "host");

  memory::SessionKv kv(engine->kv_pool());
  const std::vector<int32_t> tokens = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3};
  const std::vector<int64_t> positions = NextPositions(kv, tokens.size());
  EXPECT_EQ(positions, (std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  const absl::StatusOr<std::vector<float>> logits =
      ForwardPlain(*engine, kv, tokens, positions, LogitsMode::kAll);
  ASSERT_TRUE(logits.ok()) << logits.status();
  EXPECT_EQ(logits->size(), tokens.size() * engine->config().vocab_size);
  EXPECT_EQ(kv.pinned().num_slots(), 10);
  EXPECT_EQ(kv.next_position(), 10);
  EXPECT_EQ(engine->kv_pool().pages_in_use(), 2);
  EXPECT_EQ(NextPositions(kv, 2), (std::vector<int64_t>{10, 11}));
}

// "cuda": UNIMPLEMENTED naming cuda in a build without the backend; in a build with it, an
// engine where a GPU is and a clear start-up error (FAILED_PRECONDITION naming --device cpu)
// where none is, never a crash.
TEST(EngineTest, CudaLoadsOrSaysWhyNot) {
  const absl::StatusOr<std::unique_ptr<Engine>> engine =
      LoadEngine(kModel, {.device = "cuda", .kv_pool_bytes = int64_t{16} << 20});
  if (engine.ok()) {
    EXPECT_EQ((*engine)->device(), "cuda:0");
    EXPECT_EQ((*engine)->kv_pool().tier(), "gpu");
  } else if (engine.status().code() == absl::StatusCode::kUnimplemented) {
    EXPECT_THAT(engine.status().message(), HasSubstr("cuda"));
    EXPECT_THAT(engine.status().message(), HasSubstr("--device cpu"));
  } else {
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kFailedPrecondition) << engine.status();
    EXPECT_THAT(engine.status().message(), HasSubstr("--device cpu"));
  }
}

TEST(EngineTest, AnUnknownDeviceIsRejectedListingTheNames) {
  const std::vector<std::string> names = EngineNames();
  EXPECT_THAT(names, ::testing::Contains("cpu"));
  EXPECT_THAT(names, ::testing::Contains("cuda"));
  for (const std::string device : {"tpu", "", "CPU", "cpu ", "cpu:0"}) {
    const absl::StatusOr<std::unique_ptr<Engine>> engine = LoadEngine(kModel, {.device = device});
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument) << device;
    EXPECT_THAT(engine.status().message(), HasSubstr("\"" + device + "\""));
    for (const std::string& name : names)
      EXPECT_THAT(engine.status().message(), HasSubstr(name)) << device;
  }
}

TEST(EngineTest, BadOptionsAndBadCheckpointsAreErrors) {
  EXPECT_EQ(LoadEngine(kModel, {.device = "cpu", .block_size = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadEngine(kModel, {.device = "cpu", .kv_pool_bytes = 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  const std::filesystem::path missing = kModel.parent_path() / "no-such-model";
  const absl::StatusOr<std::unique_ptr<Engine>> engine = LoadEngine(missing, {.device = "cpu"});
  EXPECT_FALSE(engine.ok());
  EXPECT_THAT(engine.status().message(), HasSubstr("no-such-model"));
}

TEST(EngineTest, AKvOfAnotherEnginesPoolIsRefused) {
  const auto engine = MustLoad({.device = "cpu", .num_threads = 2});
  const auto other = MustLoad({.device = "cpu", .num_threads = 2});
  ASSERT_NE(engine, nullptr);
  ASSERT_NE(other, nullptr);
  memory::SessionKv foreign(other->kv_pool());
  const std::vector<int32_t> tokens = {1, 2, 3};
  const absl::StatusOr<std::vector<float>> logits =
      ForwardPlain(*engine, foreign, tokens, NextPositions(foreign, 3));
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(logits.status().message(), HasSubstr("another engine's pool"));
  // Nothing stays appended, in either pool.
  EXPECT_EQ(foreign.pinned().num_slots(), 0);
  EXPECT_EQ(foreign.next_position(), 0);
  EXPECT_EQ(other->kv_pool().pages_in_use(), 0);
  EXPECT_EQ(engine->kv_pool().pages_in_use(), 0);
  // The KV works with its own engine.
  EXPECT_TRUE(ForwardPlain(*other, foreign, tokens, NextPositions(foreign, 3)).ok());
}

TEST(EngineTest, AFailedForwardPlainLeavesTheKvAsItWas) {
  const auto engine = MustLoad({.device = "cpu", .num_threads = 2, .block_size = 4});
  ASSERT_NE(engine, nullptr);
  memory::SessionKv kv(engine->kv_pool());
  const std::vector<int32_t> tokens = {7, 8, 9};
  ASSERT_TRUE(ForwardPlain(*engine, kv, tokens, NextPositions(kv, 3)).ok());
  const int64_t pages = engine->kv_pool().pages_in_use();
  const int32_t vocab = static_cast<int32_t>(engine->config().vocab_size);

  // A bad token after a new page was taken; a position that does not follow; mismatched spans.
  const std::vector<int32_t> bad_token = {1, 2, vocab};
  const absl::StatusOr<std::vector<float>> rejected =
      ForwardPlain(*engine, kv, bad_token, NextPositions(kv, 3));
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(rejected.status().message(), HasSubstr("outside the vocabulary"));
  const std::vector<int64_t> behind = {2};
  EXPECT_EQ(ForwardPlain(*engine, kv, std::vector<int32_t>{1}, behind).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ForwardPlain(*engine, kv, tokens, behind).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(kv.pinned().num_slots(), 3);
  EXPECT_EQ(kv.next_position(), 3);
  EXPECT_EQ(engine->kv_pool().pages_in_use(), pages);
}

}  // namespace
}  // namespace gistmem::model
