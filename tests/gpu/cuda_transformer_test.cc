// CudaTransformer against the CPU reference (the CPU engine through model/engine.h, fp32) and
// against the transformers fixtures (fp32 logits of random-weight checkpoints), for the three
// fixture models: Llama (GQA, llama3 RoPE scaling, bf16), Qwen2 (q/k/v biases, tied
// embeddings, f32), Mistral (sliding window 8, f16). KV goes through a paged bf16 pool with
// small pages handed out in shuffled order, so every sequence crosses many scattered pages.
//
// Tolerance: the GPU rounds weights, K/V and every GEMM input to bf16 (2^-9 relative each)
// and keeps the residual stream and accumulations in fp32. Over two layers and the LM head that
// gives errors of about 1e-2 of the logit scale; we require max |logit diff| <= a per-model bound
// (ToleranceFor: 2.5e-2 / 3.5e-2 / 5e-2 of the row's largest |logit|, the fixture test's
// "row-relative error", about 1.5x the worst seen on the H200), and the same top-1 token on every
// row unless the reference's top two are within 1% of the row's scale (a tie bf16 cannot resolve).
#include "model/backend/cuda/cuda_transformer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "memory/session_kv.h"
#include "model/backend/cuda/device_kv_view.h"
#include "model/backend/cuda/kernels.h"
#include "model/engine.h"
#include "model/weights.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::cuda {
namespace {

std::filesystem::path ModelsDir() {
  if (const char* dir = std::getenv("GISTMEM_FIXTURES")) return dir;
  return testing::SourceRoot() / "tests/fixtures/models";
}

struct ReferenceCase {
  std::vector<int32_t> tokens;
  std::vector<float> logits;  // [tokens, vocab]
};

std::vector<ReferenceCase> LoadCases(const std::filesystem::path& dir) {
  std::ifstream in(dir / "reference_cases.json");
  const nlohmann::json cases = nlohmann::json::parse(in).at("cases");
  const auto expected = model::SafetensorsFile::Open(dir / "reference_logits.safetensors");
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

// The bound per fixture model, about 1.5x the worst error seen on the H200 (RESULTS.md runs 2-6:
// llama 0.0146, qwen2 0.0221, mistral 0.0339, the f16 model with the largest logits), so a
// regression of half the current error fails; top-1 may differ only where the reference's top
// two are within 1% of the row's scale (below the bf16 error, which no bf16 run can resolve).
double ToleranceFor(const std::string& model) {
  if (model.starts_with("llama")) return 2.5e-2;
  if (model.starts_with("qwen2")) return 3.5e-2;
  return 5e-2;
}
constexpr double kTieFraction = 1e-2;

std::string current_model;  // the fixture model of the running test, for CompareLogits

double CompareLogits(const std::vector<float>& got, const std::vector<float>& want, int64_t vocab,
                     const std::string& what) {
  const double tolerance = ToleranceFor(current_model);
  const testing::LogitComparison c =
      testing::CompareLogits(got, want, vocab, what, tolerance, kTieFraction);
  std::printf("%-56s max row-relative error %.3g (bound %.3g), top-1 same %ld/%ld\n", what.c_str(),
              c.worst, tolerance, c.top1_same, c.rows);
  return c.worst;
}

// The test's session KV: one pinned segment per sequence, its pages taken from a shuffled
// free list shared by all sequences.
class PagedSessions {
 public:
  PagedSessions(int32_t block_size, int32_t num_pages, unsigned seed) : block_size_(block_size) {
    free_.resize(num_pages);
    std::iota(free_.begin(), free_.end(), 0);
    std::shuffle(free_.begin(), free_.end(), std::mt19937(seed));
  }
  int32_t Add() {
    segments_.emplace_back();
    return static_cast<int32_t>(segments_.size()) - 1;
  }
  // Appends rows at `positions` to sequence s; returns their (page, slot).
  void Append(int32_t s, std::span<const int32_t> positions, std::vector<int32_t>& pages,
              std::vector<int32_t>& slots) {
    HostKvSegment& seg = segments_[s];
    pages.clear();
    slots.clear();
    for (int32_t p : positions) {
      if (seg.num_slots % block_size_ == 0) seg.page_ids.push_back(free_.at(next_++));
      pages.push_back(seg.page_ids.back());
      slots.push_back(seg.num_slots % block_size_);
      seg.positions.push_back(p);
      seg.visible_from.push_back(0);
      seg.visible_until.push_back(memory::kVisibleForever);
      ++seg.num_slots;
    }
  }
  absl::StatusOr<DeviceKvViews> Upload() const {
    std::vector<std::vector<HostKvSegment>> host;
    for (const HostKvSegment& seg : segments_)
      host.push_back({seg});
    return DeviceKvViews::Upload(host, block_size_);
  }

 private:
  int32_t block_size_;
  std::vector<int32_t> free_;
  size_t next_ = 0;
  std::vector<HostKvSegment> segments_;
};

std::vector<int32_t> Iota(int32_t begin, size_t count) {
  std::vector<int32_t> v(count);
  std::iota(v.begin(), v.end(), begin);
  return v;
}

class CudaTransformerFixtures : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    current_model = GetParam();
    dir_ = ModelsDir() / GetParam();
    absl::StatusOr<std::unique_ptr<CudaTransformer>> model = CudaTransformer::Load(dir_);
    ASSERT_OK(model.status());
    model_ = std::move(*model);
    vocab_ = model_->config().vocab_size;
    absl::StatusOr<KvPagePool> pool = KvPagePool::Allocate(model_->PageLayoutFor(kBlock), kPages);
    ASSERT_OK(pool.status());
    pool_ = std::make_unique<KvPagePool>(std::move(*pool));
    cases_ = LoadCases(dir_);
  }

  static constexpr int32_t kBlock = 4, kPages = 512;
  std::filesystem::path dir_;
  std::unique_ptr<CudaTransformer> model_;
  std::unique_ptr<KvPagePool> pool_;
  int64_t vocab_ = 0;
  std::vector<ReferenceCase> cases_;
};

TEST_P(CudaTransformerFixtures, FullPrefillMatchesTransformersAndCpu) {
  const std::unique_ptr<model::Engine> cpu = model::LoadCpu(dir_, 2);
  for (size_t c = 0; c < cases_.size(); ++c) {
    const ReferenceCase& rc = cases_[c];
    PagedSessions sessions(kBlock, kPages, static_cast<unsigned>(c + 1));
    const int32_t s = sessions.Add();
    const std::vector<int32_t> positions = Iota(0, rc.tokens.size());
    std::vector<int32_t> pages, slots;
    sessions.Append(s, positions, pages, slots);
    absl::StatusOr<DeviceKvViews> views = sessions.Upload();
    ASSERT_OK(views.status());
    const std::vector<int32_t> all_rows = Iota(0, rc.tokens.size());
    CudaSequenceStep step{.tokens = rc.tokens,
                          .positions = positions,
                          .clocks = {},
                          .kv_pages = pages,
                          .kv_slots = slots,
                          .kv = views->view(0),
                          .logits_rows = all_rows};
    absl::StatusOr<std::vector<float>> logits = model_->Forward({&step, 1}, *pool_);
    ASSERT_OK(logits.status());
    const std::string what = GetParam() + " prefill " + std::to_string(rc.tokens.size());
    CompareLogits(*logits, rc.logits, vocab_, what + " vs transformers");
    model::PlainSequence sequence(*cpu);
    std::vector<int64_t> positions64(positions.begin(), positions.end());
    const std::vector<float> cpu_logits =
        sequence.Forward(rc.tokens, positions64, model::LogitsMode::kAll);
    CompareLogits(*logits, cpu_logits, vocab_, what + " vs CPU");
  }
}

// Every case of the model at once: a batched prefill of the first third of each, then batched
// decode steps (sequences drop out as they finish), all through one pool.
TEST_P(CudaTransformerFixtures, BatchedPrefillThenDecodeStepsMatchTransformers) {
  PagedSessions sessions(kBlock, kPages, 99);
  std::vector<std::vector<float>> logits(cases_.size());
  std::vector<size_t> done(cases_.size());
  for (size_t c = 0; c < cases_.size(); ++c) {
    sessions.Add();
    done[c] = std::max<size_t>(1, cases_[c].tokens.size() / 3);
  }
  bool first = true;
  while (true) {
    // Host arrays of this step, kept alive until Forward returns.
    std::vector<size_t> which;
    std::vector<std::vector<int32_t>> positions, pages, slots, rows;
    for (size_t c = 0; c < cases_.size(); ++c) {
      const size_t begin = first ? 0 : done[c];
      const size_t end = first ? done[c] : done[c] + 1;
      if (begin >= cases_[c].tokens.size()) continue;
      which.push_back(c);
      positions.push_back(Iota(static_cast<int32_t>(begin), end - begin));
      pages.emplace_back();
      slots.emplace_back();
      sessions.Append(static_cast<int32_t>(c), positions.back(), pages.back(), slots.back());
      rows.push_back(Iota(0, end - begin));
    }
    if (which.empty()) break;
    absl::StatusOr<DeviceKvViews> views = sessions.Upload();
    ASSERT_OK(views.status());
    std::vector<CudaSequenceStep> steps;
    for (size_t i = 0; i < which.size(); ++i) {
      const size_t c = which[i];
      steps.push_back(
          {.tokens = std::span(cases_[c].tokens).subspan(positions[i][0], positions[i].size()),
           .positions = positions[i],
           .clocks = {},
           .kv_pages = pages[i],
           .kv_slots = slots[i],
           .kv = views->view(c),
           .logits_rows = rows[i]});
    }
    absl::StatusOr<std::vector<float>> out = model_->Forward(steps, *pool_);
    ASSERT_OK(out.status());
    size_t offset = 0;
    for (size_t i = 0; i < which.size(); ++i) {
      const size_t n = rows[i].size() * vocab_;
      logits[which[i]].insert(logits[which[i]].end(), out->begin() + offset,
                              out->begin() + offset + n);
      offset += n;
      if (!first) ++done[which[i]];
    }
    first = false;
  }
  for (size_t c = 0; c < cases_.size(); ++c) {
    CompareLogits(
        logits[c], cases_[c].logits, vocab_,
        GetParam() + " batched prefill+decode " + std::to_string(cases_[c].tokens.size()));
  }
}

TEST_P(CudaTransformerFixtures, RejectsMalformedSteps) {
  PagedSessions sessions(kBlock, kPages, 5);
  sessions.Add();
  const std::vector<int32_t> tokens = {1, static_cast<int32_t>(vocab_)}, positions = {0, 1};
  std::vector<int32_t> pages, slots;
  sessions.Append(0, positions, pages, slots);
  absl::StatusOr<DeviceKvViews> views = sessions.Upload();
  ASSERT_OK(views.status());
  CudaSequenceStep step{.tokens = tokens,
                        .positions = positions,
                        .clocks = {},
                        .kv_pages = pages,
                        .kv_slots = slots,
                        .kv = views->view(0),
                        .logits_rows = {}};
  EXPECT_EQ(model_->Forward({&step, 1}, *pool_).status().code(),
            absl::StatusCode::kInvalidArgument);
  absl::StatusOr<KvPagePool> other =
      KvPagePool::Allocate({.block_size = 4, .num_layers = 1, .kv_dim = 8, .element_bytes = 2}, 2);
  ASSERT_OK(other.status());
  const std::vector<int32_t> good = {1, 2};
  step.tokens = good;
  EXPECT_EQ(model_->Forward({&step, 1}, *other).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, CudaTransformerFixtures,
                         ::testing::Values("llama-gqa-bf16", "qwen2-tied-f32",
                                           "mistral-window-f16"),
                         [](const auto& info) {
                           std::string name = info.param;
                           std::replace(name.begin(), name.end(), '-', '_');
                           return name;
                         });

// A memory policy's clocks through the GPU path vs the CPU reference's (EntryVisibility): a
// window of 6 raw entries plus 2 sinks, decoded token by token on the Qwen2 fixture.
TEST(CudaTransformerPolicy, WindowVisibilityMatchesCpu) {
  current_model = "qwen2-tied-f32";
  const auto dir = ModelsDir() / current_model;
  absl::StatusOr<std::unique_ptr<CudaTransformer>> gpu = CudaTransformer::Load(dir);
  ASSERT_OK(gpu.status());
  const std::unique_ptr<model::Engine> cpu = model::LoadCpu(dir, 2);
  const int64_t vocab = cpu->config().vocab_size;
  absl::StatusOr<KvPagePool> pool = KvPagePool::Allocate((*gpu)->PageLayoutFor(8), 64);
  ASSERT_OK(pool.status());
  constexpr int32_t kSinks = 2, kWindow = 6, kTokens = 40;
  std::mt19937 rng(7);
  model::PlainSequence sequence(*cpu);
  HostKvSegment seg;
  for (int32_t t = 0; t < kTokens; ++t) {
    const int32_t token = static_cast<int32_t>(rng() % vocab);
    // Raw clock = t + 1; entry t stays visible while it is among the last kWindow raw entries.
    const int32_t clock = t + 1;
    const int32_t until = t < kSinks ? memory::kVisibleForever : t + kWindow;
    if (seg.num_slots % 8 == 0) seg.page_ids.push_back(63 - seg.num_slots / 8 * 3);
    const int32_t page = seg.page_ids.back(), slot = seg.num_slots % 8;
    seg.positions.push_back(t);
    seg.visible_from.push_back(clock);
    seg.visible_until.push_back(until);
    ++seg.num_slots;
    const std::vector<std::vector<HostKvSegment>> host = {{seg}};
    absl::StatusOr<DeviceKvViews> views = DeviceKvViews::Upload(host, 8);
    ASSERT_OK(views.status());
    const std::vector<int32_t> tokens = {token}, positions = {t}, clocks = {clock}, pages = {page},
                               slots = {slot};
    CudaSequenceStep step{.tokens = tokens,
                          .positions = positions,
                          .clocks = clocks,
                          .kv_pages = pages,
                          .kv_slots = slots,
                          .kv = views->view(0),
                          .logits_rows = {}};
    absl::StatusOr<std::vector<float>> got = (*gpu)->Forward({&step, 1}, *pool);
    ASSERT_OK(got.status());

    const int64_t positions64[] = {t}, clocks64[] = {clock};
    const memory::EntryVisibility visibility[] = {
        {clock, until == memory::kVisibleForever ? memory::EntryVisibility::kForever : until}};
    const std::vector<float> want =
        sequence.Forward(tokens, positions64, model::LogitsMode::kLast, clocks64, visibility);
    CompareLogits(*got, want, vocab, "window policy step " + std::to_string(t));
  }
}

// Pages from a shuffled free list, and slots appended to one segment.
class Slots {
 public:
  Slots(int32_t block_size, int32_t num_pages, unsigned seed) : block_size_(block_size) {
    free_.resize(num_pages);
    std::iota(free_.begin(), free_.end(), 0);
    std::shuffle(free_.begin(), free_.end(), std::mt19937(seed));
  }
  // Appends one slot; returns its (page, slot).
  std::pair<int32_t, int32_t> Append(HostKvSegment& seg, int32_t position, int32_t from = 0,
                                     int32_t until = memory::kVisibleForever) {
    if (seg.num_slots % block_size_ == 0) seg.page_ids.push_back(free_.at(next_++));
    const std::pair<int32_t, int32_t> at{seg.page_ids.back(), seg.num_slots % block_size_};
    if (!seg.shared) {
      seg.positions.push_back(position);
      seg.visible_from.push_back(from);
      seg.visible_until.push_back(until);
    }
    ++seg.num_slots;
    return at;
  }

 private:
  int32_t block_size_;
  std::vector<int32_t> free_;
  size_t next_ = 0;
};

// Runs `tokens` at `positions` as one step of a sequence whose KV is `segments` (the first one
// gets the new rows); returns the logits of every row.
std::vector<float> Step(CudaTransformer& model, KvPagePool& pool, Slots& slots,
                        std::vector<HostKvSegment>& segments, std::span<const int32_t> tokens,
                        std::span<const int32_t> positions) {
  std::vector<int32_t> pages, slot_ids;
  for (int32_t p : positions) {
    const auto [page, slot] = slots.Append(segments[0], p);
    pages.push_back(page);
    slot_ids.push_back(slot);
  }
  const std::vector<std::vector<HostKvSegment>> host = {segments};
  absl::StatusOr<DeviceKvViews> views = DeviceKvViews::Upload(host, pool.layout().block_size);
  EXPECT_TRUE(views.ok()) << views.status();
  const std::vector<int32_t> rows = Iota(0, tokens.size());
  CudaSequenceStep step{.tokens = tokens,
                        .positions = positions,
                        .clocks = {},
                        .kv_pages = pages,
                        .kv_slots = slot_ids,
                        .kv = views->view(0),
                        .logits_rows = rows};
  absl::StatusOr<std::vector<float>> logits = model.Forward({&step, 1}, pool);
  EXPECT_TRUE(logits.ok()) << logits.status();
  return logits.ok() ? *logits : std::vector<float>();
}

std::vector<int32_t> RandomTokens(size_t count, int64_t vocab, std::mt19937& rng) {
  std::vector<int32_t> tokens(count);
  for (int32_t& t : tokens)
    t = static_cast<int32_t>(rng() % vocab);
  return tokens;
}

// A document computed once (its own positions 0..m-1) and attached to a session at offset 9:
// the GPU's shared segment (query rotated back by rope_offset) against the CPU engine reading
// a FrozenKv attached to a SessionKv.
TEST(CudaTransformerShared, AttachedDocumentMatchesCpu) {
  current_model = "qwen2-tied-f32";
  const auto dir = ModelsDir() / current_model;
  absl::StatusOr<std::unique_ptr<CudaTransformer>> gpu = CudaTransformer::Load(dir);
  ASSERT_OK(gpu.status());
  const std::unique_ptr<model::Engine> cpu = model::LoadCpu(dir, 2, 4);
  const int64_t vocab = cpu->config().vocab_size;
  absl::StatusOr<KvPagePool> pool = KvPagePool::Allocate((*gpu)->PageLayoutFor(4), 64);
  ASSERT_OK(pool.status());
  Slots slots(4, 64, 11);
  std::mt19937 rng(12);
  const std::vector<int32_t> doc = RandomTokens(13, vocab, rng),
                             prefix = RandomTokens(9, vocab, rng),
                             query = RandomTokens(6, vocab, rng);

  // The document alone, then the session's prefix.
  std::vector<HostKvSegment> doc_kv(1), session(1);
  Step(**gpu, *pool, slots, doc_kv, doc, Iota(0, doc.size()));
  Step(**gpu, *pool, slots, session, prefix, Iota(0, prefix.size()));
  model::PlainSequence doc_sequence(*cpu);
  std::vector<int64_t> doc_positions(doc.size());
  std::iota(doc_positions.begin(), doc_positions.end(), 0);
  doc_sequence.Forward(doc, doc_positions, model::LogitsMode::kLast);
  memory::EntryList doc_entries;
  for (int32_t i = 0; i < doc_sequence.kv().pinned().num_slots(); ++i) {
    doc_entries.slots.push_back(doc_sequence.kv().pinned().slot(i));
    doc_entries.positions.push_back(doc_sequence.kv().pinned().position(i));
    doc_entries.infos.push_back(doc_sequence.kv().pinned().info(i));
  }
  absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> frozen =
      memory::FrozenKv::CopyOf(cpu->kv_pool(), doc_entries, static_cast<int64_t>(doc.size()));
  ASSERT_OK(frozen.status());
  model::PlainSequence sequence(*cpu);
  std::vector<int64_t> prefix_positions(prefix.size());
  std::iota(prefix_positions.begin(), prefix_positions.end(), 0);
  sequence.Forward(prefix, prefix_positions, model::LogitsMode::kLast);

  // Attach at offset 9 (positions 9..21), then the query at 22..27 and two decode steps.
  sequence.kv().Attach(*frozen, "doc");
  ASSERT_EQ(sequence.next_position(), 22);
  HostKvSegment shared = doc_kv[0];
  shared.shared = true;
  shared.rope_offset = 9;
  shared.positions.clear();
  shared.visible_from.clear();
  shared.visible_until.clear();
  session.push_back(shared);
  int32_t next = 22;
  for (size_t chunk : {query.size(), size_t{1}, size_t{1}}) {
    const std::vector<int32_t> tokens = chunk == query.size() ? query : RandomTokens(1, vocab, rng);
    const std::vector<int32_t> positions = Iota(next, chunk);
    const std::vector<int64_t> positions64(positions.begin(), positions.end());
    const std::vector<float> got = Step(**gpu, *pool, slots, session, tokens, positions);
    const std::vector<float> want = sequence.Forward(tokens, positions64, model::LogitsMode::kAll);
    CompareLogits(got, want, vocab, "shared document, rows at " + std::to_string(next));
    next += static_cast<int32_t>(chunk);
  }
}

// A pooled entry (the `pool` policy's mean of four entries, PooledMean on the GPU) and then
// decode steps that see it: against the CPU engine's pinned entry made by its page storage's
// MeanOfSlots.
TEST(CudaTransformerPooled, PooledEntryMatchesCpu) {
  current_model = "llama-gqa-bf16";
  const auto dir = ModelsDir() / current_model;
  absl::StatusOr<std::unique_ptr<CudaTransformer>> gpu = CudaTransformer::Load(dir);
  ASSERT_OK(gpu.status());
  const std::unique_ptr<model::Engine> cpu = model::LoadCpu(dir, 2, 4);
  const int64_t vocab = cpu->config().vocab_size;
  absl::StatusOr<KvPagePool> pool = KvPagePool::Allocate((*gpu)->PageLayoutFor(4), 64);
  ASSERT_OK(pool.status());
  Slots slots(4, 64, 21);
  std::mt19937 rng(22);
  const std::vector<int32_t> prompt = RandomTokens(12, vocab, rng);
  std::vector<HostKvSegment> session(1);
  Step(**gpu, *pool, slots, session, prompt, Iota(0, prompt.size()));
  model::PlainSequence sequence(*cpu);
  std::vector<int64_t> prompt_positions(prompt.size());
  std::iota(prompt_positions.begin(), prompt_positions.end(), 0);
  sequence.Forward(prompt, prompt_positions, model::LogitsMode::kLast);

  // Entry 12 := mean of entries 2..5, at position 5, visible to all later queries.
  const int64_t sources[] = {2, 3, 4, 5};
  std::vector<memory::SlotRef> cpu_sources;
  for (int64_t e : sources)
    cpu_sources.push_back(sequence.kv().pinned().slot(static_cast<int32_t>(e)));
  absl::StatusOr<memory::SlotRef> pooled = sequence.kv().Append(
      memory::SessionKv::Segment::kPinned, 5, {}, {.kind = memory::EntryKind::kPooled},
      /*any_position=*/true);
  ASSERT_OK(pooled.status());
  cpu->kv_pool().storage().MeanOfSlots(cpu_sources, *pooled);
  std::vector<int32_t> offsets = {0, 4}, src_pages, src_slots;
  for (int64_t e : sources) {
    src_pages.push_back(session[0].page_ids[e / 4]);
    src_slots.push_back(static_cast<int32_t>(e % 4));
  }
  const auto [dst_page, dst_slot] = slots.Append(session[0], 5);
  DeviceBuffer d_off = testing::Upload(offsets), d_sp = testing::Upload(src_pages),
               d_ss = testing::Upload(src_slots),
               d_dp = testing::Upload(std::vector<int32_t>{dst_page}),
               d_ds = testing::Upload(std::vector<int32_t>{dst_slot});
  ASSERT_OK(PooledMean(d_off.as<int32_t>(), d_sp.as<int32_t>(), d_ss.as<int32_t>(),
                       d_dp.as<int32_t>(), d_ds.as<int32_t>(), 1, pool->data(), pool->layout(),
                       nullptr));
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  for (int32_t t = 12; t < 17; ++t) {
    const std::vector<int32_t> tokens = RandomTokens(1, vocab, rng), positions = {t};
    const int64_t positions64[] = {t};
    const std::vector<float> got = Step(**gpu, *pool, slots, session, tokens, positions);
    const std::vector<float> want = sequence.Forward(tokens, positions64, model::LogitsMode::kAll);
    CompareLogits(got, want, vocab, "after a pooled entry, position " + std::to_string(t));
  }
}

}  // namespace
}  // namespace gistmem::cuda
