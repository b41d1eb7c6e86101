// The CPU transformer on the fixture checkpoints, through the engine interface
// (model/engine.h) and its paged KV: prefill, chunked prefill and decode agree; ForwardBatch
// is bit-for-bit what each sequence gives alone (continuous batching relies on it); entries
// whose visibility has ended are really not attended (their rows no longer matter); invalid
// input is rejected without touching the KV; Mistral's sliding window hides tokens that are
// far enough back. And on tiny random checkpoints written here (every bias and tie variant), a
// plain double-precision forward written out in the test agrees with the implementation.
#include "model/backend/cpu/cpu_transformer.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "memory/session_kv.h"
#include "model/engine.h"
#include "model/weights.h"
#include "tests/unit/plain_sequence.h"

namespace gistmem::model {
namespace {

using memory::EntryVisibility;
using ::testing::HasSubstr;

const std::filesystem::path kModels =
    std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/models";

// Pages of 4 entries: every sequence here spans several pages, so page boundaries are crossed.
constexpr int32_t kBlockSize = 4;

std::vector<int64_t> Iota(int64_t begin, size_t count) {
  std::vector<int64_t> positions(count);
  std::iota(positions.begin(), positions.end(), begin);
  return positions;
}

std::vector<int32_t> RandomTokens(int64_t vocab, size_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> dist(0, static_cast<int32_t>(vocab - 1));
  std::vector<int32_t> tokens(count);
  for (int32_t& t : tokens)
    t = dist(rng);
  return tokens;
}

// Largest |got - want| in a row over the row's largest |want|, worst row.
double MaxRowRelativeDiff(const std::vector<float>& got, const std::vector<float>& want,
                          int64_t vocab) {
  EXPECT_EQ(got.size(), want.size());
  double worst = 0;
  for (size_t row = 0; (row + 1) * vocab <= std::min(got.size(), want.size()); ++row) {
    double diff = 0, scale = 0;
    for (int64_t v = 0; v < vocab; ++v) {
      const size_t i = row * vocab + v;
      diff = std::max(diff, std::fabs(double(got[i]) - want[i]));
      scale = std::max(scale, std::fabs(double(want[i])));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

double MaxAbsDiff(const float* a, const float* b, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; ++i)
    worst = std::max(worst, std::fabs(double(a[i]) - b[i]));
  return worst;
}

// Number of elements whose bits differ (so -0 vs 0 or NaN payloads would count too).
size_t BitMismatches(const float* a, const float* b, size_t n) {
  size_t count = 0;
  for (size_t i = 0; i < n; ++i)
    count += std::bit_cast<uint32_t>(a[i]) != std::bit_cast<uint32_t>(b[i]);
  return count;
}

void ExpectBitIdentical(const std::vector<float>& got, const std::vector<float>& want,
                        const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  const size_t mismatches = BitMismatches(got.data(), want.data(), got.size());
  EXPECT_EQ(mismatches, 0u) << what << ": " << mismatches << " of " << got.size()
                            << " values differ, max |difference| "
                            << MaxAbsDiff(got.data(), want.data(), got.size());
}

// What a sequence's KV holds: positions, where the stream goes on, and every row.
struct KvSnapshot {
  std::vector<int64_t> positions;
  int64_t next_position = 0;
  std::vector<std::vector<float>> keys{}, values{};  // [layer][entry * kv_dim + i]
};

KvSnapshot Snapshot(const PlainSequence& sequence, int64_t num_layers) {
  KvSnapshot s{.positions = sequence.positions(), .next_position = sequence.next_position()};
  for (int32_t l = 0; l < num_layers; ++l) {
    s.keys.push_back(sequence.keys(l));
    s.values.push_back(sequence.values(l));
  }
  return s;
}

void ExpectKvBitIdentical(const KvSnapshot& got, const KvSnapshot& want, const std::string& what) {
  ASSERT_EQ(got.positions, want.positions) << what;
  EXPECT_EQ(got.next_position, want.next_position) << what;
  ASSERT_EQ(got.keys.size(), want.keys.size()) << what;
  for (size_t l = 0; l < want.keys.size(); ++l) {
    ASSERT_EQ(got.keys[l].size(), want.keys[l].size()) << what;
    const size_t n = want.keys[l].size();
    EXPECT_EQ(BitMismatches(got.keys[l].data(), want.keys[l].data(), n), 0u)
        << what << ": keys of layer " << l << ", max |difference| "
        << MaxAbsDiff(got.keys[l].data(), want.keys[l].data(), n);
    EXPECT_EQ(BitMismatches(got.values[l].data(), want.values[l].data(), n), 0u)
        << what << ": values of layer " << l << ", max |difference| "
        << MaxAbsDiff(got.values[l].data(), want.values[l].data(), n);
  }
}

// Visibility for `count` rows: for good, except rows in `ending` (visible up to raw clock
// `until`, so a query with a later clock no longer sees them).
std::vector<EntryVisibility> VisibilityEnding(size_t count, const std::vector<int64_t>& ending,
                                              int64_t until) {
  std::vector<EntryVisibility> visibility(count);
  for (int64_t row : ending)
    visibility[row] = EntryVisibility{.from_clock = 0, .until_clock = until};
  return visibility;
}

// The slots of entries `entries` of a plain sequence.
std::vector<memory::SlotRef> SlotsOf(PlainSequence& sequence, const std::vector<int64_t>& entries) {
  std::vector<memory::SlotRef> slots;
  for (int64_t e : entries)
    slots.push_back(sequence.kv().pinned().slot(static_cast<int32_t>(e)));
  return slots;
}

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

class CpuTransformerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = LoadCpu(kModels / GetParam(), 2, kBlockSize);
    vocab_ = model_->config().vocab_size;
    layers_ = model_->config().num_layers;
  }

  // Runs `tokens` at consecutive positions after the sequence's end (0 for an empty one).
  std::vector<float> Run(std::span<const int32_t> tokens, PlainSequence& sequence,
                         LogitsMode mode) {
    return sequence.Forward(tokens, Iota(sequence.next_position(), tokens.size()), mode);
  }

  std::unique_ptr<Engine> model_;
  int64_t vocab_ = 0;
  int64_t layers_ = 0;
};

TEST_P(CpuTransformerTest, PrefillChunkedPrefillAndDecodeAgree) {
  const std::vector<int32_t> tokens = RandomTokens(vocab_, 27, 1);
  PlainSequence full_kv(*model_);
  const std::vector<float> full = Run(tokens, full_kv, LogitsMode::kAll);
  ASSERT_EQ(full.size(), tokens.size() * vocab_);
  EXPECT_EQ(full_kv.positions(), Iota(0, tokens.size()));

  // Uneven chunks, including a single token in the middle.
  PlainSequence chunk_kv(*model_);
  std::vector<float> chunked;
  size_t done = 0;
  for (size_t size : {5, 1, 9, 12}) {
    const std::vector<float> part =
        Run(std::span(tokens).subspan(done, size), chunk_kv, LogitsMode::kAll);
    ASSERT_EQ(part.size(), size * vocab_);
    chunked.insert(chunked.end(), part.begin(), part.end());
    done += size;
  }
  ASSERT_EQ(done, tokens.size());
  EXPECT_EQ(chunk_kv.positions(), full_kv.positions());

  PlainSequence decode_kv(*model_);
  std::vector<float> decoded;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::vector<float> row =
        Run(std::span(tokens).subspan(i, 1), decode_kv, LogitsMode::kLast);
    ASSERT_EQ(row.size(), size_t(vocab_));
    decoded.insert(decoded.end(), row.begin(), row.end());
  }
  EXPECT_EQ(decode_kv.positions(), full_kv.positions());

  const double chunk_error = MaxRowRelativeDiff(chunked, full, vocab_);
  const double decode_error = MaxRowRelativeDiff(decoded, full, vocab_);
  std::printf("%s: chunked vs full %.3g, decode vs full %.3g (row-relative)\n", GetParam().c_str(),
              chunk_error, decode_error);
  EXPECT_LE(chunk_error, 1e-5);
  EXPECT_LE(decode_error, 1e-5);

  // kLast is the last row of kAll.
  PlainSequence last_kv(*model_);
  const std::vector<float> last = Run(tokens, last_kv, LogitsMode::kLast);
  const std::vector<float> full_last(full.end() - vocab_, full.end());
  EXPECT_LE(MaxRowRelativeDiff(last, full_last, vocab_), 1e-5);

  // The logits really depend on the input (a guard against comparing constants).
  const std::vector<float> first_row(full.begin(), full.begin() + vocab_);
  EXPECT_GT(MaxRowRelativeDiff(first_row, full_last, vocab_), 1e-3);
}

TEST_P(CpuTransformerTest, CachesOfPrefillAndDecodeAgree) {
  const std::vector<int32_t> tokens = RandomTokens(vocab_, 15, 2);
  PlainSequence full_kv(*model_), decode_kv(*model_);
  Run(tokens, full_kv, LogitsMode::kLast);
  for (size_t i = 0; i < tokens.size(); ++i)
    Run(std::span(tokens).subspan(i, 1), decode_kv, LogitsMode::kLast);
  const size_t n = tokens.size() * model_->config().kv_dim();
  for (int32_t l = 0; l < layers_; ++l) {
    const std::vector<float> full_keys = full_kv.keys(l), decode_keys = decode_kv.keys(l);
    const std::vector<float> full_values = full_kv.values(l), decode_values = decode_kv.values(l);
    ASSERT_EQ(full_keys.size(), n);
    ASSERT_EQ(decode_keys.size(), n);
    double scale = 0;
    for (size_t i = 0; i < n; ++i)
      scale = std::max(scale, std::fabs(double(full_keys[i])));
    EXPECT_LE(MaxAbsDiff(decode_keys.data(), full_keys.data(), n), 1e-5 * scale) << l;
    EXPECT_LE(MaxAbsDiff(decode_values.data(), full_values.data(), n), 1e-5 * scale) << l;
  }
}

// Three sequences in different states: one continuing with a multi-token chunk, one fresh
// prefill, one in the middle of decoding (one token).
struct BatchScenario {
  std::vector<int32_t> history_a, chunk_a;  // a: 9 tokens in the KV, then 6 more (kAll)
  std::vector<int32_t> chunk_b;             // b: 11 tokens from empty (kLast)
  std::vector<int32_t> history_c, chunk_c;  // c: prefill 13 + 3 decoded, then 1 token (kLast)
};

BatchScenario MakeScenario(int64_t vocab) {
  BatchScenario s;
  s.history_a = RandomTokens(vocab, 9, 10);
  s.chunk_a = RandomTokens(vocab, 6, 11);
  s.chunk_b = RandomTokens(vocab, 11, 12);
  s.history_c = RandomTokens(vocab, 16, 13);
  s.chunk_c = RandomTokens(vocab, 1, 14);
  return s;
}

// Brings fresh sequences a and c to the scenario's starting state (b starts empty).
void PrepareSequences(const BatchScenario& s, PlainSequence& a, PlainSequence& c) {
  a.Forward(s.history_a, Iota(0, s.history_a.size()), LogitsMode::kLast);
  c.Forward(std::span(s.history_c).first(13), Iota(0, 13), LogitsMode::kLast);
  for (int64_t i = 13; i < 16; ++i)
    c.Forward(std::span(s.history_c).subspan(i, 1), Iota(i, 1), LogitsMode::kLast);
}

TEST_P(CpuTransformerTest, ForwardBatchIsBitIdenticalToEachSequenceAlone) {
  const BatchScenario s = MakeScenario(vocab_);
  const std::vector<int64_t> pos_a = Iota(9, 6), pos_b = Iota(0, 11), pos_c = Iota(16, 1);

  PlainSequence alone_a(*model_), alone_b(*model_), alone_c(*model_);
  PrepareSequences(s, alone_a, alone_c);
  const std::vector<float> want_a = alone_a.Forward(s.chunk_a, pos_a, LogitsMode::kAll);
  const std::vector<float> want_b = alone_b.Forward(s.chunk_b, pos_b, LogitsMode::kLast);
  const std::vector<float> want_c = alone_c.Forward(s.chunk_c, pos_c, LogitsMode::kLast);
  ASSERT_EQ(want_a.size(), 6 * size_t(vocab_));
  ASSERT_EQ(want_b.size(), size_t(vocab_));
  ASSERT_EQ(want_c.size(), size_t(vocab_));

  // Both orders of the same batch.
  for (const bool reversed : {false, true}) {
    PlainSequence a(*model_), b(*model_), c(*model_);
    PrepareSequences(s, a, c);
    std::vector<SequenceStep> steps = {a.Reserve(s.chunk_a, pos_a, LogitsMode::kAll),
                                       b.Reserve(s.chunk_b, pos_b, LogitsMode::kLast),
                                       c.Reserve(s.chunk_c, pos_c, LogitsMode::kLast)};
    if (reversed) std::reverse(steps.begin(), steps.end());
    absl::StatusOr<std::vector<std::vector<float>>> batch = model_->ForwardBatch(steps);
    ASSERT_TRUE(batch.ok()) << batch.status();
    std::vector<std::vector<float>> got = *std::move(batch);
    ASSERT_EQ(got.size(), 3u);
    if (reversed) std::reverse(got.begin(), got.end());
    const std::string order = reversed ? " (order c, b, a)" : " (order a, b, c)";
    ExpectBitIdentical(got[0], want_a, "sequence a, 6-token chunk after 9" + order);
    ExpectBitIdentical(got[1], want_b, "sequence b, 11-token prefill" + order);
    ExpectBitIdentical(got[2], want_c, "sequence c, decode step at 16" + order);
    ExpectKvBitIdentical(Snapshot(a, layers_), Snapshot(alone_a, layers_), "KV a" + order);
    ExpectKvBitIdentical(Snapshot(b, layers_), Snapshot(alone_b, layers_), "KV b" + order);
    ExpectKvBitIdentical(Snapshot(c, layers_), Snapshot(alone_c, layers_), "KV c" + order);
  }
}

TEST_P(CpuTransformerTest, ForwardBatchOfDecodeStepsIsBitIdenticalToEachAlone) {
  // The steady state of continuous batching: every sequence decodes one token per step.
  const std::vector<size_t> prompt_lengths = {3, 8, 5, 1};
  std::vector<std::vector<int32_t>> prompts, next;
  for (size_t i = 0; i < prompt_lengths.size(); ++i) {
    prompts.push_back(RandomTokens(vocab_, prompt_lengths[i], 20 + i));
    next.push_back(RandomTokens(vocab_, 4, 30 + i));  // four decode steps each
  }
  std::vector<PlainSequence> alone, batched;
  alone.reserve(prompts.size());
  batched.reserve(prompts.size());
  for (size_t i = 0; i < prompts.size(); ++i) {
    alone.emplace_back(*model_);
    batched.emplace_back(*model_);
    Run(prompts[i], alone[i], LogitsMode::kLast);
    Run(prompts[i], batched[i], LogitsMode::kLast);
  }
  for (size_t step = 0; step < 4; ++step) {
    std::vector<std::vector<int64_t>> positions;
    for (size_t i = 0; i < prompts.size(); ++i)
      positions.push_back(Iota(prompt_lengths[i] + step, 1));
    std::vector<SequenceStep> steps;
    for (size_t i = 0; i < prompts.size(); ++i) {
      steps.push_back(
          batched[i].Reserve(std::span(next[i]).subspan(step, 1), positions[i], LogitsMode::kLast));
    }
    const absl::StatusOr<std::vector<std::vector<float>>> got = model_->ForwardBatch(steps);
    ASSERT_TRUE(got.ok()) << got.status();
    ASSERT_EQ(got->size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::vector<float> want =
          alone[i].Forward(std::span(next[i]).subspan(step, 1), positions[i], LogitsMode::kLast);
      ExpectBitIdentical((*got)[i], want,
                         "step " + std::to_string(step) + ", sequence " + std::to_string(i));
    }
  }
}

// Entries leave a paged KV by visibility rather than by being removed from it: an
// entry whose visible_until clock has passed is not attended, and what its rows hold no longer
// matters.
TEST_P(CpuTransformerTest, EntriesWhoseVisibilityEndedAreReallyGone) {
  const std::vector<int32_t> prompt = RandomTokens(vocab_, 12, 40);
  const std::vector<int32_t> next = {static_cast<int32_t>(vocab_ - 1)};
  const std::vector<int64_t> next_position = {12};
  // The prompt is read at raw clock 0 (every row sees every earlier entry); the next token
  // queries at clock `clock`. The KV is left as it was.
  auto decode_with = [&](PlainSequence& sequence, int64_t clock = 1) {
    const std::vector<int64_t> clocks = {clock};
    std::vector<float> logits = sequence.Forward(next, next_position, LogitsMode::kLast, clocks);
    sequence.Undo();
    return logits;
  };
  auto read = [&](const std::vector<EntryVisibility>& visibility) {
    auto sequence = std::make_unique<PlainSequence>(*model_);
    sequence->Forward(prompt, Iota(0, 12), LogitsMode::kLast, {}, visibility);
    return sequence;
  };
  const auto full = read({});
  const std::vector<float> with_all = decode_with(*full);
  EXPECT_EQ(full->positions(), Iota(0, 12));

  // Entries still visible at the query's clock change nothing.
  const auto kept_all = read(VisibilityEnding(12, Iota(0, 12), 1));
  ExpectBitIdentical(decode_with(*kept_all), with_all, "every entry still visible");

  // Entries 4..7 ending before the query's clock change the next logits ...
  const std::vector<int64_t> kept = {0, 1, 2, 3, 8, 9, 10, 11};
  const auto dropped = read(VisibilityEnding(12, {4, 5, 6, 7}, 0));
  std::vector<int64_t> visible;
  for (int32_t i = 0; i < dropped->kv().pinned().num_slots(); ++i) {
    if (dropped->kv().pinned().visibility(i).VisibleAt(1)) {
      visible.push_back(dropped->kv().pinned().position(i));
    }
  }
  EXPECT_EQ(visible, kept);  // the entries a later query sees, at their own positions
  // (the prompt's own rows saw every entry: its keys are those of the full read)
  ExpectKvBitIdentical(Snapshot(*dropped, layers_), Snapshot(*full, layers_),
                       "rows of a read whose entries end later");
  const std::vector<float> without = decode_with(*dropped);
  EXPECT_GT(MaxRowRelativeDiff(without, with_all, vocab_), 1e-4);

  // ... and what the invisible rows hold no longer matters: garbage written into them gives
  // the very same logits.
  const memory::PageLayout& layout = model_->kv_pool().layout();
  const std::vector<memory::SlotRef> poison_slots = SlotsOf(*dropped, {4, 5, 6, 7});
  std::vector<float> poison(2 * poison_slots.size() * layout.num_layers * layout.kv_dim);
  for (size_t i = 0; i < poison.size(); ++i)
    poison[i] = (i / (poison_slots.size() * layout.kv_dim)) % 2 == 0 ? 1e3f : -1e3f;
  model_->kv_pool().storage().ImportRows(poison_slots, poison.data());
  // (The poison does reach the output while the rows are still visible: at clock 0.)
  EXPECT_GT(MaxRowRelativeDiff(decode_with(*dropped, 0), with_all, vocab_), 1e-3);
  ExpectBitIdentical(decode_with(*dropped), without, "poisoned rows no longer visible");

  // Hiding a suffix is truncating it (TruncateTo a mark taken after 7 entries of the same
  // 12-row read).
  const auto prefix = read(VisibilityEnding(12, Iota(7, 5), 0));
  PlainSequence truncated(*model_);
  memory::SessionKv& kv = truncated.kv();
  std::vector<memory::SlotRef> slots;
  memory::SessionKv::Mark after_seven;
  const std::vector<int64_t> positions = Iota(0, 12);
  for (int64_t position : positions) {
    if (position == 7) after_seven = kv.mark();
    absl::StatusOr<memory::SlotRef> slot =
        kv.Append(memory::SessionKv::Segment::kPinned, position, {}, {});
    ASSERT_TRUE(slot.ok()) << slot.status();
    slots.push_back(*slot);
  }
  const SequenceStep step{
      .tokens = prompt, .positions = positions, .clocks = {}, .slots = slots, .kv = &kv};
  ASSERT_TRUE(model_->ForwardBatch(std::span(&step, 1)).ok());
  const int64_t pages_before = model_->kv_pool().pages_in_use();
  kv.TruncateTo(after_seven);
  EXPECT_EQ(truncated.positions(), Iota(0, 7));
  EXPECT_EQ(truncated.next_position(), 7);
  EXPECT_EQ(model_->kv_pool().pages_in_use(), pages_before - 1);  // entries 8..11's page
  ExpectBitIdentical(decode_with(*prefix), decode_with(truncated), "hidden suffix vs TruncateTo");
}

TEST_P(CpuTransformerTest, RejectsInvalidInputAndLeavesTheCacheAlone) {
  PlainSequence sequence(*model_);
  Run(RandomTokens(vocab_, 5, 50), sequence, LogitsMode::kLast);  // positions 0..4
  const KvSnapshot before = Snapshot(sequence, layers_);
  const int64_t pages_before = model_->kv_pool().pages_in_use();
  const int32_t last_token = static_cast<int32_t>(vocab_ - 1);

  // Each fragment must appear in the message.
  auto expect_rejected = [&](std::vector<int32_t> tokens, std::vector<int64_t> positions,
                             const std::vector<std::string>& fragments) {
    const std::string what = ::testing::PrintToString(fragments);
    try {
      sequence.Forward(tokens, positions, LogitsMode::kLast);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const std::invalid_argument& e) {
      for (const std::string& fragment : fragments)
        EXPECT_THAT(e.what(), HasSubstr(fragment));
    }
    ExpectKvBitIdentical(Snapshot(sequence, layers_), before, "after a rejected forward: " + what);
    EXPECT_EQ(model_->kv_pool().pages_in_use(), pages_before) << what;
  };
  const std::string vocab = std::to_string(vocab_);
  expect_rejected({static_cast<int32_t>(vocab_)}, {5},
                  {"token id " + vocab + " ", "outside the vocabulary", vocab});
  expect_rejected({3, -1}, {5, 6}, {"token id -1 ", "outside the vocabulary"});
  // A bad token id in a chunk that needed a new page: the page goes back.
  expect_rejected({3, 3, 3, static_cast<int32_t>(vocab_ + 1)}, {5, 6, 7, 8},
                  {"token id " + std::to_string(vocab_ + 1) + " ", "outside the vocabulary"});
  expect_rejected({3}, {4}, {"position 4 ", "does not follow position 4"});
  expect_rejected({3}, {2}, {"position 2 ", "does not follow position 4"});
  expect_rejected({3, 4, 5}, {5, 7, 7}, {"position 7 ", "does not follow position 7"});
  expect_rejected({3, 4, 5}, {5, 8, 6}, {"position 6 ", "does not follow position 8"});
  expect_rejected({3, 4}, {5}, {"2 tokens but 1 positions"});
  expect_rejected({3}, {5, 6}, {"1 tokens but 2 positions"});
  expect_rejected({}, {}, {"no tokens"});

  // The last valid id is fine, as is a gap in positions.
  EXPECT_EQ(sequence.Forward(std::vector<int32_t>{last_token}, std::vector<int64_t>{9}).size(),
            size_t(vocab_));
  EXPECT_EQ(sequence.positions(), (std::vector<int64_t>{0, 1, 2, 3, 4, 9}));
}

TEST_P(CpuTransformerTest, ARejectedBatchChangesNoCache) {
  PlainSequence good(*model_), bad(*model_);
  const std::vector<int32_t> tokens = RandomTokens(vocab_, 4, 60);
  const std::vector<int32_t> bad_tokens = {1, static_cast<int32_t>(vocab_ + 7)};
  const std::vector<int64_t> positions = Iota(0, 4), bad_positions = Iota(0, 2);
  const std::vector<SequenceStep> steps = {
      good.Reserve(tokens, positions, LogitsMode::kLast),
      bad.Reserve(bad_tokens, bad_positions, LogitsMode::kLast)};
  const absl::StatusOr<std::vector<std::vector<float>>> rejected = model_->ForwardBatch(steps);
  EXPECT_EQ(rejected.status().code(), absl::StatusCode::kInvalidArgument);
  good.Undo();
  bad.Undo();
  EXPECT_EQ(good.size(), 0);
  EXPECT_EQ(bad.size(), 0);
  EXPECT_EQ(good.next_position(), 0);
  EXPECT_EQ(model_->kv_pool().pages_in_use(), 0);

  std::vector<SequenceStep> no_kv = {good.Reserve(tokens, positions, LogitsMode::kLast)};
  no_kv[0].kv = nullptr;
  const absl::StatusOr<std::vector<std::vector<float>>> without = model_->ForwardBatch(no_kv);
  EXPECT_EQ(without.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(without.status().message(), HasSubstr("without a KV"));
  good.Undo();
  EXPECT_EQ(good.size(), 0);
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, CpuTransformerTest,
                         ::testing::Values("llama-gqa-bf16", "qwen2-tied-f32",
                                           "mistral-window-f16"),
                         TestName);

// ---- Mistral's sliding window (8 on the fixture: a query sees keys with q - k < 8). ----

// Logits at the last of 24 positions, by prefill and by token-by-token decode, both.
std::vector<std::vector<float>> LastLogits(Engine& model, const std::vector<int32_t>& tokens) {
  PlainSequence prefill_kv(model), decode_kv(model);
  std::vector<float> prefill =
      prefill_kv.Forward(tokens, Iota(0, tokens.size()), LogitsMode::kLast);
  std::vector<float> decode;
  for (size_t i = 0; i < tokens.size(); ++i) {
    decode =
        decode_kv.Forward(std::span(tokens).subspan(i, 1), Iota(int64_t(i), 1), LogitsMode::kLast);
  }
  return {prefill, decode};
}

// Changes the token at `position` and reports whether the last logits moved (per path).
void ExpectDependence(Engine& model, const std::vector<int32_t>& tokens, size_t position,
                      bool should_depend) {
  const int64_t vocab = model.config().vocab_size;
  std::vector<int32_t> changed = tokens;
  changed[position] = static_cast<int32_t>((tokens[position] + vocab / 2) % vocab);
  const auto base = LastLogits(model, tokens);
  const auto moved = LastLogits(model, changed);
  const size_t last = tokens.size() - 1;
  for (int path = 0; path < 2; ++path) {
    const char* name = path == 0 ? "prefill" : "decode";
    if (should_depend) {
      EXPECT_GT(MaxRowRelativeDiff(moved[path], base[path], vocab), 1e-6)
          << name << ": the token " << last - position << " back should matter";
    } else {
      ExpectBitIdentical(moved[path], base[path],
                         std::string(name) + ": token " + std::to_string(last - position) +
                             " back must not matter");
    }
  }
}

TEST(MistralSlidingWindowTest, TwoLayersReachBackTwiceTheWindow) {
  // Each layer reaches 7 positions back, so after two layers position 23 depends on 9..23
  // and on nothing before.
  const auto model = LoadCpu(kModels / "mistral-window-f16", 2, kBlockSize);
  ASSERT_EQ(model->config().sliding_window, 8);
  ASSERT_EQ(model->config().num_layers, 2);
  const std::vector<int32_t> tokens = RandomTokens(model->config().vocab_size, 24, 70);
  for (size_t position : {0, 3, 8})
    ExpectDependence(*model, tokens, position, false);
  for (size_t position : {9, 12, 16, 20, 23})
    ExpectDependence(*model, tokens, position, true);
}

class OneLayerMistral : public ::testing::Test {
 protected:
  // The fixture with num_hidden_layers 1 (the extra layer's tensors go unused): the window
  // is then the whole receptive field.
  void SetUp() override {
    std::string dir = (std::filesystem::temp_directory_path() / "gistmem_mistral_XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir.data()), nullptr);
    dir_ = dir;
    const auto source = kModels / "mistral-window-f16";
    std::ifstream in(source / "config.json");
    nlohmann::json config = nlohmann::json::parse(in);
    config["num_hidden_layers"] = 1;
    std::ofstream(dir_ / "config.json") << config.dump(2);
    std::filesystem::create_symlink(std::filesystem::absolute(source / "model.safetensors"),
                                    dir_ / "model.safetensors");
  }
  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }
  std::filesystem::path dir_;
};

TEST_F(OneLayerMistral, TokensEightOrMoreBackDoNotMatter) {
  const auto model = LoadCpu(dir_, 2, kBlockSize);
  ASSERT_EQ(model->config().num_layers, 1);
  const std::vector<int32_t> tokens = RandomTokens(model->config().vocab_size, 24, 71);
  // Position 23 sees 16..23 (23 - k < 8).
  for (size_t position : {0, 7, 14, 15})
    ExpectDependence(*model, tokens, position, false);
  for (size_t position : {16, 19, 23})
    ExpectDependence(*model, tokens, position, true);
}

// ---- A tiny random checkpoint written by the test, against a plain reference forward. ----

// The whole model: options, then every tensor it could need (drawn in one fixed order from
// the seed, so two options sets with one seed share all their common weights).
struct TinyModel {
  static constexpr int64_t kVocab = 96, kHidden = 32, kInter = 40, kLayers = 2;
  static constexpr int64_t kHeads = 4, kKvHeads = 2, kHeadDim = 8;  // GQA: 2 heads per kv head
  static constexpr double kTheta = 10000.0, kEps = 1e-5;

  std::string model_type = "llama";
  bool tie = false;
  bool lm_head_in_file = true;            // also written when tied: the tie must win
  bool attention_bias = false;            // llama: q, k, v and o biases
  bool mlp_bias = false;                  // llama only
  std::optional<int64_t> sliding_window;  // mistral only
  uint64_t seed = 1;
  std::map<std::string, std::vector<float>> tensors;
  std::map<std::string, std::vector<int64_t>> shapes;

  bool qkv_bias() const { return attention_bias || model_type == "qwen2"; }
  const std::vector<float>& at(const std::string& name) const { return tensors.at(name); }
};

TinyModel MakeTiny(TinyModel m) {
  std::mt19937_64 rng(m.seed);
  std::normal_distribution<float> normal(0.f, 1.f);
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float mean, float scale,
                 bool wanted) {
    int64_t count = 1;
    for (int64_t d : shape)
      count *= d;
    std::vector<float> values(count);
    for (float& v : values)
      v = mean + scale * normal(rng);
    if (!wanted) return;
    m.tensors[name] = std::move(values);
    m.shapes[name] = std::move(shape);
  };
  const int64_t H = TinyModel::kHidden, I = TinyModel::kInter;
  const int64_t q_dim = TinyModel::kHeads * TinyModel::kHeadDim;
  const int64_t kv_dim = TinyModel::kKvHeads * TinyModel::kHeadDim;
  const float w = 1.f / std::sqrt(float(H));
  add("model.embed_tokens.weight", {TinyModel::kVocab, H}, 0.f, 1.f, true);
  add("lm_head.weight", {TinyModel::kVocab, H}, 0.f, 1.f, !m.tie || m.lm_head_in_file);
  add("model.norm.weight", {H}, 1.f, 0.1f, true);
  for (int64_t l = 0; l < TinyModel::kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {H}, 1.f, 0.1f, true);
    add(p + "post_attention_layernorm.weight", {H}, 1.f, 0.1f, true);
    // Large q and k weights give peaked, position-sensitive attention.
    add(p + "self_attn.q_proj.weight", {q_dim, H}, 0.f, 3 * w, true);
    add(p + "self_attn.k_proj.weight", {kv_dim, H}, 0.f, 3 * w, true);
    add(p + "self_attn.v_proj.weight", {kv_dim, H}, 0.f, w, true);
    add(p + "self_attn.o_proj.weight", {H, q_dim}, 0.f, w, true);
    add(p + "self_attn.q_proj.bias", {q_dim}, 0.f, 0.5f, m.qkv_bias());
    add(p + "self_attn.k_proj.bias", {kv_dim}, 0.f, 0.5f, m.qkv_bias());
    add(p + "self_attn.v_proj.bias", {kv_dim}, 0.f, 0.5f, m.qkv_bias());
    add(p + "self_attn.o_proj.bias", {H}, 0.f, 0.5f, m.attention_bias);
    add(p + "mlp.gate_proj.weight", {I, H}, 0.f, w, true);
    add(p + "mlp.up_proj.weight", {I, H}, 0.f, w, true);
    add(p + "mlp.down_proj.weight", {H, I}, 0.f, 1.f / std::sqrt(float(I)), true);
    add(p + "mlp.gate_proj.bias", {I}, 0.f, 0.5f, m.mlp_bias);
    add(p + "mlp.up_proj.bias", {I}, 0.f, 0.5f, m.mlp_bias);
    add(p + "mlp.down_proj.bias", {H}, 0.f, 0.5f, m.mlp_bias);
  }
  return m;
}

nlohmann::json TinyConfig(const TinyModel& m) {
  static const std::map<std::string, std::string> kClass = {{"llama", "LlamaForCausalLM"},
                                                            {"qwen2", "Qwen2ForCausalLM"},
                                                            {"mistral", "MistralForCausalLM"}};
  nlohmann::json c = {{"model_type", m.model_type},
                      {"architectures", nlohmann::json::array({kClass.at(m.model_type)})},
                      {"vocab_size", TinyModel::kVocab},
                      {"hidden_size", TinyModel::kHidden},
                      {"intermediate_size", TinyModel::kInter},
                      {"num_hidden_layers", TinyModel::kLayers},
                      {"num_attention_heads", TinyModel::kHeads},
                      {"num_key_value_heads", TinyModel::kKvHeads},
                      {"head_dim", TinyModel::kHeadDim},
                      {"rms_norm_eps", TinyModel::kEps},
                      {"rope_theta", TinyModel::kTheta},
                      {"hidden_act", "silu"},
                      {"tie_word_embeddings", m.tie}};
  if (m.model_type == "llama") {
    c["attention_bias"] = m.attention_bias;
    c["mlp_bias"] = m.mlp_bias;
  }
  if (m.model_type == "mistral") {
    c["sliding_window"] = m.sliding_window ? nlohmann::json(*m.sliding_window) : nullptr;
  }
  return c;
}

// model.safetensors: u64 little-endian header length, JSON header, F32 data.
void WriteSafetensors(const TinyModel& m, const std::filesystem::path& path) {
  nlohmann::json header = nlohmann::json::object();
  std::string data;
  for (const auto& [name, values] : m.tensors) {
    const size_t begin = data.size();
    data.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
    header[name] = {
        {"dtype", "F32"}, {"shape", m.shapes.at(name)}, {"data_offsets", {begin, data.size()}}};
  }
  const std::string text = header.dump();
  std::string length(8, '\0');
  for (int i = 0; i < 8; ++i)
    length[i] = static_cast<char>((uint64_t(text.size()) >> (8 * i)) & 0xff);
  std::ofstream(path, std::ios::binary) << length << text << data;
}

// Which earlier rows a query row may see, besides causality (for visibility).
using RowFilter = std::function<bool(int64_t query_row, int64_t key_row)>;

// transformers' forward, written out plainly in double precision: [rows][vocab].
std::vector<std::vector<double>> ReferenceForward(const TinyModel& m,
                                                  const std::vector<int32_t>& tokens,
                                                  const std::vector<int64_t>& positions,
                                                  const RowFilter& filter = nullptr) {
  const int64_t n = static_cast<int64_t>(tokens.size()), H = TinyModel::kHidden;
  const int64_t heads = TinyModel::kHeads, kv_heads = TinyModel::kKvHeads;
  const int64_t hd = TinyModel::kHeadDim, half = hd / 2;
  using Vec = std::vector<double>;
  auto rms_norm = [&](const Vec& x, const std::string& weight) {
    double sum = 0;
    for (double v : x)
      sum += v * v;
    const double scale = 1 / std::sqrt(sum / x.size() + TinyModel::kEps);
    Vec out(x.size());
    for (size_t i = 0; i < x.size(); ++i)
      out[i] = x[i] * scale * m.at(weight)[i];
    return out;
  };
  // y = W x (+ b) with W stored [out, in].
  auto project = [&](const Vec& x, const std::string& prefix, bool bias) {
    const std::vector<float>& w = m.at(prefix + ".weight");
    const size_t out_dim = w.size() / x.size();
    Vec y(out_dim, 0.0);
    for (size_t o = 0; o < out_dim; ++o) {
      for (size_t i = 0; i < x.size(); ++i)
        y[o] += w[o * x.size() + i] * x[i];
      if (bias) y[o] += m.at(prefix + ".bias")[o];
    }
    return y;
  };
  auto rope = [&](Vec& v, int64_t num_heads, int64_t position) {
    for (int64_t h = 0; h < num_heads; ++h) {
      for (int64_t i = 0; i < half; ++i) {
        const double angle = position / std::pow(TinyModel::kTheta, double(2 * i) / hd);
        const double a = v[h * hd + i], b = v[h * hd + i + half];
        v[h * hd + i] = a * std::cos(angle) - b * std::sin(angle);
        v[h * hd + i + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  };
  auto sees = [&](int64_t t, int64_t s) {
    if (s > t) return false;
    if (m.sliding_window && positions[t] - positions[s] >= *m.sliding_window) return false;
    return !filter || filter(t, s);
  };

  std::vector<Vec> x(n);
  for (int64_t t = 0; t < n; ++t) {
    const float* row = &m.at("model.embed_tokens.weight")[tokens[t] * H];
    x[t].assign(row, row + H);
  }
  for (int64_t l = 0; l < TinyModel::kLayers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    std::vector<Vec> q(n), k(n), v(n);
    for (int64_t t = 0; t < n; ++t) {
      const Vec h = rms_norm(x[t], p + "input_layernorm.weight");
      q[t] = project(h, p + "self_attn.q_proj", m.qkv_bias());
      k[t] = project(h, p + "self_attn.k_proj", m.qkv_bias());
      v[t] = project(h, p + "self_attn.v_proj", m.qkv_bias());
      rope(q[t], heads, positions[t]);
      rope(k[t], kv_heads, positions[t]);
    }
    for (int64_t t = 0; t < n; ++t) {
      Vec attention(heads * hd, 0.0);
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t g = h / (heads / kv_heads);
        std::vector<std::pair<int64_t, double>> scores;
        double max = -1e300, total = 0;
        for (int64_t s = 0; s < n; ++s) {
          if (!sees(t, s)) continue;
          double dot = 0;
          for (int64_t d = 0; d < hd; ++d)
            dot += q[t][h * hd + d] * k[s][g * hd + d];
          scores.emplace_back(s, dot / std::sqrt(double(hd)));
          max = std::max(max, scores.back().second);
        }
        for (auto& [s, score] : scores)
          total += (score = std::exp(score - max));
        for (const auto& [s, score] : scores) {
          for (int64_t d = 0; d < hd; ++d)
            attention[h * hd + d] += score / total * v[s][g * hd + d];
        }
      }
      const Vec out = project(attention, p + "self_attn.o_proj", m.attention_bias);
      for (int64_t i = 0; i < H; ++i)
        x[t][i] += out[i];
    }
    for (int64_t t = 0; t < n; ++t) {
      const Vec h = rms_norm(x[t], p + "post_attention_layernorm.weight");
      const Vec gate = project(h, p + "mlp.gate_proj", m.mlp_bias);
      const Vec up = project(h, p + "mlp.up_proj", m.mlp_bias);
      Vec act(gate.size());
      for (size_t i = 0; i < gate.size(); ++i)
        act[i] = gate[i] / (1 + std::exp(-gate[i])) * up[i];
      const Vec down = project(act, p + "mlp.down_proj", m.mlp_bias);
      for (int64_t i = 0; i < H; ++i)
        x[t][i] += down[i];
    }
  }
  std::vector<Vec> logits(n);
  for (int64_t t = 0; t < n; ++t) {
    logits[t] = project(rms_norm(x[t], "model.norm.weight"),
                        m.tie ? "model.embed_tokens" : "lm_head", false);
  }
  return logits;
}

// Worst row of max |got - want| / max |want|; `got` holds the rows `first_row`... of `want`.
double RowRelativeError(const std::vector<float>& got, const std::vector<std::vector<double>>& want,
                        size_t first_row = 0) {
  const size_t vocab = want[0].size();
  EXPECT_EQ(got.size() % vocab, 0u);
  double worst = 0;
  for (size_t r = 0; r < got.size() / vocab; ++r) {
    double diff = 0, scale = 0;
    for (size_t v = 0; v < vocab; ++v) {
      diff = std::max(diff, std::fabs(got[r * vocab + v] - want[first_row + r][v]));
      scale = std::max(scale, std::fabs(want[first_row + r][v]));
    }
    worst = std::max(worst, diff / scale);
  }
  return worst;
}

class TinyCheckpoint : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string dir = (std::filesystem::temp_directory_path() / "gistmem_tiny_XXXXXX").string();
    ASSERT_NE(::mkdtemp(dir.data()), nullptr);
    root_ = dir;
  }
  void TearDown() override {
    if (!root_.empty()) std::filesystem::remove_all(root_);
  }

  // Writes `m` into a fresh directory.
  std::filesystem::path Write(const TinyModel& m) {
    const std::filesystem::path dir = root_ / std::to_string(next_dir_++);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "config.json") << TinyConfig(m).dump(2);
    WriteSafetensors(m, dir / "model.safetensors");
    return dir;
  }
  // Writes `m` and loads it on the CPU engine.
  std::unique_ptr<Engine> Load(const TinyModel& m, int threads = 2) {
    return LoadCpu(Write(m), threads, kBlockSize);
  }

  // A fresh model's logits for every row of `tokens` at positions 0, 1, ...
  std::vector<float> Prefill(const TinyModel& m, const std::vector<int32_t>& tokens,
                             int threads = 2) {
    const auto model = Load(m, threads);
    PlainSequence sequence(*model);
    return sequence.Forward(tokens, Iota(0, tokens.size()), LogitsMode::kAll);
  }

  std::filesystem::path root_;
  int next_dir_ = 0;
};

TinyModel Tiny(const std::string& model_type, void (*customize)(TinyModel&) = nullptr) {
  TinyModel m;
  m.model_type = model_type;
  if (customize != nullptr) customize(m);
  return MakeTiny(m);
}

// Every variant the loader knows: plain GQA, q/k/v/o and MLP biases, Qwen2's q/k/v biases
// with tied embeddings, Mistral's window.
std::vector<std::pair<std::string, TinyModel>> TinyVariants() {
  return {
      {"llama", Tiny("llama")},
      {"llama with biases", Tiny("llama",
                                 [](TinyModel& m) {
                                   m.attention_bias = true;
                                   m.mlp_bias = true;
                                 })},
      {"qwen2 tied", Tiny("qwen2", [](TinyModel& m) { m.tie = true; })},
      {"mistral window 4", Tiny("mistral", [](TinyModel& m) { m.sliding_window = 4; })},
  };
}

constexpr double kTolerance = 1e-4;  // of the row's largest |logit|

TEST_F(TinyCheckpoint, PrefillMatchesThePlainReference) {
  const std::vector<int32_t> tokens = RandomTokens(TinyModel::kVocab, 13, 80);
  for (const auto& [name, m] : TinyVariants()) {
    const auto model = Load(m);
    PlainSequence sequence(*model);
    const std::vector<float> logits =
        sequence.Forward(tokens, Iota(0, tokens.size()), LogitsMode::kAll);
    const auto want = ReferenceForward(m, tokens, Iota(0, tokens.size()));
    const double error = RowRelativeError(logits, want);
    std::printf("%s: vs plain reference %.3g (row-relative)\n", name.c_str(), error);
    EXPECT_LE(error, kTolerance) << name;
  }
}

TEST_F(TinyCheckpoint, ChunksAndDecodeAtGappedPositionsMatchTheReference) {
  // Positions with gaps (as after a cache restore): RoPE and the window follow positions.
  const std::vector<int32_t> tokens = RandomTokens(TinyModel::kVocab, 12, 81);
  const std::vector<int64_t> positions = {0, 1, 2, 5, 6, 7, 8, 12, 13, 14, 20, 21};
  for (const auto& [name, m] : TinyVariants()) {
    const auto model = Load(m);
    const auto want = ReferenceForward(m, tokens, positions);
    PlainSequence sequence(*model);
    std::vector<float> got;
    size_t done = 0;
    for (size_t size : {4, 3, 1, 1, 3}) {
      const std::vector<float> part =
          sequence.Forward(std::span(tokens).subspan(done, size),
                           std::span(positions).subspan(done, size), LogitsMode::kAll);
      got.insert(got.end(), part.begin(), part.end());
      done += size;
    }
    EXPECT_EQ(sequence.positions(), positions) << name;
    EXPECT_LE(RowRelativeError(got, want), kTolerance) << name;
  }
}

TEST_F(TinyCheckpoint, TiedHeadIsTheEmbeddingWhateverTheFileHolds) {
  const std::vector<int32_t> tokens = RandomTokens(TinyModel::kVocab, 7, 82);
  const TinyModel tied_with_copy = Tiny("llama", [](TinyModel& m) { m.tie = true; });
  const TinyModel tied_alone = Tiny("llama", [](TinyModel& m) {
    m.tie = true;
    m.lm_head_in_file = false;
  });
  const TinyModel untied = Tiny("llama");
  const std::vector<float> with_copy = Prefill(tied_with_copy, tokens);
  const std::vector<float> alone = Prefill(tied_alone, tokens);
  ExpectBitIdentical(with_copy, alone, "tied, with and without lm_head.weight in the file");
  EXPECT_LE(RowRelativeError(alone, ReferenceForward(tied_alone, tokens, Iota(0, 7))), kTolerance);
  // The untied head (a different random matrix) really is used.
  const std::vector<float> separate = Prefill(untied, tokens);
  EXPECT_LE(RowRelativeError(separate, ReferenceForward(untied, tokens, Iota(0, 7))), kTolerance);
  EXPECT_GT(MaxRowRelativeDiff(separate, alone, TinyModel::kVocab), 0.1);
}

TEST_F(TinyCheckpoint, MissingTensorsAreNamed) {
  TinyModel untied_without_head = Tiny("llama");
  untied_without_head.tensors.erase("lm_head.weight");
  TinyModel biased_without_bias = Tiny("llama", [](TinyModel& m) { m.attention_bias = true; });
  biased_without_bias.tensors.erase("model.layers.1.self_attn.o_proj.bias");
  for (const auto& [m, tensor] :
       {std::pair{untied_without_head, "lm_head.weight"},
        std::pair{biased_without_bias, "model.layers.1.self_attn.o_proj.bias"}}) {
    const std::filesystem::path dir = Write(m);
    // The transformer's loader throws the weights error ...
    EXPECT_THAT([&] { CpuTransformer::Load(dir, 2); },
                ::testing::ThrowsMessage<WeightsError>(HasSubstr(tensor)));
    // ... which the engine registry hands back as a status naming the tensor.
    const absl::StatusOr<std::unique_ptr<Engine>> engine = LoadEngine(dir, {.device = "cpu"});
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kInvalidArgument) << tensor;
    EXPECT_THAT(engine.status().message(), HasSubstr(tensor));
  }
}

TEST_F(TinyCheckpoint, SlidingWindowChangesOnlyRowsBeyondTheWindow) {
  // Window 4: a query at position p sees p-3..p, so rows 0..3 see everything either way.
  const std::vector<int32_t> tokens = RandomTokens(TinyModel::kVocab, 10, 84);
  const TinyModel windowed = Tiny("mistral", [](TinyModel& m) { m.sliding_window = 4; });
  const TinyModel full = Tiny("mistral");
  const std::vector<float> with_window = Prefill(windowed, tokens);
  const std::vector<float> without = Prefill(full, tokens);
  const size_t vocab = TinyModel::kVocab;
  for (size_t row = 0; row < 10; ++row) {
    const std::vector<float> got(with_window.begin() + row * vocab,
                                 with_window.begin() + (row + 1) * vocab);
    const std::vector<float> want(without.begin() + row * vocab,
                                  without.begin() + (row + 1) * vocab);
    if (row < 4) {
      ExpectBitIdentical(got, want, "row " + std::to_string(row) + " inside the window");
    } else {
      EXPECT_GT(MaxRowRelativeDiff(got, want, vocab), 1e-4) << "row " << row;
    }
  }
  EXPECT_LE(RowRelativeError(without, ReferenceForward(full, tokens, Iota(0, 10))), kTolerance);
}

TEST_F(TinyCheckpoint, AfterVisibilityEndsTheNextTokenSeesOnlyKeptEntries) {
  const TinyModel m = Tiny("llama");
  const auto model = Load(m);
  const std::vector<int32_t> tokens = RandomTokens(TinyModel::kVocab, 10, 85);
  PlainSequence sequence(*model);
  // Read at raw clock 0; entries 1, 4, 5, 6 stay visible up to clock 0 only.
  sequence.Forward(std::span(tokens).first(9), Iota(0, 9), LogitsMode::kLast, {},
                   VisibilityEnding(9, {1, 4, 5, 6}, 0));
  const std::vector<int64_t> kept = {0, 2, 3, 7, 8};
  const std::vector<int64_t> clock = {1};
  const std::vector<float> got =
      sequence.Forward(std::span(tokens).subspan(9, 1), Iota(9, 1), LogitsMode::kLast, clock);
  // The dropped rows were seen by earlier rows but are invisible to the last one.
  const auto want = ReferenceForward(m, tokens, Iota(0, 10), [&](int64_t t, int64_t s) {
    return t < 9 || s == 9 || std::find(kept.begin(), kept.end(), s) != kept.end();
  });
  EXPECT_LE(RowRelativeError(got, want, 9), kTolerance);
  EXPECT_GT(RowRelativeError(got, ReferenceForward(m, tokens, Iota(0, 10)), 9), 1e-3);
}

TEST_F(TinyCheckpoint, ThreadCountDoesNotChangeTheResult) {
  const TinyModel m = Tiny("qwen2");
  const std::vector<int32_t> tokens = RandomTokens(TinyModel::kVocab, 11, 86);
  ExpectBitIdentical(Prefill(m, tokens, 3), Prefill(m, tokens, 1), "3 threads vs 1");
}

}  // namespace
}  // namespace gistmem::model
