// The CPU transformer on the fixture checkpoints: prefill, chunked prefill and decode agree;
// ForwardBatch is bit-for-bit what each sequence gives alone (continuous batching relies on
// it); Retain really removes entries; invalid input is rejected without touching the cache;
// Mistral's sliding window hides tokens that are far enough back. And on tiny random
// checkpoints written here (every bias and tie variant), a plain double-precision forward
// written out in the test agrees with the implementation.
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

#include "model/kv_cache.h"
#include "model/weights.h"

namespace gistmem::model {
namespace {

SequenceChunk Chunk(std::span<const int32_t> tokens, std::span<const int64_t> positions,
                    KvCache* cache, LogitsMode mode) {
  SequenceChunk chunk;
  chunk.tokens = tokens;
  chunk.positions = positions;
  chunk.cache = cache;
  chunk.mode = mode;
  return chunk;
}

using ::testing::HasSubstr;

const std::filesystem::path kModels =
    std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/models";

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

void ExpectCachesBitIdentical(const KvCache& got, const KvCache& want, const std::string& what) {
  ASSERT_EQ(got.positions(), want.positions()) << what;
  const size_t n = static_cast<size_t>(got.size() * got.kv_dim());
  for (int64_t l = 0; l < got.num_layers(); ++l) {
    EXPECT_EQ(BitMismatches(got.keys(l), want.keys(l), n), 0u)
        << what << ": keys of layer " << l << ", max |difference| "
        << MaxAbsDiff(got.keys(l), want.keys(l), n);
    EXPECT_EQ(BitMismatches(got.values(l), want.values(l), n), 0u)
        << what << ": values of layer " << l << ", max |difference| "
        << MaxAbsDiff(got.values(l), want.values(l), n);
  }
}

std::string TestName(const ::testing::TestParamInfo<std::string>& info) {
  std::string name = info.param;
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

class CpuTransformerTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    model_ = CpuTransformer::Load(kModels / GetParam(), 2);
    vocab_ = model_->config().vocab_size;
  }

  // Runs `tokens` at consecutive positions after the cache's end (0 for an empty cache).
  std::vector<float> Run(std::span<const int32_t> tokens, KvCache& cache, LogitsMode mode) {
    const int64_t start = cache.size() == 0 ? 0 : cache.positions().back() + 1;
    return model_->Forward(tokens, Iota(start, tokens.size()), cache, mode);
  }

  std::unique_ptr<CpuTransformer> model_;
  int64_t vocab_ = 0;
};

TEST_P(CpuTransformerTest, PrefillChunkedPrefillAndDecodeAgree) {
  const std::vector<int32_t> tokens = RandomTokens(vocab_, 27, 1);
  KvCache full_cache(model_->config());
  const std::vector<float> full = Run(tokens, full_cache, LogitsMode::kAll);
  ASSERT_EQ(full.size(), tokens.size() * vocab_);
  EXPECT_EQ(full_cache.positions(), Iota(0, tokens.size()));

  // Uneven chunks, including a single token in the middle.
  KvCache chunk_cache(model_->config());
  std::vector<float> chunked;
  size_t done = 0;
  for (size_t size : {5, 1, 9, 12}) {
    const std::vector<float> part =
        Run(std::span(tokens).subspan(done, size), chunk_cache, LogitsMode::kAll);
    ASSERT_EQ(part.size(), size * vocab_);
    chunked.insert(chunked.end(), part.begin(), part.end());
    done += size;
  }
  ASSERT_EQ(done, tokens.size());
  EXPECT_EQ(chunk_cache.positions(), full_cache.positions());

  KvCache decode_cache(model_->config());
  std::vector<float> decoded;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const std::vector<float> row =
        Run(std::span(tokens).subspan(i, 1), decode_cache, LogitsMode::kLast);
    ASSERT_EQ(row.size(), size_t(vocab_));
    decoded.insert(decoded.end(), row.begin(), row.end());
  }
  EXPECT_EQ(decode_cache.positions(), full_cache.positions());

  const double chunk_error = MaxRowRelativeDiff(chunked, full, vocab_);
  const double decode_error = MaxRowRelativeDiff(decoded, full, vocab_);
  std::printf("%s: chunked vs full %.3g, decode vs full %.3g (row-relative)\n", GetParam().c_str(),
              chunk_error, decode_error);
  EXPECT_LE(chunk_error, 1e-5);
  EXPECT_LE(decode_error, 1e-5);

  // kLast is the last row of kAll.
  KvCache last_cache(model_->config());
  const std::vector<float> last = Run(tokens, last_cache, LogitsMode::kLast);
  const std::vector<float> full_last(full.end() - vocab_, full.end());
  EXPECT_LE(MaxRowRelativeDiff(last, full_last, vocab_), 1e-5);

  // The logits really depend on the input (a guard against comparing constants).
  const std::vector<float> first_row(full.begin(), full.begin() + vocab_);
  EXPECT_GT(MaxRowRelativeDiff(first_row, full_last, vocab_), 1e-3);
}

TEST_P(CpuTransformerTest, CachesOfPrefillAndDecodeAgree) {
  const std::vector<int32_t> tokens = RandomTokens(vocab_, 15, 2);
  KvCache full_cache(model_->config()), decode_cache(model_->config());
  Run(tokens, full_cache, LogitsMode::kLast);
  for (size_t i = 0; i < tokens.size(); ++i)
    Run(std::span(tokens).subspan(i, 1), decode_cache, LogitsMode::kLast);
  const size_t n = tokens.size() * full_cache.kv_dim();
  for (int64_t l = 0; l < full_cache.num_layers(); ++l) {
    double scale = 0;
    for (size_t i = 0; i < n; ++i)
      scale = std::max(scale, std::fabs(double(full_cache.keys(l)[i])));
    EXPECT_LE(MaxAbsDiff(decode_cache.keys(l), full_cache.keys(l), n), 1e-5 * scale) << l;
    EXPECT_LE(MaxAbsDiff(decode_cache.values(l), full_cache.values(l), n), 1e-5 * scale) << l;
  }
}

// Three sequences in different states: one continuing with a multi-token chunk, one fresh
// prefill, one in the middle of decoding (one token).
struct BatchScenario {
  std::vector<int32_t> history_a, chunk_a;  // a: 9 tokens in the cache, then 6 more (kAll)
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

// Brings fresh caches a, b, c to the scenario's starting state.
void PrepareCaches(CpuTransformer& model, const BatchScenario& s, KvCache& a, KvCache& c) {
  model.Forward(s.history_a, Iota(0, s.history_a.size()), a, LogitsMode::kLast);
  model.Forward(std::span(s.history_c).first(13), Iota(0, 13), c, LogitsMode::kLast);
  for (int64_t i = 13; i < 16; ++i) {
    model.Forward(std::span(s.history_c).subspan(i, 1), Iota(i, 1), c, LogitsMode::kLast);
  }
}

TEST_P(CpuTransformerTest, ForwardBatchIsBitIdenticalToEachSequenceAlone) {
  const BatchScenario s = MakeScenario(vocab_);
  const std::vector<int64_t> pos_a = Iota(9, 6), pos_b = Iota(0, 11), pos_c = Iota(16, 1);

  KvCache alone_a(model_->config()), alone_b(model_->config()), alone_c(model_->config());
  PrepareCaches(*model_, s, alone_a, alone_c);
  const std::vector<float> want_a = model_->Forward(s.chunk_a, pos_a, alone_a, LogitsMode::kAll);
  const std::vector<float> want_b = model_->Forward(s.chunk_b, pos_b, alone_b, LogitsMode::kLast);
  const std::vector<float> want_c = model_->Forward(s.chunk_c, pos_c, alone_c, LogitsMode::kLast);
  ASSERT_EQ(want_a.size(), 6 * size_t(vocab_));
  ASSERT_EQ(want_b.size(), size_t(vocab_));
  ASSERT_EQ(want_c.size(), size_t(vocab_));

  // Both orders of the same batch.
  for (const bool reversed : {false, true}) {
    KvCache a(model_->config()), b(model_->config()), c(model_->config());
    PrepareCaches(*model_, s, a, c);
    const SequenceChunk chunk_a = Chunk(s.chunk_a, pos_a, &a, LogitsMode::kAll);
    const SequenceChunk chunk_b = Chunk(s.chunk_b, pos_b, &b, LogitsMode::kLast);
    const SequenceChunk chunk_c = Chunk(s.chunk_c, pos_c, &c, LogitsMode::kLast);
    std::vector<SequenceChunk> chunks = {chunk_a, chunk_b, chunk_c};
    if (reversed) std::reverse(chunks.begin(), chunks.end());
    std::vector<std::vector<float>> got = model_->ForwardBatch(chunks);
    ASSERT_EQ(got.size(), 3u);
    if (reversed) std::reverse(got.begin(), got.end());
    const std::string order = reversed ? " (order c, b, a)" : " (order a, b, c)";
    ExpectBitIdentical(got[0], want_a, "sequence a, 6-token chunk after 9" + order);
    ExpectBitIdentical(got[1], want_b, "sequence b, 11-token prefill" + order);
    ExpectBitIdentical(got[2], want_c, "sequence c, decode step at 16" + order);
    ExpectCachesBitIdentical(a, alone_a, "cache a" + order);
    ExpectCachesBitIdentical(b, alone_b, "cache b" + order);
    ExpectCachesBitIdentical(c, alone_c, "cache c" + order);
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
  std::vector<KvCache> alone, batched;
  for (size_t i = 0; i < prompts.size(); ++i) {
    alone.emplace_back(model_->config());
    batched.emplace_back(model_->config());
    Run(prompts[i], alone[i], LogitsMode::kLast);
    Run(prompts[i], batched[i], LogitsMode::kLast);
  }
  for (size_t step = 0; step < 4; ++step) {
    std::vector<std::vector<int64_t>> positions;
    for (size_t i = 0; i < prompts.size(); ++i)
      positions.push_back(Iota(prompt_lengths[i] + step, 1));
    std::vector<SequenceChunk> chunks;
    for (size_t i = 0; i < prompts.size(); ++i) {
      chunks.push_back(
          Chunk(std::span(next[i]).subspan(step, 1), positions[i], &batched[i], LogitsMode::kLast));
    }
    const std::vector<std::vector<float>> got = model_->ForwardBatch(chunks);
    ASSERT_EQ(got.size(), prompts.size());
    for (size_t i = 0; i < prompts.size(); ++i) {
      const std::vector<float> want = model_->Forward(std::span(next[i]).subspan(step, 1),
                                                      positions[i], alone[i], LogitsMode::kLast);
      ExpectBitIdentical(got[i], want,
                         "step " + std::to_string(step) + ", sequence " + std::to_string(i));
    }
  }
}

TEST_P(CpuTransformerTest, RetainedEntriesAreReallyGone) {
  const std::vector<int32_t> prompt = RandomTokens(vocab_, 12, 40);
  const std::vector<int32_t> next = {static_cast<int32_t>(vocab_ - 1)};
  const std::vector<int64_t> next_position = {12};
  KvCache full(model_->config());
  Run(prompt, full, LogitsMode::kLast);

  auto decode_with = [&](KvCache cache) {
    return model_->Forward(next, next_position, cache, LogitsMode::kLast);
  };
  const std::vector<float> with_all = decode_with(full);

  // Retaining every entry changes nothing.
  KvCache kept_all = full;
  kept_all.Retain(Iota(0, 12));
  ExpectBitIdentical(decode_with(kept_all), with_all, "Retain of every entry");

  // Dropping entries 4..7 changes the next logits ...
  const std::vector<int64_t> kept = {0, 1, 2, 3, 8, 9, 10, 11};
  KvCache dropped = full;
  dropped.Retain(kept);
  EXPECT_EQ(dropped.positions(), kept);  // positions are the entries' own
  const std::vector<float> without = decode_with(dropped);
  EXPECT_GT(MaxRowRelativeDiff(without, with_all, vocab_), 1e-4);

  // ... and what the dropped rows held no longer matters: garbage in them before the Retain
  // gives the very same logits.
  KvCache poisoned = full;
  for (int64_t l = 0; l < poisoned.num_layers(); ++l) {
    for (int64_t e = 4; e < 8; ++e) {
      std::fill_n(poisoned.MutableKeys(l, e), poisoned.kv_dim(), 1e3f);
      std::fill_n(poisoned.MutableValues(l, e), poisoned.kv_dim(), -1e3f);
    }
  }
  // (The poison does reach the output while the rows are still there.)
  EXPECT_GT(MaxRowRelativeDiff(decode_with(poisoned), with_all, vocab_), 1e-3);
  poisoned.Retain(kept);
  ExpectBitIdentical(decode_with(poisoned), without, "poisoned rows dropped by Retain");

  // Retaining a prefix is Truncate.
  KvCache prefix = full, truncated = full;
  prefix.Retain(Iota(0, 7));
  truncated.Truncate(7);
  ExpectBitIdentical(decode_with(prefix), decode_with(truncated), "Retain prefix vs Truncate");
}

TEST_P(CpuTransformerTest, RejectsInvalidInputAndLeavesTheCacheAlone) {
  KvCache cache(model_->config());
  Run(RandomTokens(vocab_, 5, 50), cache, LogitsMode::kLast);  // positions 0..4
  const KvCache before = cache;
  const int32_t last_token = static_cast<int32_t>(vocab_ - 1);

  // Each fragment must appear in the message.
  auto expect_rejected = [&](std::vector<int32_t> tokens, std::vector<int64_t> positions,
                             const std::vector<std::string>& fragments) {
    const std::string what = ::testing::PrintToString(fragments);
    try {
      model_->Forward(tokens, positions, cache, LogitsMode::kLast);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const std::invalid_argument& e) {
      for (const std::string& fragment : fragments)
        EXPECT_THAT(e.what(), HasSubstr(fragment));
    }
    ExpectCachesBitIdentical(cache, before, "after a rejected forward: " + what);
  };
  const std::string vocab = std::to_string(vocab_);
  expect_rejected({static_cast<int32_t>(vocab_)}, {5},
                  {"token id " + vocab + " ", "outside the vocabulary", vocab});
  expect_rejected({3, -1}, {5, 6}, {"token id -1 ", "outside the vocabulary"});
  expect_rejected({3}, {4}, {"position 4 ", "does not follow position 4"});
  expect_rejected({3}, {2}, {"position 2 ", "does not follow position 4"});
  expect_rejected({3, 4, 5}, {5, 7, 7}, {"position 7 ", "does not follow position 7"});
  expect_rejected({3, 4, 5}, {5, 8, 6}, {"position 6 ", "does not follow position 8"});
  expect_rejected({3, 4}, {5}, {"2 tokens but 1 positions"});
  expect_rejected({3}, {5, 6}, {"1 tokens but 2 positions"});
  expect_rejected({}, {}, {"no tokens"});

  // The last valid id is fine, as is a gap in positions.
  EXPECT_EQ(model_
                ->Forward(std::vector<int32_t>{last_token}, std::vector<int64_t>{9}, cache,
                          LogitsMode::kLast)
                .size(),
            size_t(vocab_));
  EXPECT_EQ(cache.positions(), (std::vector<int64_t>{0, 1, 2, 3, 4, 9}));
}

TEST_P(CpuTransformerTest, ARejectedBatchChangesNoCache) {
  KvCache good(model_->config()), bad(model_->config());
  const std::vector<int32_t> tokens = RandomTokens(vocab_, 4, 60);
  const std::vector<int32_t> bad_tokens = {1, static_cast<int32_t>(vocab_ + 7)};
  const std::vector<int64_t> positions = Iota(0, 4), bad_positions = Iota(0, 2);
  const std::vector<SequenceChunk> chunks = {
      Chunk(tokens, positions, &good, LogitsMode::kLast),
      Chunk(bad_tokens, bad_positions, &bad, LogitsMode::kLast)};
  EXPECT_THROW(model_->ForwardBatch(chunks), std::invalid_argument);
  EXPECT_EQ(good.size(), 0);
  EXPECT_EQ(bad.size(), 0);
  const std::vector<SequenceChunk> no_cache = {
      Chunk(tokens, positions, nullptr, LogitsMode::kLast)};
  EXPECT_THAT([&] { model_->ForwardBatch(no_cache); },
              ::testing::ThrowsMessage<std::invalid_argument>(HasSubstr("without a KV cache")));
}

INSTANTIATE_TEST_SUITE_P(Checkpoints, CpuTransformerTest,
                         ::testing::Values("llama-gqa-bf16", "qwen2-tied-f32",
                                           "mistral-window-f16"),
                         TestName);

// ---- Mistral's sliding window (8 on the fixture: a query sees keys with q - k < 8). ----

// Logits at the last of 24 positions, by prefill and by token-by-token decode, both.
std::vector<std::vector<float>> LastLogits(CpuTransformer& model,
                                           const std::vector<int32_t>& tokens) {
  KvCache prefill_cache(model.config()), decode_cache(model.config());
  std::vector<float> prefill =
      model.Forward(tokens, Iota(0, tokens.size()), prefill_cache, LogitsMode::kLast);
  std::vector<float> decode;
  for (size_t i = 0; i < tokens.size(); ++i) {
    decode = model.Forward(std::span(tokens).subspan(i, 1), Iota(int64_t(i), 1), decode_cache,
                           LogitsMode::kLast);
  }
  return {prefill, decode};
}

// Changes the token at `position` and reports whether the last logits moved (per path).
void ExpectDependence(CpuTransformer& model, const std::vector<int32_t>& tokens, size_t position,
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
  const auto model = CpuTransformer::Load(kModels / "mistral-window-f16", 2);
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
  const auto model = CpuTransformer::Load(dir_, 2);
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

// Which earlier rows a query row may see, besides causality (for Retain).
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

  // Writes `m` into a fresh directory and loads it.
  std::unique_ptr<CpuTransformer> Load(const TinyModel& m, int threads = 2) {
    const std::filesystem::path dir = root_ / std::to_string(next_dir_++);
    std::filesystem::create_directories(dir);
    std::ofstream(dir / "config.json") << TinyConfig(m).dump(2);
    WriteSafetensors(m, dir / "model.safetensors");
    return CpuTransformer::Load(dir, threads);
  }

  // A fresh model's logits for every row of `tokens` at positions 0, 1, ...
  std::vector<float> Prefill(const TinyModel& m, const std::vector<int32_t>& tokens,
                             int threads = 2) {
    const auto model = Load(m, threads);
    KvCache cache(model->config());
    return model->Forward(tokens, Iota(0, tokens.size()), cache, LogitsMode::kAll);
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
    KvCache cache(model->config());
    const std::vector<float> logits =
        model->Forward(tokens, Iota(0, tokens.size()), cache, LogitsMode::kAll);
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
    KvCache cache(model->config());
    std::vector<float> got;
    size_t done = 0;
    for (size_t size : {4, 3, 1, 1, 3}) {
      const std::vector<float> part =
          model->Forward(std::span(tokens).subspan(done, size),
                         std::span(positions).subspan(done, size), cache, LogitsMode::kAll);
      got.insert(got.end(), part.begin(), part.end());
      done += size;
    }
    EXPECT_EQ(cache.positions(), positions) << name;
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
  EXPECT_THAT([&] { Load(untied_without_head); },
              ::testing::ThrowsMessage<WeightsError>(HasSubstr("lm_head.weight")));
  TinyModel biased_without_bias = Tiny("llama", [](TinyModel& m) { m.attention_bias = true; });
  biased_without_bias.tensors.erase("model.layers.1.self_attn.o_proj.bias");
  EXPECT_THAT(
      [&] { Load(biased_without_bias); },
      ::testing::ThrowsMessage<WeightsError>(HasSubstr("model.layers.1.self_attn.o_proj.bias")));
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

TEST_F(TinyCheckpoint, AfterRetainTheNextTokenSeesOnlyKeptEntries) {
  const TinyModel m = Tiny("llama");
  const auto model = Load(m);
  const std::vector<int32_t> tokens = RandomTokens(TinyModel::kVocab, 10, 85);
  KvCache cache(model->config());
  model->Forward(std::span(tokens).first(9), Iota(0, 9), cache, LogitsMode::kLast);
  const std::vector<int64_t> kept = {0, 2, 3, 7, 8};
  cache.Retain(kept);
  const std::vector<float> got =
      model->Forward(std::span(tokens).subspan(9, 1), Iota(9, 1), cache, LogitsMode::kLast);
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
