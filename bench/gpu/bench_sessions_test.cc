// The GPU benchmark's session helpers (bench/gpu/bench_sessions.h) on the CPU engine with the
// shipped model: a context appended without the model has the policy's entries, a timed decode
// step leaves every session as it found it (so every timed step sees the same context), and a
// pool that runs out says so.
#include "bench/gpu/bench_sessions.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <vector>

#include "memory/session_memory.h"
#include "model/engine.h"

namespace gistmem::bench {
namespace {

std::unique_ptr<model::Engine> Tiny(int64_t kv_pool_bytes) {
  absl::StatusOr<std::unique_ptr<model::Engine>> engine =
      model::LoadEngine(std::filesystem::path(GISTMEM_SOURCE_DIR) / "models/gistmem-16k",
                        {.device = "cpu", .num_threads = 1, .kv_pool_bytes = kv_pool_bytes});
  EXPECT_TRUE(engine.ok()) << engine.status();
  return engine.ok() ? *std::move(engine) : nullptr;
}

TEST(BenchSessions, PoliciesByName) {
  for (const char* name : {"full", "window", "pool", "gist"})
    EXPECT_TRUE(MakePolicy(name, 8, 64, 4, 7).ok()) << name;
  EXPECT_FALSE(MakePolicy("lru", 8, 64, 4, 7).ok());
  EXPECT_FALSE(MakePolicy("gist", 8, 60, 4, 7).ok());  // W must be a multiple of r
}

TEST(BenchSessions, FillKeepsWhatThePolicyKeeps) {
  std::unique_ptr<model::Engine> engine = Tiny(int64_t{64} << 20);
  ASSERT_NE(engine, nullptr);
  const int64_t vocab = engine->config().vocab_size;
  absl::StatusOr<memory::Policy> gist = MakePolicy("gist", 8, 64, 4, 7);
  ASSERT_TRUE(gist.ok());
  memory::SessionMemory memory(engine->kv_pool(), *gist);
  ASSERT_TRUE(Fill(memory, 1000, vocab, 1).ok());
  EXPECT_EQ(memory.state().raw_tokens, 1000);
  EXPECT_EQ(memory.state().stream_tokens, 1000 + 1000 / 8);
  const memory::RetainedCounts counts = memory.Counts();
  EXPECT_EQ(counts.sink, 4);
  EXPECT_EQ(counts.gist, 1000 / 8);
  EXPECT_LE(counts.raw, 64);
  EXPECT_GT(counts.raw, 0);
}

TEST(BenchSessions, DecodeStepLeavesEverySessionAsItWas) {
  std::unique_ptr<model::Engine> engine = Tiny(int64_t{64} << 20);
  ASSERT_NE(engine, nullptr);
  std::vector<std::unique_ptr<memory::SessionMemory>> sessions;
  std::vector<int64_t> lengths = {40, 63, 20};  // 63 raw: a gist follows the decode token
  const char* names[] = {"full", "gist", "gist"};
  for (size_t i = 0; i < lengths.size(); ++i) {
    absl::StatusOr<memory::Policy> policy = MakePolicy(names[i], 8, 64, 4, 7);
    ASSERT_TRUE(policy.ok());
    sessions.push_back(std::make_unique<memory::SessionMemory>(engine->kv_pool(), *policy));
    ASSERT_TRUE(Fill(*sessions.back(), lengths[i], engine->config().vocab_size, 2 + i).ok());
  }
  {  // The 63-token gist session's decode token brings its gist along: two rows.
    const int32_t raw[] = {17};
    absl::StatusOr<PendingRows> rows = ReserveRows(*sessions[1], raw);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(rows->plan.size(), 2);
    EXPECT_EQ(StepOf(*sessions[1], *rows).logits_row, 0);  // the raw row's logits
    sessions[1]->Unreserve();
  }
  const int64_t pages = engine->kv_pool().pages_in_use();
  std::vector<memory::MemoryState> before;
  std::vector<int64_t> slots;
  for (const auto& s : sessions) {
    before.push_back(s->state());
    slots.push_back(s->kv().pinned().num_slots() + s->kv().window().num_slots());
  }
  for (const DecodeOutput output : {DecodeOutput::kGreedyTokens, DecodeOutput::kLogitsToHost})
    ASSERT_TRUE(DecodeStep(*engine, sessions, 17, output).ok());
  EXPECT_EQ(engine->kv_pool().pages_in_use(), pages);
  for (size_t i = 0; i < sessions.size(); ++i) {
    EXPECT_EQ(sessions[i]->state(), before[i]) << i;
    EXPECT_EQ(sessions[i]->kv().pinned().num_slots() + sessions[i]->kv().window().num_slots(),
              slots[i])
        << i;
  }
}

TEST(BenchSessions, FillSaysWhenThePoolIsFull) {
  std::unique_ptr<model::Engine> engine = Tiny(int64_t{4} << 20);
  ASSERT_NE(engine, nullptr);
  memory::SessionMemory memory(engine->kv_pool(), memory::Policy{});
  const absl::Status status = Fill(memory, 100000, engine->config().vocab_size, 3);
  EXPECT_TRUE(absl::IsResourceExhausted(status)) << status;
}

}  // namespace
}  // namespace gistmem::bench
