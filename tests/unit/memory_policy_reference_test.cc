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

namespace gistmem::memory {
namespace {

const std::filesystem::path kRoot(GISTMEM_SOURCE_DIR);

// Small pages (4 entries), so that window pages come and go within the fixture's stream.
constexpr int32_t kBlockSize = 4;

struct Fixture {
  nlohmann::json spec;
  std::unique_ptr<model::SafetensorsFile> logits;
  std::unique_ptr<model::Engine> model;
};

const Fixture& Load() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture;
    std::ifstream in(kRoot / "tests/fixtures/policies/qwen2-tied-f32.json");
    f->spec = nlohmann::json::parse(in);
    f->logits =
        model::SafetensorsFile::Open(kRoot / "tests/fixtures/policies/qwen2-tied-f32.safetensors");
    f->model = model::LoadCpu(kRoot / f->spec.at("model").get<std::string>(), 2, kBlockSize);
    return f;
  }();
  return *fixture;
}

Policy PolicyOf(const nlohmann::json& p) {
  Policy policy;
  policy.kind = *ParsePolicyName(p.at("kind").get<std::string>());
  policy.ratio = p.value("ratio", 0);
  policy.window = p.value("window", 0);
  policy.sink_tokens = p.value("sink_tokens", 0);
  policy.gist_token_id = p.value("gist_token_id", -1);
  return policy;
}

double RowRelativeError(std::span<const float> got, std::span<const float> want) {
  double diff = 0, scale = 0;
  for (size_t v = 0; v < want.size(); ++v) {
    diff = std::max(diff, std::fabs(double(got[v]) - want[v]));
    scale = std::max(scale, std::fabs(double(want[v])));
  }
  return diff / scale;
}

// The largest RowRelativeError over the rows of `got` against the [rows, vocab] `want`.
double MaxRowRelativeError(const std::vector<std::vector<float>>& got,
                           const std::vector<float>& want, int64_t vocab) {
  double worst = 0;
  for (size_t row = 0; row < got.size(); ++row) {
    worst =
        std::max(worst, RowRelativeError(got[row], std::span(want).subspan(row * vocab, vocab)));
  }
  return worst;
}

std::vector<int32_t> RawTokens(const Fixture& f) {
  std::vector<int32_t> raw;
  for (int64_t t : f.spec.at("raw_tokens"))
    raw.push_back(static_cast<int32_t>(t));
  return raw;
}

// Reads `raw` into `memory` in steps of at most `chunk` rows; returns the logits of every row.
std::vector<std::vector<float>> Serve(model::Engine& engine, SessionMemory& memory,
                                      std::span<const int32_t> raw, int64_t chunk) {
  const RowPlan plan = memory.Plan(raw);
  std::vector<std::vector<float>> rows;
  const int64_t step = std::min(chunk, MaxChunkTokens(memory.policy()));
  for (int64_t begin = 0; begin < plan.size(); begin += step) {
    const int64_t end = std::min(plan.size(), begin + step);
    const absl::StatusOr<std::vector<float>> logits =
        ReadRows(engine, memory, plan, begin, end, model::LogitsMode::kAll);
    if (!logits.ok()) {
      ADD_FAILURE() << "ReadRows of rows [" << begin << ", " << end << "): " << logits.status();
      return rows;
    }
    const int64_t vocab = engine.config().vocab_size;
    for (int64_t r = 0; r < end - begin; ++r)
      rows.emplace_back(logits->begin() + r * vocab, logits->begin() + (r + 1) * vocab);
  }
  return rows;
}

// What a session holds beyond the entries its policy keeps is partly used pages only: the
// pinned segment's tail page, and at most one page at each end of the window (expired slots
// of the head page, free slots of the tail page).
void ExpectPagesFollowRetained(const SessionMemory& memory) {
  const int64_t retained = memory.Counts().total();
  const PageLayout& layout = memory.kv().pool().layout();
  const int64_t entry_bytes = layout.page_bytes() / layout.block_size;
  EXPECT_LE(memory.Bytes(), (retained + 3 * (layout.block_size - 1)) * entry_bytes)
      << retained << " entries retained";
  EXPECT_GE(memory.WastedBytes(), 0);  // every retained entry holds a slot
}

class PolicyReference : public testing::TestWithParam<int64_t> {};

TEST_P(PolicyReference, IncrementalServingEqualsTheMaskedFullSequence) {
  const Fixture& f = Load();
  const int64_t chunk = GetParam();
  const std::vector<int32_t> raw = RawTokens(f);
  for (const auto& c : f.spec.at("cases")) {
    const std::string name = c.at("policy").at("name");
    SCOPED_TRACE(name + ", chunk " + std::to_string(chunk));
    const Policy policy = PolicyOf(c.at("policy"));
    ASSERT_TRUE(Validate(policy).ok()) << Validate(policy);
    const std::vector<float> want = f.logits->tensors().at(name).ToFloat32();
    const int64_t vocab = f.model->config().vocab_size;
    SessionMemory memory(f.model->kv_pool(), policy);
    std::vector<std::vector<float>> got;
    size_t read = 0;
    int64_t most_retained = 0, most_pages = 0;
    for (int64_t turn : f.spec.at("turns")) {
      memory.BeginTurn();
      auto rows = Serve(*f.model, memory, std::span(raw).subspan(read, turn), chunk);
      memory.EndTurn();
      read += turn;
      got.insert(got.end(), rows.begin(), rows.end());
      most_retained = std::max(most_retained, memory.Counts().total());
      most_pages = std::max(most_pages, memory.kv().pages_held());
      // Every page in use is this session's (nothing leaks past a turn).
      EXPECT_EQ(f.model->kv_pool().pages_in_use(), memory.kv().pages_held());
      ExpectPagesFollowRetained(memory);
    }
    ASSERT_EQ(static_cast<int64_t>(got.size()), c.at("stream_tokens").get<int64_t>());
    ASSERT_EQ(memory.state().stream_tokens, c.at("stream_tokens").get<int64_t>());
    const double worst = MaxRowRelativeError(got, want, vocab);
    EXPECT_LE(worst, 1e-4);
    std::printf(
        "%s chunk %ld: max row-relative error %.3g, %ld entries (%ld pages) of %ld stream rows\n",
        name.c_str(), chunk, worst, memory.Counts().total(), memory.kv().pages_held(),
        memory.state().stream_tokens);

    // What stays is what the policy keeps, nothing more, and the session's pages shrink with
    // it (ExpectPagesFollowRetained above, after every turn).
    const RetainedCounts counts = memory.Counts();
    const int64_t n = memory.state().raw_tokens;
    switch (policy.kind) {
      case PolicyKind::kFull:
        EXPECT_EQ(counts.total(), n);
        EXPECT_EQ(memory.kv().pages_held(), (n + kBlockSize - 1) / kBlockSize);
        break;
      case PolicyKind::kWindow:
        EXPECT_EQ(counts.sink, policy.sink_tokens);
        EXPECT_LE(counts.raw, policy.window);
        EXPECT_EQ(counts.gist + counts.pooled, 0);
        break;
      case PolicyKind::kGist:
        EXPECT_EQ(counts.gist, n / policy.ratio);
        EXPECT_LE(counts.raw + counts.sink, policy.window + policy.sink_tokens);
        break;
      case PolicyKind::kPool:
        EXPECT_LE(counts.pooled, n / policy.ratio);
        EXPECT_GE(counts.pooled,
                  n / policy.ratio - (policy.window + policy.sink_tokens) / policy.ratio - 1);
        EXPECT_LE(counts.raw, policy.window + policy.ratio);
        break;
    }
    if (policy.kind != PolicyKind::kFull) {
      EXPECT_LT(most_retained, memory.state().stream_tokens);
      // Pages really went back: had none been freed, the session would hold a slot for every
      // stream row.
      EXPECT_LT(most_pages * kBlockSize, memory.state().stream_tokens);
    }
  }
}

// Chunks of 1 (decode-like), 5 (turns split mid-span) and 64 (a whole turn, longer than the
// window: visibility changes inside one step).
INSTANTIATE_TEST_SUITE_P(Chunks, PolicyReference, testing::Values(1, 5, 64));

// A document read alone, frozen and attached to a session at its stream's end, then the
// session goes on: the logits of every row (the document's own rows from its standalone run)
// equal the reference's, which placed the document at the attach point.
TEST(DocumentReference, AttachedDocumentEqualsTheMaskedFullSequence) {
  const Fixture& f = Load();
  const std::vector<int32_t> raw = RawTokens(f);
  const nlohmann::json& docs = f.spec.at("documents");
  const int64_t a = docs.at("a"), d = docs.at("document");
  const int64_t vocab = f.model->config().vocab_size;
  for (const auto& c : docs.at("cases")) {
    const std::string name = c.at("name");
    SCOPED_TRACE(name);
    const std::vector<float> want = f.logits->tensors().at(name).ToFloat32();
    SessionMemory session(f.model->kv_pool(), PolicyOf(c.at("session_policy")));
    SessionMemory document(f.model->kv_pool(), PolicyOf(c.at("document_policy")));
    std::vector<std::vector<float>> got = Serve(*f.model, session, std::span(raw).subspan(0, a), 8);
    const auto doc_rows = Serve(*f.model, document, std::span(raw).subspan(a, d), 16);
    got.insert(got.end(), doc_rows.begin(), doc_rows.end());
    const absl::StatusOr<std::shared_ptr<const FrozenKv>> frozen_or = document.Frozen();
    ASSERT_TRUE(frozen_or.ok()) << frozen_or.status();
    const std::shared_ptr<const FrozenKv> frozen = *frozen_or;
    EXPECT_LT(frozen->size(), document.state().stream_tokens + 1);
    EXPECT_EQ(frozen->stream_tokens(), document.state().stream_tokens);
    const int64_t stream_before = session.state().stream_tokens;
    session.Attach(frozen, name);
    EXPECT_EQ(session.state().stream_tokens, stream_before + frozen->stream_tokens());
    EXPECT_EQ(session.kv().attached().at(0).position_offset, stream_before);
    int64_t read = a + d;
    for (int64_t turn : docs.at("b_turns")) {
      session.BeginTurn();
      auto rows = Serve(*f.model, session, std::span(raw).subspan(read, turn), 4);
      session.EndTurn();
      got.insert(got.end(), rows.begin(), rows.end());
      read += turn;
    }
    ASSERT_EQ(static_cast<int64_t>(got.size()), c.at("stream_tokens").get<int64_t>());
    const double worst = MaxRowRelativeError(got, want, vocab);
    EXPECT_LE(worst, 1e-4);
    std::printf("%s: max row-relative error %.3g; document keeps %ld entries of %ld\n",
                name.c_str(), worst, frozen->size(), document.state().stream_tokens);
    EXPECT_EQ(session.AttachedEntries(), frozen->size());
  }
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
