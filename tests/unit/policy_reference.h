// The memory policy reference (training/policy_reference.py: float64, masks over the full
// sequence, every stream row's logits for each policy, tests/fixtures/policies) as checks any
// engine can be put through: the CPU engine (tests/unit/memory_policy_reference_test.cc) and
// the CUDA engine (tests/gpu/cuda_policy_reference_test.cc), each with its own tolerance.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "memory/block_pool.h"
#include "memory/read_rows.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "model/weights.h"

namespace gistmem::memory::policy_reference {

// Small pages (4 entries), so that window pages come and go within the fixture's stream.
constexpr int32_t kBlockSize = 4;

// The fixture (spec and reference logits) and the engine that serves it.
struct Fixture {
  nlohmann::json spec;
  std::unique_ptr<model::SafetensorsFile> logits;
  std::unique_ptr<model::Engine> model;
};

// Reads the fixture under `root` (a checkout); the caller loads `model` from ModelDir().
inline Fixture LoadFixture(const std::filesystem::path& root) {
  Fixture f;
  std::ifstream in(root / "tests/fixtures/policies/qwen2-tied-f32.json");
  f.spec = nlohmann::json::parse(in);
  f.logits =
      model::SafetensorsFile::Open(root / "tests/fixtures/policies/qwen2-tied-f32.safetensors");
  return f;
}
inline std::filesystem::path ModelDir(const std::filesystem::path& root, const Fixture& f) {
  return root / f.spec.at("model").get<std::string>();
}

inline Policy PolicyOf(const nlohmann::json& p) {
  Policy policy;
  policy.kind = *ParsePolicyName(p.at("kind").get<std::string>());
  policy.ratio = p.value("ratio", 0);
  policy.window = p.value("window", 0);
  policy.sink_tokens = p.value("sink_tokens", 0);
  policy.gist_token_id = p.value("gist_token_id", -1);
  return policy;
}

inline double RowRelativeError(std::span<const float> got, std::span<const float> want) {
  double diff = 0, scale = 0;
  for (size_t v = 0; v < want.size(); ++v) {
    diff = std::max(diff, std::fabs(double(got[v]) - want[v]));
    scale = std::max(scale, std::fabs(double(want[v])));
  }
  return diff / scale;
}

// The largest RowRelativeError over the rows of `got` against the [rows, vocab] `want`.
inline double MaxRowRelativeError(const std::vector<std::vector<float>>& got,
                                  const std::vector<float>& want, int64_t vocab) {
  double worst = 0;
  for (size_t row = 0; row < got.size(); ++row) {
    worst =
        std::max(worst, RowRelativeError(got[row], std::span(want).subspan(row * vocab, vocab)));
  }
  return worst;
}

inline std::vector<int32_t> RawTokens(const Fixture& f) {
  std::vector<int32_t> raw;
  for (int64_t t : f.spec.at("raw_tokens"))
    raw.push_back(static_cast<int32_t>(t));
  return raw;
}

// Reads `raw` into `memory` in steps of at most `chunk` rows; returns the logits of every row.
inline std::vector<std::vector<float>> Serve(model::Engine& engine, SessionMemory& memory,
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
inline void ExpectPagesFollowRetained(const SessionMemory& memory) {
  const int64_t retained = memory.Counts().total();
  const PageLayout& layout = memory.kv().pool().layout();
  const int64_t entry_bytes = layout.page_bytes() / layout.block_size;
  EXPECT_LE(memory.Bytes(), (retained + 3 * (layout.block_size - 1)) * entry_bytes)
      << retained << " entries retained";
  EXPECT_GE(memory.WastedBytes(), 0);  // every retained entry holds a slot
}

// Reads the fixture's stream turn by turn in steps of at most `chunk` rows under every policy
// of the fixture; every row's logits within `tolerance` (row-relative) of the reference, and
// the session keeps what its policy keeps.
inline void CheckIncrementalServing(const Fixture& f, int64_t chunk, double tolerance) {
  const std::vector<int32_t> raw = RawTokens(f);
  for (const auto& c : f.spec.at("cases")) {
    const std::string name = c.at("policy").at("name");
    const int32_t kBlockSize = f.model->kv_pool().layout().block_size;
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
    EXPECT_LE(worst, tolerance);
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

// A document read alone, frozen and attached to a session, then the session goes on: every
// row's logits within `tolerance` of the reference, which placed the document at the attach
// point.
inline void CheckAttachedDocuments(const Fixture& f, double tolerance) {
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
    EXPECT_LE(worst, tolerance);
    std::printf("%s: max row-relative error %.3g; document keeps %ld entries of %ld\n",
                name.c_str(), worst, frozen->size(), document.state().stream_tokens);
    EXPECT_EQ(session.AttachedEntries(), frozen->size());
  }
}

}  // namespace gistmem::memory::policy_reference
