// gistmem-store-bench: commit latency and resume time of the session stores, RocksDB against
// RADOS, on the same synthetic sessions (bench/RESULTS.md, "Session stores").
//
//   gistmem-store-bench --rocksdb /tmp/bench-db --rados_pool gistmem --ceph_conf ceph.conf
//
// Every session gets --turns commits shaped like a gist-policy turn of models/gistmem-16k
// (6 layers, 2 KV heads x 64 in fp32: 6 KiB per entry): 2 transcript records, a pinned
// segment of --pinned_entries and a window segment of --window_entries that replaces the
// previous window. Resume = what a node does to take a session over: acquire it (RADOS), read
// its record, transcript and segments. Prints one markdown row per store.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "store/rocks_store.h"
#if defined(GISTMEM_HAVE_RADOS)
#include "store/rados_store.h"
#endif

ABSL_FLAG(std::string, rocksdb, "", "RocksDB directory to measure (created; removed after)");
ABSL_FLAG(std::string, rados_pool, "", "RADOS pool to measure");
ABSL_FLAG(std::string, ceph_conf, "", "Ceph configuration for --rados_pool");
ABSL_FLAG(int, sessions, 8, "Sessions");
ABSL_FLAG(int, turns, 12, "Commits per session");
ABSL_FLAG(int, pinned_entries, 32, "KV entries of each turn's pinned segment");
ABSL_FLAG(int, window_entries, 512, "KV entries of the window segment");
ABSL_FLAG(int, entry_bytes, 6144, "Bytes of one KV entry (all layers, K and V)");

namespace {

using gistmem::store::KvSegment;
using gistmem::store::SessionRecord;
using gistmem::store::Store;
using gistmem::store::TurnCommit;
using gistmem::store::TurnRecord;

KvSegment Segment(uint64_t seq, const std::string& kind, int entries, int entry_bytes) {
  KvSegment segment;
  segment.seq = seq;
  segment.header.set_model_fingerprint("bench");
  segment.header.set_kind(kind);
  segment.header.set_entry_count(entries);
  segment.payload.assign(static_cast<size_t>(entries) * entry_bytes, static_cast<char>(seq));
  return segment;
}

double Percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  return values[std::min(values.size() - 1, static_cast<size_t>(p * values.size()))];
}

// Commits every session's turns (round robin, as a busy server would), then resumes each.
void Measure(const std::string& name, Store& store) {
  const int sessions = absl::GetFlag(FLAGS_sessions);
  const int turns = absl::GetFlag(FLAGS_turns);
  const int entry_bytes = absl::GetFlag(FLAGS_entry_bytes);
  const std::string tenant = absl::StrCat("bench", absl::ToUnixMicros(absl::Now()) % 1000000);
  std::vector<SessionRecord> records(sessions);
  std::vector<uint64_t> epochs(sessions);
  for (int s = 0; s < sessions; ++s) {
    records[s].set_tenant(tenant);
    records[s].set_session_id(absl::StrCat("s", s));
    records[s].set_model_fingerprint("bench");
    if (absl::Status created = store.CreateSession(records[s]); !created.ok()) {
      std::cerr << name << ": " << created << "\n";
      return;
    }
    epochs[s] = store.AcquireSession(tenant, records[s].session_id()).value_or(0);
  }
  std::vector<double> commit_ms;
  for (int t = 0; t < turns; ++t) {
    for (int s = 0; s < sessions; ++s) {
      TurnCommit commit;
      commit.session = records[s];
      commit.epoch = epochs[s];
      const int64_t first = records[s].turn_count();
      for (int i = 0; i < 2; ++i) {
        TurnRecord& turn = commit.turns.emplace_back();
        turn.set_turn_index(first + i);
        turn.set_role(i == 0 ? "user" : "assistant");
        turn.set_text(std::string(600, 'x'));
        for (int k = 0; k < 128; ++k)
          turn.add_token_ids(k);
      }
      const uint64_t next = records[s].next_kv_segment_seq();
      commit.new_kv_segments.push_back(
          Segment(next, "pinned", absl::GetFlag(FLAGS_pinned_entries), entry_bytes));
      commit.new_kv_segments.push_back(
          Segment(next + 1, "window", absl::GetFlag(FLAGS_window_entries), entry_bytes));
      if (next > 0) commit.deleted_kv_segments.push_back(next - 1);
      commit.session.set_turn_count(first + 2);
      commit.session.set_next_kv_segment_seq(next + 2);
      const absl::Time start = absl::Now();
      if (absl::Status committed = store.CommitTurn(commit); !committed.ok()) {
        std::cerr << name << ": " << committed << "\n";
        return;
      }
      commit_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
      records[s] = commit.session;
    }
  }
  std::vector<double> resume_ms;
  int64_t resumed_bytes = 0;
  for (int s = 0; s < sessions; ++s) {
    const std::string& id = records[s].session_id();
    const absl::Time start = absl::Now();
    bool ok = store.AcquireSession(tenant, id).ok() && store.GetSession(tenant, id).ok();
    absl::StatusOr<std::vector<TurnRecord>> transcript = store.LoadTranscript(tenant, id);
    absl::StatusOr<std::vector<KvSegment>> segments = store.LoadKvSegments(tenant, id);
    resume_ms.push_back(absl::ToDoubleMilliseconds(absl::Now() - start));
    ok = ok && transcript.ok() && segments.ok();
    if (!ok) {
      std::cerr << name << ": resume of " << id << " failed\n";
      return;
    }
    for (const KvSegment& segment : *segments)
      resumed_bytes += static_cast<int64_t>(segment.payload.size());
  }
  for (int s = 0; s < sessions; ++s)
    store.DeleteSession(tenant, records[s].session_id()).IgnoreError();
  std::printf("| %s | %d x %d | %.1f | %.1f | %.1f | %.1f | %.1f |\n", name.c_str(), sessions,
              turns, Percentile(commit_ms, 0.5), Percentile(commit_ms, 0.95),
              Percentile(resume_ms, 0.5), Percentile(resume_ms, 0.95),
              static_cast<double>(resumed_bytes) / sessions / (1 << 20));
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::printf(
      "| store | sessions x turns | commit p50 ms | commit p95 ms | resume p50 ms | resume p95 "
      "ms | MiB read per resume |\n| --- | --- | --- | --- | --- | --- | --- |\n");
  if (const std::string path = absl::GetFlag(FLAGS_rocksdb); !path.empty()) {
    auto store = gistmem::store::RocksStore::Open(path);
    if (!store.ok()) {
      std::cerr << store.status() << "\n";
      return 1;
    }
    Measure("rocksdb (synced WriteBatch)", **store);
    store->reset();
    std::filesystem::remove_all(path);
  }
  if (const std::string pool = absl::GetFlag(FLAGS_rados_pool); !pool.empty()) {
#if defined(GISTMEM_HAVE_RADOS)
    auto store = gistmem::store::RadosStore::Open(
        {.pool = pool, .conf_file = absl::GetFlag(FLAGS_ceph_conf)});
    if (!store.ok()) {
      std::cerr << store.status() << "\n";
      return 1;
    }
    Measure("rados (3 replicas)", **store);
#else
    std::cerr << "built without librados\n";
    return 1;
#endif
  }
  return 0;
}
