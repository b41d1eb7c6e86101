// Device-resident KV views (cuda::DeviceKvMirrors, model/backend/cuda/device_kv_view.h):
//
//   - Long random scripts over several SessionKvs at once (appends to pinned and window,
//     window releases, truncations, turns kept or rolled back with released pages, forks with
//     copy on write, park and unpark, documents, sessions destroyed and new ones made in their
//     place): after every round the device arrays behind each view (page ids, positions,
//     visibility) equal the host arrays a fresh upload would copy, the views' shapes equal
//     AppendViews', and mirrors of destroyed or parked KVs are gone after Collect.
//   - The CUDA engine with mirrors against the same engine re-sending whole tables every step
//     (EngineOptions::cuda_kv_mirrors = false): the shipped model read through
//     memory::SessionMemory under every policy, with policy eviction, cancelled turns rolled
//     back, parking, attached documents and sessions replaced; the logits are equal bit for
//     bit at every step.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "memory/block_pool.h"
#include "memory/session_kv.h"
#include "memory/session_memory.h"
#include "model/backend/cuda/device_kv_view.h"
#include "model/engine.h"
#include "model/gist_config.h"
#include "tests/gpu/engine_scripts.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {
namespace {

using memory::SessionKv;
using testing::SkipWithoutGpu;
using Segment = SessionKv::Segment;

std::vector<int32_t> DeviceInts(const int32_t* device, int64_t count) {
  std::vector<int32_t> host(count);
  if (count > 0) {
    EXPECT_EQ(cudaMemcpy(host.data(), device, count * sizeof(int32_t), cudaMemcpyDeviceToHost),
              cudaSuccess);
  }
  return host;
}

// The device views of one KV against its host views, array by array.
void ExpectViewsEqual(const SessionKv& kv, std::span<const memory::KvSegmentView> device,
                      int32_t block, const std::string& what) {
  std::vector<memory::KvSegmentView> host;
  kv.AppendViews(host);
  ASSERT_EQ(device.size(), host.size()) << what;
  for (size_t i = 0; i < host.size(); ++i) {
    const memory::KvSegmentView &h = host[i], &d = device[i];
    const std::string where = what + " segment " + std::to_string(i);
    ASSERT_EQ(d.num_slots, h.num_slots) << where;
    ASSERT_EQ(d.shared, h.shared) << where;
    ASSERT_EQ(d.rope_offset, h.rope_offset) << where;
    const int64_t n = h.num_slots, pages = (n + block - 1) / block;
    EXPECT_EQ(DeviceInts(d.page_ids, pages), std::vector<int32_t>(h.page_ids, h.page_ids + pages))
        << where;
    if (h.shared) continue;
    EXPECT_EQ(DeviceInts(d.positions, n), std::vector<int32_t>(h.positions, h.positions + n))
        << where;
    EXPECT_EQ(DeviceInts(d.visible_from, n),
              std::vector<int32_t>(h.visible_from, h.visible_from + n))
        << where;
    EXPECT_EQ(DeviceInts(d.visible_until, n),
              std::vector<int32_t>(h.visible_until, h.visible_until + n))
        << where;
  }
}

TEST(DeviceKvMirrorsTest, RandomScriptsMatchTheHostAfterEveryRound) {
  GISTMEM_SKIP_WITHOUT_GPU();
  constexpr int32_t kSlots = 4;
  const memory::PageLayout layout{
      .block_size = kSlots, .num_layers = 1, .kv_dim = 2, .element_bytes = 4};
  memory::BlockPool pool(memory::MakeHostPageStorage(layout, 1 << 14 << 4));
  cudaStream_t stream = nullptr;
  ASSERT_EQ(cudaStreamCreate(&stream), cudaSuccess);
  int64_t rounds = 0, values = 0;
  for (uint32_t seed = 1; seed <= 12; ++seed) {
    std::mt19937 rng(seed);
    DeviceKvMirrors mirrors(kSlots, /*idle_rounds=*/20);
    struct Kv {
      std::unique_ptr<SessionKv> kv;
      bool in_turn = false;
      int64_t clock = 0;
    };
    std::vector<Kv> kvs(4);
    for (Kv& k : kvs)
      k.kv = std::make_unique<SessionKv>(pool);
    std::vector<std::shared_ptr<const memory::FrozenKv>> documents;
    for (int op = 0; op < 700; ++op) {
      Kv& k = kvs[rng() % kvs.size()];
      SessionKv& kv = *k.kv;
      const int choice = static_cast<int>(rng() % 100);
      if (kv.parked()) {
        if (choice < 50) {
          ASSERT_TRUE(kv.Unpark().ok());
        }
      } else if (choice < 45) {
        ++k.clock;
        const Segment segment = rng() % 3 == 0 ? Segment::kPinned : Segment::kWindow;
        ASSERT_TRUE(kv.Append(segment, kv.next_position(),
                              {.from_clock = 0, .until_clock = k.clock + int64_t(rng() % 12)}, {})
                        .ok());
      } else if (choice < 55) {
        kv.ReleaseExpired(k.clock);
      } else if (choice < 60 && !k.in_turn) {
        kv.BeginTurn();
        k.in_turn = true;
      } else if (choice < 66 && k.in_turn) {
        kv.Rollback();
        k.in_turn = false;
      } else if (choice < 70 && k.in_turn) {
        kv.EndTurn();
        k.in_turn = false;
      } else if (choice < 74 && !k.in_turn) {
        const SessionKv::Mark mark = kv.mark();
        ASSERT_TRUE(kv.Append(Segment::kWindow, kv.next_position(), {}, {}).ok());
        kv.TruncateTo(mark);  // a failed step's rows dropped
      } else if (choice < 78 && !k.in_turn) {
        absl::StatusOr<std::unique_ptr<SessionKv>> fork = kv.Fork();
        ASSERT_TRUE(fork.ok());
        k.kv = *std::move(fork);  // the original goes; the fork copies its shared tail on write
      } else if (choice < 83 && !k.in_turn) {
        ASSERT_TRUE(kv.Park().ok());
      } else if (choice < 87 && !k.in_turn) {
        k.kv.reset();  // destroyed; a new KV likely takes its address
        k.kv = std::make_unique<SessionKv>(pool);
        k.clock = 0;
      } else if (choice < 90 && !k.in_turn) {
        if (documents.empty() || rng() % 2) {
          std::vector<int64_t> positions(1 + rng() % 9);
          for (size_t i = 0; i < positions.size(); ++i)
            positions[i] = static_cast<int64_t>(i);
          std::vector<float> rows(positions.size() * 2 * layout.kv_dim, 0.5f);
          absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> doc =
              memory::FrozenKv::FromRows(pool, positions, rows.data(), positions.size() + 2);
          ASSERT_TRUE(doc.ok());
          documents.push_back(*doc);
        }
        kv.Attach(documents[rng() % documents.size()], "doc");
        if (documents.size() > 3) documents.erase(documents.begin());  // a document may die
      } else if (choice >= 90 || op % 9 == 0) {
        // A round: the mirrors of a random subset of the unparked KVs catch up at once.
        mirrors.Collect();
        std::vector<memory::KvSegmentView> views;
        std::vector<std::pair<const SessionKv*, size_t>> added;
        for (const Kv& other : kvs) {
          if (other.kv->parked() || rng() % 4 == 0) continue;
          added.emplace_back(other.kv.get(), views.size());
          ASSERT_TRUE(mirrors.Add(*other.kv, views).ok());
        }
        ASSERT_TRUE(mirrors.Flush(stream).ok());
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        ++rounds;
        values += mirrors.values_flushed();
        for (size_t a = 0; a < added.size(); ++a) {
          const size_t end = a + 1 < added.size() ? added[a + 1].second : views.size();
          ExpectViewsEqual(*added[a].first,
                           std::span(views).subspan(added[a].second, end - added[a].second), kSlots,
                           "seed " + std::to_string(seed) + " op " + std::to_string(op));
        }
        // Nothing is kept for KVs that are gone or parked.
        size_t live = 0;
        for (const Kv& other : kvs)
          live += !other.kv->parked();
        mirrors.Collect();
        EXPECT_LE(mirrors.sessions(), live);
      }
      if (::testing::Test::HasFailure()) return;
    }
  }
  std::printf("%ld rounds, %ld values copied\n", rounds, values);
  cudaStreamDestroy(stream);
}

// One world: an engine and its sessions, driven by the same random choices as the other.
struct World {
  std::unique_ptr<model::Engine> engine;
  std::vector<std::unique_ptr<memory::SessionMemory>> sessions;
  std::shared_ptr<const memory::FrozenKv> document;
};

TEST(CudaEngineMirrorsTest, LogitsEqualTheWholeUploadPathBitForBit) {
  GISTMEM_SKIP_WITHOUT_GPU();
  World worlds[2];
  for (int w = 0; w < 2; ++w) {
    absl::StatusOr<std::unique_ptr<model::Engine>> engine =
        model::LoadEngine(TinyModel(), {.device = "cuda",
                                        .kv_pool_bytes = int64_t{128} << 20,
                                        .block_size = kBlock,
                                        .cuda_kv_mirrors = w == 0});
    ASSERT_TRUE(engine.ok()) << engine.status();
    worlds[w].engine = *std::move(engine);
  }
  const int64_t vocab = worlds[0].engine->config().vocab_size;
  const int32_t gist = model::GistConfig::FromModelDir(TinyModel(), vocab)->gist_token_id;
  const PolicyKind kinds[] = {PolicyKind::kFull, PolicyKind::kWindow, PolicyKind::kPool,
                              PolicyKind::kGist};
  std::mt19937 rng(5);
  auto new_session = [&](World& world, PolicyKind kind) {
    return std::make_unique<memory::SessionMemory>(world.engine->kv_pool(), MakePolicy(kind, gist));
  };
  for (World& world : worlds) {
    for (PolicyKind kind : kinds)
      world.sessions.push_back(new_session(world, kind));
  }
  // A document, read once in each world.
  {
    const std::vector<int32_t> raw = RandomTokens(40, vocab, rng);
    for (World& world : worlds) {
      memory::SessionMemory doc(world.engine->kv_pool(), MakePolicy(PolicyKind::kFull, gist));
      const memory::RowPlan plan = doc.Plan(raw);
      ASSERT_TRUE(
          memory::ReadRows(*world.engine, doc, plan, 0, plan.size(), model::LogitsMode::kLast)
              .ok());
      absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> frozen = doc.Frozen();
      ASSERT_TRUE(frozen.ok());
      world.document = *frozen;
    }
  }
  int64_t steps = 0, rows_compared = 0;
  for (int op = 0; op < 500; ++op) {
    const int choice = static_cast<int>(rng() % 100);
    const size_t s = rng() % worlds[0].sessions.size();
    memory::SessionMemory& first = *worlds[0].sessions[s];
    const std::string what = "op " + std::to_string(op);
    if (first.parked()) {
      for (World& world : worlds)
        ASSERT_TRUE(world.sessions[s]->Unpark().ok()) << what;
    } else if (choice < 8 && !first.in_turn()) {
      for (World& world : worlds)
        world.sessions[s]->BeginTurn();
    } else if (choice < 13 && first.in_turn()) {
      for (World& world : worlds)
        world.sessions[s]->Rollback();  // a cancelled turn
    } else if (choice < 18 && first.in_turn()) {
      for (World& world : worlds)
        world.sessions[s]->EndTurn();
    } else if (choice < 22 && !first.in_turn()) {
      for (World& world : worlds)
        ASSERT_TRUE(world.sessions[s]->Park().ok()) << what;
    } else if (choice < 25 && !first.in_turn()) {
      const PolicyKind kind = kinds[rng() % 4];
      for (World& world : worlds)
        world.sessions[s] = new_session(world, kind);  // replaced: maybe at the same address
    } else if (choice < 28 && !first.in_turn()) {
      for (World& world : worlds)
        world.sessions[s]->Attach(world.document, "doc");
    } else {
      // A step of the unparked sessions: each reads a few raw tokens (a decode token most of
      // the time, a prompt chunk now and then), in one batch; logits compared bit for bit.
      std::vector<std::vector<int32_t>> raw(worlds[0].sessions.size());
      for (size_t i = 0; i < raw.size(); ++i) {
        if (worlds[0].sessions[i]->parked() || rng() % 3 == 0) continue;
        raw[i] = RandomTokens(rng() % 4 == 0 ? 1 + rng() % 24 : 1, vocab, rng);
      }
      std::vector<float> logits[2];
      for (int w = 0; w < 2; ++w) {
        World& world = worlds[w];
        std::vector<memory::RowPlan> plans(raw.size());
        std::vector<std::vector<memory::SlotRef>> slots(raw.size());
        std::vector<model::SequenceStep> batch;
        std::vector<size_t> members;
        for (size_t i = 0; i < raw.size(); ++i) {
          if (raw[i].empty()) continue;
          plans[i] = world.sessions[i]->Plan(raw[i]);
          absl::StatusOr<std::vector<memory::SlotRef>> reserved =
              world.sessions[i]->Reserve(plans[i], 0, plans[i].size());
          ASSERT_TRUE(reserved.ok()) << what << ": " << reserved.status();
          slots[i] = *std::move(reserved);
          members.push_back(i);
        }
        for (size_t i : members) {
          batch.push_back({.tokens = plans[i].tokens,
                           .positions = plans[i].positions,
                           .clocks = plans[i].clocks,
                           .slots = slots[i],
                           .kv = &world.sessions[i]->kv(),
                           .mode = model::LogitsMode::kAll});
        }
        if (batch.empty()) break;
        absl::StatusOr<std::vector<std::vector<float>>> out = world.engine->ForwardBatch(batch);
        ASSERT_TRUE(out.ok()) << what << ": " << out.status();
        for (size_t m = 0; m < members.size(); ++m) {
          ASSERT_TRUE(world.sessions[members[m]]
                          ->Applied(plans[members[m]], 0, plans[members[m]].size())
                          .ok());
          logits[w].insert(logits[w].end(), (*out)[m].begin(), (*out)[m].end());
        }
      }
      ASSERT_EQ(logits[0].size(), logits[1].size()) << what;
      ASSERT_TRUE(logits[0] == logits[1]) << what << ": mirrored logits differ from re-sent ones";
      ++steps;
      rows_compared += static_cast<int64_t>(logits[0].size()) / vocab;
    }
  }
  std::printf("%ld steps, %ld logits rows equal bit for bit\n", steps, rows_compared);
  EXPECT_GT(steps, 300);
}

}  // namespace
}  // namespace gistmem::cuda
