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

#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/backend/cpu/cpu_transformer.h"
#include "model/weights.h"

namespace gistmem::memory {
namespace {

const std::filesystem::path kRoot(GISTMEM_SOURCE_DIR);

struct Fixture {
  nlohmann::json spec;
  std::unique_ptr<model::SafetensorsFile> logits;
  std::unique_ptr<model::CpuTransformer> model;
};

const Fixture& Load() {
  static const Fixture* fixture = [] {
    auto* f = new Fixture;
    std::ifstream in(kRoot / "tests/fixtures/policies/qwen2-tied-f32.json");
    f->spec = nlohmann::json::parse(in);
    f->logits =
        model::SafetensorsFile::Open(kRoot / "tests/fixtures/policies/qwen2-tied-f32.safetensors");
    f->model = model::CpuTransformer::Load(kRoot / f->spec.at("model").get<std::string>(), 2);
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
std::vector<std::vector<float>> Serve(model::CpuTransformer& engine, SessionMemory& memory,
                                      std::span<const int32_t> raw, int64_t chunk) {
  const RowPlan plan = memory.Plan(raw);
  std::vector<std::vector<float>> rows;
  const int64_t step = std::min(chunk, MaxChunkTokens(memory.policy()));
  for (int64_t begin = 0; begin < plan.size(); begin += step) {
    const int64_t end = std::min(plan.size(), begin + step);
    const std::vector<float> logits =
        ReadRows(engine, memory, plan, begin, end, model::LogitsMode::kAll);
    const int64_t vocab = engine.config().vocab_size;
    for (int64_t r = 0; r < end - begin; ++r)
      rows.emplace_back(logits.begin() + r * vocab, logits.begin() + (r + 1) * vocab);
  }
  return rows;
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
    SessionMemory memory(f.model->config(), policy);
    std::vector<std::vector<float>> got;
    size_t read = 0;
    int64_t most_retained = 0;
    for (int64_t turn : f.spec.at("turns")) {
      memory.BeginTurn();
      auto rows = Serve(*f.model, memory, std::span(raw).subspan(read, turn), chunk);
      memory.EndTurn();
      read += turn;
      got.insert(got.end(), rows.begin(), rows.end());
      most_retained = std::max(most_retained, memory.cache().size());
    }
    ASSERT_EQ(static_cast<int64_t>(got.size()), c.at("stream_tokens").get<int64_t>());
    ASSERT_EQ(memory.state().stream_tokens, c.at("stream_tokens").get<int64_t>());
    const double worst = MaxRowRelativeError(got, want, vocab);
    EXPECT_LE(worst, 1e-4);
    std::printf("%s chunk %ld: max row-relative error %.3g, cache %ld of %ld stream rows\n",
                name.c_str(), chunk, worst, memory.cache().size(), memory.state().stream_tokens);

    // What stays is what the policy keeps, nothing more (the cache really shrinks).
    const RetainedCounts counts = memory.Counts();
    const int64_t n = memory.state().raw_tokens;
    EXPECT_EQ(counts.total(), memory.cache().size());
    switch (policy.kind) {
      case PolicyKind::kFull:
        EXPECT_EQ(memory.cache().size(), n);
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
    SessionMemory session(f.model->config(), PolicyOf(c.at("session_policy")));
    SessionMemory document(f.model->config(), PolicyOf(c.at("document_policy")));
    std::vector<std::vector<float>> got = Serve(*f.model, session, std::span(raw).subspan(0, a), 8);
    const auto doc_rows = Serve(*f.model, document, std::span(raw).subspan(a, d), 16);
    got.insert(got.end(), doc_rows.begin(), doc_rows.end());
    const std::shared_ptr<const model::KvCache> frozen = document.Frozen();
    EXPECT_LT(frozen->size(), document.state().stream_tokens + 1);
    session.Attach(frozen, document.state().stream_tokens);
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
  SessionMemory session(f.model->config(), full), document(f.model->config(), full);
  const std::vector<int32_t> tokens = {5, 6, 7, 8};
  Serve(*f.model, session, tokens, 4);
  Serve(*f.model, document, tokens, 4);
  const MemoryState before = session.state();
  session.BeginTurn();
  session.Attach(document.Frozen(), document.state().stream_tokens);
  EXPECT_EQ(session.state().stream_tokens, before.stream_tokens + 4);
  session.Rollback();
  EXPECT_EQ(session.state(), before);
  EXPECT_TRUE(session.cache().shared().empty());
  EXPECT_EQ(session.cache().next_position(), before.stream_tokens);
}

TEST(SessionMemoryTest, RollbackRestoresTheCacheBitForBit) {
  const Fixture& f = Load();
  const std::vector<int32_t> raw = RawTokens(f);
  for (const auto& c : f.spec.at("cases")) {
    SCOPED_TRACE(c.at("policy").at("name").get<std::string>());
    SessionMemory memory(f.model->config(), PolicyOf(c.at("policy")));
    memory.BeginTurn();
    Serve(*f.model, memory, std::span(raw).subspan(0, 40), 7);
    memory.EndTurn();
    const model::KvCache before = memory.cache();
    const MemoryState state = memory.state();
    const std::vector<EntryInfo> entries = memory.entries();

    memory.BeginTurn();
    Serve(*f.model, memory, std::span(raw).subspan(40, 30), 3);
    memory.Rollback();
    ASSERT_EQ(memory.state(), state);
    ASSERT_EQ(memory.cache().positions(), before.positions());
    ASSERT_EQ(memory.cache().visibility(), before.visibility());
    ASSERT_EQ(memory.entries().size(), entries.size());
    for (size_t i = 0; i < entries.size(); ++i)
      ASSERT_EQ(memory.entries()[i].serial, entries[i].serial);
    for (int64_t l = 0; l < before.num_layers(); ++l) {
      ASSERT_TRUE(std::equal(before.keys(l), before.keys(l) + before.size() * before.kv_dim(),
                             memory.cache().keys(l)));
      ASSERT_TRUE(std::equal(before.values(l), before.values(l) + before.size() * before.kv_dim(),
                             memory.cache().values(l)));
    }
    EXPECT_EQ(memory.cache().next_position(), state.stream_tokens);
  }
}

TEST(SessionMemoryTest, AnImpossibleStoredStateIsDataLoss) {
  const Fixture& f = Load();
  for (const MemoryState bad :
       {MemoryState{.stream_tokens = 4, .raw_tokens = 9},
        MemoryState{.stream_tokens = 4, .raw_tokens = -1},
        MemoryState{.stream_tokens = 4, .raw_tokens = 4, .next_serial = -2}}) {
    SessionMemory memory(f.model->config(), Policy{});
    EXPECT_EQ(memory.FinishRestore(bad).code(), absl::StatusCode::kDataLoss);
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
  model::ModelConfig config;
  config.num_layers = 1;
  config.num_heads = 1;
  config.num_kv_heads = 1;
  config.head_dim = 2;
  config.hidden_size = 2;
  SessionMemory memory(config, p);
  const std::vector<int32_t> raw(32768, 3);
  const RowPlan plan = memory.Plan(raw);
  for (int64_t begin = 0; begin < plan.size(); begin += 1024) {
    const int64_t end = std::min(plan.size(), begin + 1024);
    memory.cache().Extend(std::span(plan.positions).subspan(begin, end - begin),
                          std::span(plan.visibility).subspan(begin, end - begin));
    memory.Applied(plan, begin, end);
  }
  EXPECT_EQ(memory.cache().size(), 4612);
  EXPECT_EQ(memory.state().stream_tokens, 32768 + 4096);
}

}  // namespace
}  // namespace gistmem::memory
