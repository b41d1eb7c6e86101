// The engine registry (model/engine.h): "cpu" loads, "cuda" loads or says why not, an unknown
// device lists the names there are; an engine refuses a KV made from another engine's pool;
// ForwardPlain leaves the KV as it was when a step fails; ForwardSample (the base's host path)
// gives what the logits and model::Sampler give, and refuses bad requests before writing.
#include "model/engine.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <numeric>
#include <string>
#include <vector>

#include "memory/session_kv.h"
#include "model/sampling.h"
#include "tests/unit/plain_sequence.h"

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

// The fast paths go on and off together, and the process-wide override is checked before
// anything loads: a misspelt GISTMEM_CUDA_FAST_PATHS never silently runs the other path.
TEST(EngineTest, CudaFastPathsSwitchTogetherAndTheOverrideIsChecked) {
  EngineOptions options;
  EXPECT_EQ(options.cuda_graphs, kCudaFastPathsByDefault);
  SetCudaFastPaths(options, true);
  EXPECT_TRUE(options.cuda_kv_mirrors && options.cuda_graphs && options.cuda_device_sampling &&
              options.cuda_tensor_core_attention);
  SetCudaFastPaths(options, false);
  EXPECT_FALSE(options.cuda_kv_mirrors || options.cuda_graphs || options.cuda_device_sampling ||
               options.cuda_tensor_core_attention);

  ASSERT_EQ(setenv("GISTMEM_CUDA_FAST_PATHS", "yes", 1), 0);
  const absl::StatusOr<std::unique_ptr<Engine>> engine =
      LoadEngine(kModel, {.device = "cuda", .kv_pool_bytes = int64_t{16} << 20});
  unsetenv("GISTMEM_CUDA_FAST_PATHS");
  if (engine.status().code() == absl::StatusCode::kUnimplemented) GTEST_SKIP() << "no CUDA build";
  EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument) << engine.status();
  EXPECT_THAT(engine.status().message(), HasSubstr("GISTMEM_CUDA_FAST_PATHS"));
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

// Two sequences decode side by side for many steps through ForwardSample, one greedy and one
// seeded with every filter; a third reads a chunk with no request. Their twins run the same
// steps through ForwardBatch and model::Sampler on the logits: the same tokens, every step.
TEST(EngineTest, ForwardSampleGivesTheSamplersTokens) {
  const auto engine = MustLoad({.device = "cpu", .num_threads = 2, .block_size = 4});
  const auto twin_engine = MustLoad({.device = "cpu", .num_threads = 2, .block_size = 4});
  ASSERT_NE(engine, nullptr);
  ASSERT_NE(twin_engine, nullptr);
  const std::vector<SamplingParams> params = {
      {.temperature = 0.f, .repetition_penalty = 1.3f},
      {.temperature = 0.9f, .top_k = 20, .top_p = 0.9f, .repetition_penalty = 1.1f, .seed = 5}};
  std::vector<PlainSequence> sequences, twins;
  std::vector<Sampler> samplers, twin_samplers;
  std::vector<std::vector<int32_t>> history = {{3, 1, 4, 1, 5}, {9, 2, 6}};
  for (size_t s = 0; s < params.size(); ++s) {
    sequences.emplace_back(*engine);
    twins.emplace_back(*twin_engine);
    samplers.emplace_back(params[s]);
    twin_samplers.emplace_back(params[s]);
  }
  PlainSequence reader(*engine), twin_reader(*twin_engine);
  std::vector<std::vector<int32_t>> next = history;  // what each reads in the coming step
  for (int step = 0; step < 12; ++step) {
    std::vector<std::vector<int64_t>> positions;
    std::vector<SequenceStep> batch, twin_batch;
    for (size_t s = 0; s < params.size(); ++s)
      positions.push_back(NextPositions(sequences[s].kv(), next[s].size()));
    for (size_t s = 0; s < params.size(); ++s) {
      batch.push_back(sequences[s].Reserve(next[s], positions[s]));
      twin_batch.push_back(twins[s].Reserve(next[s], positions[s]));
    }
    const std::vector<int32_t> chunk = {static_cast<int32_t>(10 + step), 11, 12};
    const std::vector<int64_t> chunk_positions = NextPositions(reader.kv(), chunk.size());
    batch.push_back(reader.Reserve(chunk, chunk_positions));
    twin_batch.push_back(twin_reader.Reserve(chunk, chunk_positions));

    std::vector<TokenRequest> requests;
    for (size_t s = 0; s < params.size(); ++s) {
      const double uniform = params[s].temperature == 0.f ? 0.0 : samplers[s].DrawUniform();
      requests.push_back({.params = params[s], .previous_tokens = history[s], .uniform = uniform});
    }
    const std::vector<const TokenRequest*> request_ptrs = {&requests[0], &requests[1], nullptr};
    const absl::StatusOr<std::vector<int32_t>> tokens = engine->ForwardSample(batch, request_ptrs);
    ASSERT_TRUE(tokens.ok()) << tokens.status();
    const absl::StatusOr<std::vector<std::vector<float>>> logits =
        twin_engine->ForwardBatch(twin_batch);
    ASSERT_TRUE(logits.ok()) << logits.status();
    ASSERT_EQ(tokens->size(), 3u);
    EXPECT_EQ((*tokens)[2], kNoToken);
    for (size_t s = 0; s < params.size(); ++s) {
      const int32_t want = twin_samplers[s].Sample((*logits)[s], history[s]);
      EXPECT_EQ((*tokens)[s], want) << "sequence " << s << " step " << step;
      history[s].push_back(want);
      next[s] = {want};
    }
  }
}

TEST(EngineTest, ForwardSampleRefusesBadRequestsBeforeWriting) {
  const auto engine = MustLoad({.device = "cpu", .num_threads = 2, .block_size = 4});
  ASSERT_NE(engine, nullptr);
  PlainSequence sequence(*engine);
  const std::vector<int32_t> tokens = {7, 8, 9};
  const std::vector<int64_t> positions = {0, 1, 2};
  const TokenRequest sampled{.params = {.temperature = 1.f}, .previous_tokens = {}, .uniform = 1.0};
  const TokenRequest bad_params{.params = {.top_p = 0.f}, .previous_tokens = {}, .uniform = 0};
  const TokenRequest greedy{};
  const struct {
    LogitsMode mode;
    const TokenRequest* request;
    size_t count;
  } cases[] = {{LogitsMode::kLast, &sampled, 1},
               {LogitsMode::kLast, &bad_params, 1},
               {LogitsMode::kAll, &greedy, 1},
               {LogitsMode::kLast, &greedy, 2}};
  for (const auto& c : cases) {
    const SequenceStep step = sequence.Reserve(tokens, positions, c.mode);
    const std::vector<const TokenRequest*> requests(c.count, c.request);
    EXPECT_EQ(engine->ForwardSample(std::span(&step, 1), requests).status().code(),
              absl::StatusCode::kInvalidArgument);
    sequence.Undo();
  }
  EXPECT_EQ(sequence.kv().pinned().num_slots(), 0);
}

}  // namespace
}  // namespace gistmem::model
