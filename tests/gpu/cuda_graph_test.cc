// CUDA graphs of small steps (model/backend/cuda/step_graphs.h) against eager launches: the
// shipped model decoding four sequences as the scheduler runs them (tests/gpu/decode_driver.h)
// on two CUDA engines, one replaying graphs (EngineOptions::cuda_graphs, the default), one
// launching every kernel (cuda_graphs = false). Over hundreds of steps the step's shape keeps
// changing -- sequences join and leave (rows and logits rows), contexts grow past split
// boundaries (the attention plan's CTA counts), gist rows come and go, a 700-row prefill
// runs eagerly in between and grows the scratch (the graphs are dropped and captured again)
// -- and every logits row is equal bit for bit, and so is every token picked on the device.
// And steps of the same shape whose attention plans are laid out differently (a session with an
// attached document beside one without) never share a graph.
#include <gtest/gtest.h>

#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/backend/cuda/cuda_engine.h"
#include "model/engine.h"
#include "model/gist_config.h"
#include "tests/gpu/decode_driver.h"
#include "tests/gpu/engine_scripts.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {
namespace {

std::unique_ptr<model::Engine> Load(bool graphs) {
  absl::StatusOr<std::unique_ptr<model::Engine>> engine =
      model::LoadEngine(TinyModel(), {.device = "cuda",
                                      .kv_pool_bytes = int64_t{256} << 20,
                                      .block_size = kBlock,
                                      .cuda_kv_mirrors = true,  // as the fast paths run
                                      .cuda_graphs = graphs});
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

std::vector<DecodeSpec> Specs(int64_t vocab) {
  const int32_t gist = model::GistConfig::FromModelDir(TinyModel(), vocab)->gist_token_id;
  std::mt19937 rng(99);
  auto spec = [&](PolicyKind kind, size_t prompt, model::SamplingParams p, int64_t new_tokens,
                  int64_t chunk, int64_t first_step) {
    return DecodeSpec{.policy = MakePolicy(kind, gist),
                      .prompt = RandomTokens(prompt, vocab, rng),
                      .params = p,
                      .new_tokens = new_tokens,
                      .chunk = chunk,
                      .first_step = first_step};
  };
  return {
      spec(PolicyKind::kFull, 40, {.temperature = 0.f}, 420, 48, 0),
      spec(PolicyKind::kGist, 100, {.temperature = 0.8f, .top_k = 20, .seed = 3}, 200, 48, 3),
      spec(PolicyKind::kFull, 700, {.temperature = 0.f, .repetition_penalty = 1.2f}, 90, 700, 150),
      spec(PolicyKind::kPool, 30, {.temperature = 1.f, .seed = 4}, 120, 48, 60)};
}

TEST(CudaGraphTest, ReplaysEqualEagerLaunchesBitForBit) {
  GISTMEM_SKIP_WITHOUT_GPU();
  const std::unique_ptr<model::Engine> graphs = Load(true), eager = Load(false);
  ASSERT_NE(graphs, nullptr);
  ASSERT_NE(eager, nullptr);
  const int64_t vocab = graphs->config().vocab_size;
  DecodeRun replayed(*graphs, Specs(vocab), Picking::kHost);
  DecodeRun launched(*eager, Specs(vocab), Picking::kHost);
  DecodeRun replayed_device(*graphs, Specs(vocab), Picking::kDevice);
  DecodeRun launched_device(*eager, Specs(vocab), Picking::kDevice);
  int64_t rows = 0, device_picks = 0;
  while (!replayed.done() || !replayed_device.done()) {
    const std::string what = "step " + std::to_string(replayed.steps());
    if (!replayed.done()) {
      const absl::StatusOr<std::vector<int32_t>> a = replayed.Step();
      const absl::StatusOr<std::vector<int32_t>> b = launched.Step();
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_EQ(*a, *b) << what;
      for (size_t s = 0; s < replayed.size(); ++s) {
        if ((*a)[s] == DecodeRun::kNoPick) continue;
        ASSERT_TRUE(replayed.last_logits(s) == launched.last_logits(s))
            << what << " sequence " << s << ": graph logits differ from eager ones";
        ++rows;
      }
    }
    if (!replayed_device.done()) {
      const absl::StatusOr<std::vector<int32_t>> a = replayed_device.Step();
      const absl::StatusOr<std::vector<int32_t>> b = launched_device.Step();
      ASSERT_TRUE(a.ok()) << a.status();
      ASSERT_TRUE(b.ok()) << b.status();
      ASSERT_EQ(*a, *b) << what << " (device picks)";
      for (int32_t pick : *a)
        device_picks += pick != DecodeRun::kNoPick;
    }
  }
  const std::optional<CudaEngineStats> stats = CudaStatsOf(*graphs);
  const std::optional<CudaEngineStats> none = CudaStatsOf(*eager);
  ASSERT_TRUE(stats.has_value());
  ASSERT_TRUE(none.has_value());
  std::printf(
      "%ld logits rows and %ld device picks equal; graphs: %ld eager steps, %ld captures, %ld "
      "replays, %ld failed captures, %ld clears\n",
      rows, device_picks, stats->eager_steps, stats->graph_captures, stats->graph_replays,
      stats->failed_captures, stats->graph_clears);
  EXPECT_EQ(none->graph_replays + none->graph_captures, 0);
  EXPECT_EQ(stats->failed_captures, 0);
  EXPECT_GE(stats->graph_captures, 5);  // many shapes
  EXPECT_GE(stats->graph_clears, 1);    // the 700-row prefill grew the scratch
  EXPECT_GT(stats->graph_replays, 4 * stats->graph_captures);
  EXPECT_GT(CudaStatsOf(*graphs)->mirrored_sessions, 0);
}

// Decode steps of one sequence alone, alternating between a session with an attached document
// and one without: the same rows, logits rows and CTA counts, but the document's segment moves
// every later part of the attention plan; a graph captured for one must not replay for the other.
TEST(CudaGraphTest, PlansOfOtherLayoutsGetTheirOwnGraphs) {
  GISTMEM_SKIP_WITHOUT_GPU();
  struct World {
    std::unique_ptr<model::Engine> engine;
    std::unique_ptr<memory::SessionMemory> plain, with_document;
  };
  World worlds[2];
  worlds[0].engine = Load(true);
  worlds[1].engine = Load(false);
  ASSERT_NE(worlds[0].engine, nullptr);
  ASSERT_NE(worlds[1].engine, nullptr);
  const int64_t vocab = worlds[0].engine->config().vocab_size;
  const int32_t gist = model::GistConfig::FromModelDir(TinyModel(), vocab)->gist_token_id;
  std::mt19937 rng(17);
  const std::vector<int32_t> document = RandomTokens(40, vocab, rng);
  const std::vector<int32_t> prompt = RandomTokens(30, vocab, rng);
  for (World& world : worlds) {
    memory::BlockPool& pool = world.engine->kv_pool();
    memory::SessionMemory doc(pool, MakePolicy(PolicyKind::kFull, gist));
    const memory::RowPlan doc_plan = doc.Plan(document);
    ASSERT_TRUE(
        memory::ReadRows(*world.engine, doc, doc_plan, 0, doc_plan.size(), model::LogitsMode::kLast)
            .ok());
    absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> frozen = doc.Frozen();
    ASSERT_TRUE(frozen.ok()) << frozen.status();
    world.plain =
        std::make_unique<memory::SessionMemory>(pool, MakePolicy(PolicyKind::kFull, gist));
    world.with_document =
        std::make_unique<memory::SessionMemory>(pool, MakePolicy(PolicyKind::kFull, gist));
    world.with_document->Attach(*frozen, "doc");
    for (memory::SessionMemory* session : {world.plain.get(), world.with_document.get()}) {
      const memory::RowPlan plan = session->Plan(prompt);
      ASSERT_TRUE(
          memory::ReadRows(*world.engine, *session, plan, 0, plan.size(), model::LogitsMode::kLast)
              .ok());
    }
  }
  for (int step = 0; step < 24; ++step) {
    const std::vector<int32_t> token = RandomTokens(1, vocab, rng);
    std::vector<float> logits[2];
    for (int w = 0; w < 2; ++w) {
      memory::SessionMemory& session = step % 2 ? *worlds[w].with_document : *worlds[w].plain;
      const memory::RowPlan plan = session.Plan(token);
      absl::StatusOr<std::vector<float>> out = memory::ReadRows(
          *worlds[w].engine, session, plan, 0, plan.size(), model::LogitsMode::kLast);
      ASSERT_TRUE(out.ok()) << "step " << step << ": " << out.status();
      logits[w] = *std::move(out);
    }
    ASSERT_TRUE(logits[0] == logits[1])
        << "step " << step << (step % 2 ? " (with the document)" : " (without)")
        << ": graph logits differ from eager ones";
  }
  const std::optional<CudaEngineStats> stats = CudaStatsOf(*worlds[0].engine);
  ASSERT_TRUE(stats.has_value());
  EXPECT_GE(stats->graph_captures, 2);  // one a layout
  EXPECT_GT(stats->graph_replays, 10);
}

}  // namespace
}  // namespace gistmem::cuda
