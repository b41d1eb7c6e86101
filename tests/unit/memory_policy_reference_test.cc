// Incremental serving with real eviction equals the contract computed over the whole stream:
// the C++ engine reads a stream turn by turn, in chunks and token by token, with
// memory::SessionMemory dropping and pooling entries after every step; the PyTorch reference
// (training/policy_reference.py, float64, masks over the full sequence) wrote the logits of
// every stream row for each policy.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "memory/block_pool.h"
#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "model/weights.h"
#include "tests/unit/plain_sequence.h"
#include "tests/unit/policy_reference.h"

namespace gistmem::memory {
namespace {

const std::filesystem::path kRoot(GISTMEM_SOURCE_DIR);

using namespace policy_reference;  // NOLINT: the shared checks and helpers of this test

const Fixture& Load() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture(LoadFixture(kRoot));
    f->model = model::LoadCpu(ModelDir(kRoot, *f), 2, kBlockSize);
    return f;
  }();
  return *fixture;
}

class PolicyReference : public testing::TestWithParam<int64_t> {};

TEST_P(PolicyReference, IncrementalServingEqualsTheMaskedFullSequence) {
  CheckIncrementalServing(Load(), GetParam(), 1e-4);
}

// Chunks of 1 (decode-like), 5 (turns split mid-span) and 64 (a whole turn, longer than the
// window: visibility changes inside one step).
INSTANTIATE_TEST_SUITE_P(Chunks, PolicyReference, testing::Values(1, 5, 64));

// A document read alone, frozen and attached to a session at its stream's end, then the
// session goes on: the logits of every row (the document's own rows from its standalone run)
// equal the reference's, which placed the document at the attach point.
TEST(DocumentReference, AttachedDocumentEqualsTheMaskedFullSequence) {
  CheckAttachedDocuments(Load(), 1e-4);
}

TEST(DocumentReference, RollbackDetachesADocumentAttachedInTheTurn) {
  const Fixture& f = Load();
  const Policy full{};
  SessionMemory session(f.model->kv_pool(), full), document(f.model->kv_pool(), full);
  const std::vector<int32_t> tokens = {5, 6, 7, 8};
  Serve(*f.model, session, tokens, 4);
  Serve(*f.model, document, tokens, 4);
  const MemoryState before = session.state();
  absl::StatusOr<std::shared_ptr<const FrozenKv>> frozen = document.Frozen();
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  session.BeginTurn();
  session.Attach(*frozen, "d");
  EXPECT_EQ(session.state().stream_tokens, before.stream_tokens + 4);
  EXPECT_EQ(frozen->use_count(), 2);
  session.Rollback();
  EXPECT_EQ(session.state(), before);
  EXPECT_TRUE(session.kv().attached().empty());
  EXPECT_EQ(frozen->use_count(), 1);  // the session let go of the document
  EXPECT_EQ(session.kv().next_position(), before.stream_tokens);
}

// Everything a session's KV says about its entries: per segment (pinned, window), each
// slot's position, visibility, what it is, and its rows.
struct KvContents {
  std::vector<int64_t> positions;
  std::vector<EntryVisibility> visibility;
  std::vector<EntryInfo> infos;
  std::vector<float> rows;  // [layer][kv][entry][kv_dim]
  bool operator==(const KvContents&) const = default;
};

KvContents Contents(const KvSegment& segment, const BlockPool& pool) {
  KvContents c;
  std::vector<SlotRef> slots;
  for (int32_t i = 0; i < segment.num_slots(); ++i) {
    c.positions.push_back(segment.position(i));
    c.visibility.push_back(segment.visibility(i));
    c.infos.push_back(segment.info(i));
    slots.push_back(segment.slot(i));
  }
  c.rows.resize(2 * slots.size() * pool.layout().num_layers * pool.layout().kv_dim);
  if (!slots.empty()) pool.storage().ExportRows(slots, c.rows.data());
  return c;
}

TEST(SessionMemoryTest, RollbackRestoresTheCacheBitForBit) {
  const Fixture& f = Load();
  const std::vector<int32_t> raw = RawTokens(f);
  const BlockPool& pool = f.model->kv_pool();
  for (const auto& c : f.spec.at("cases")) {
    SCOPED_TRACE(c.at("policy").at("name").get<std::string>());
    SessionMemory memory(f.model->kv_pool(), PolicyOf(c.at("policy")));
    memory.BeginTurn();
    Serve(*f.model, memory, std::span(raw).subspan(0, 40), 7);
    memory.EndTurn();
    const KvContents pinned = Contents(memory.kv().pinned(), pool);
    const KvContents window = Contents(memory.kv().window(), pool);
    const std::vector<int32_t> pinned_pages = memory.kv().pinned().pages();
    const std::vector<int32_t> window_pages = memory.kv().window().pages();
    const MemoryState state = memory.state();
    const int64_t pages_in_use = pool.pages_in_use();

    memory.BeginTurn();
    Serve(*f.model, memory, std::span(raw).subspan(40, 30), 3);
    if (memory.policy().kind != PolicyKind::kFull) {
      // The turn released window head pages (held until the turn ends) ...
      EXPECT_NE(memory.kv().window().pages().front(), window_pages.front());
    }
    memory.Rollback();
    // ... and the rollback brings back exactly what was there, on the very same pages.
    ASSERT_EQ(memory.state(), state);
    EXPECT_EQ(memory.kv().pinned().pages(), pinned_pages);
    EXPECT_EQ(memory.kv().window().pages(), window_pages);
    EXPECT_TRUE(Contents(memory.kv().pinned(), pool) == pinned) << "pinned segment";
    EXPECT_TRUE(Contents(memory.kv().window(), pool) == window) << "window segment";
    EXPECT_EQ(memory.kv().next_position(), state.stream_tokens);
    EXPECT_EQ(pool.pages_in_use(), pages_in_use);  // the turn's own pages went back
  }
}

TEST(SessionMemoryTest, AnImpossibleStoredStateIsDataLoss) {
  const Fixture& f = Load();
  for (const MemoryState bad :
       {MemoryState{.stream_tokens = 4, .raw_tokens = 9},
        MemoryState{.stream_tokens = 4, .raw_tokens = -1},
        MemoryState{.stream_tokens = 4, .raw_tokens = 4, .next_serial = -2}}) {
    SessionMemory memory(f.model->kv_pool(), Policy{});
    EXPECT_EQ(memory.FinishRestore(bad).code(), absl::StatusCode::kDataLoss);
  }
  // A stored entry at a position no KV can hold (positions are int32 in the pages' arrays).
  for (const int64_t position : {int64_t{-1}, int64_t{kVisibleForever}, int64_t{1} << 40}) {
    SessionMemory memory(f.model->kv_pool(), Policy{});
    const absl::StatusOr<SlotRef> slot =
        memory.RestoreEntry({.kind = EntryKind::kRaw, .serial = 0, .raw_index = 0}, position);
    EXPECT_EQ(slot.status().code(), absl::StatusCode::kDataLoss) << position;
    EXPECT_EQ(memory.kv().pinned().num_slots(), 0);
  }
}

TEST(PolicyTest, ValidationNamesTheBadParameter) {
  Policy gist{
      .kind = PolicyKind::kGist, .ratio = 4, .window = 6, .sink_tokens = 2, .gist_token_id = 5};
  EXPECT_EQ(Validate(gist).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(Validate(gist).message().find("multiple of ratio"), std::string::npos);
  gist.window = 8;
  EXPECT_TRUE(Validate(gist).ok());
  gist.gist_token_id = -1;
  EXPECT_EQ(Validate(gist).code(), absl::StatusCode::kFailedPrecondition);
  Policy window{
      .kind = PolicyKind::kWindow, .ratio = 0, .window = 0, .sink_tokens = 4, .gist_token_id = -1};
  EXPECT_EQ(Validate(window).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParsePolicyName("gists").ok());
}

TEST(PolicyTest, GistCacheSizeFollowsTheMethodFormula) {
  // gist-method.md: n = 32768, r = 8, W = 512, S = 4 -> 4612 entries.
  const Policy p{
      .kind = PolicyKind::kGist, .ratio = 8, .window = 512, .sink_tokens = 4, .gist_token_id = 1};
  // A pool of one-layer pages: the entries' rows are never written (no engine runs), only
  // their slots are placed and released.
  const PageLayout layout{.block_size = 16, .num_layers = 1, .kv_dim = 2, .element_bytes = 4};
  BlockPool pool(MakeHostPageStorage(layout, int64_t{64} << 20));
  SessionMemory memory(pool, p);
  const std::vector<int32_t> raw(32768, 3);
  const RowPlan plan = memory.Plan(raw);
  for (int64_t begin = 0; begin < plan.size(); begin += 1024) {
    const int64_t end = std::min(plan.size(), begin + 1024);
    ASSERT_TRUE(memory.Reserve(plan, begin, end).ok());
    ASSERT_TRUE(memory.Applied(plan, begin, end).ok());
  }
  EXPECT_EQ(memory.Counts().total(), 4612);
  EXPECT_EQ(memory.state().stream_tokens, 32768 + 4096);
  // The pages follow: 4612 entries, up to partly used pages, not the 36864 of the stream.
  EXPECT_LE(memory.kv().pages_held() * layout.block_size, 4612 + 3 * (layout.block_size - 1));
  EXPECT_EQ(pool.pages_in_use(), memory.kv().pages_held());
}

}  // namespace
}  // namespace gistmem::memory
