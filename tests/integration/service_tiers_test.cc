// Where a session's cache is, as GetSessionStats and the Prometheus metrics report it: in the
// engine pool's tier while the session is in memory (host for the CPU engine, gpu for the CUDA
// engine: GISTMEM_TEST_DEVICE=cuda), parked in the host tier when the pool's budget pushes it
// out, only on disk once it left memory for the store, and back in the pool, continuing
// exactly, when it is used again. On the CPU engine the host tier is off by default (its pool
// is host memory); these tests turn it on, so the same parking runs on both engines.
#include <gtest/gtest.h>
#include <prometheus/metric_family.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "service/metrics.h"
#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

// The value of gauge `family`{label="value"} (summed over its other labels); -1 when absent.
double Gauge(const std::string& family, const std::string& label, const std::string& value) {
  double sum = -1;
  for (const prometheus::MetricFamily& metrics : service::metrics::ScrapeTarget()->Collect()) {
    if (metrics.name != family) continue;
    for (const prometheus::ClientMetric& metric : metrics.metric) {
      for (const prometheus::ClientMetric::Label& l : metric.label) {
        if (l.name == label && l.value == value) sum = (sum < 0 ? 0 : sum) + metric.gauge.value;
      }
    }
  }
  return sum;
}

struct Tiers {
  std::string here, other;  // the pool's tier and the one no page may be in
};

Tiers TiersOf(const TestServer& server) {
  if (server.config().device == "cpu") return {"host", "gpu"};
  return {"gpu", "host"};
}

int64_t BytesIn(const v1::SessionStats& stats, const std::string& tier) {
  return tier == "gpu" ? stats.bytes_gpu() : stats.bytes_host();
}

// The value of counter `family`{label="value"}; -1 when absent.
double Counter(const std::string& family, const std::string& label, const std::string& value) {
  for (const prometheus::MetricFamily& metrics : service::metrics::ScrapeTarget()->Collect()) {
    if (metrics.name != family) continue;
    for (const prometheus::ClientMetric& metric : metrics.metric) {
      for (const prometheus::ClientMetric::Label& l : metric.label) {
        if (l.name == label && l.value == value) return metric.counter.value;
      }
    }
  }
  return -1;
}

// How many times the store's `op` was read (the histogram's sample count).
uint64_t StoreReads(const std::string& op) {
  for (const prometheus::MetricFamily& metrics : service::metrics::ScrapeTarget()->Collect()) {
    if (metrics.name != "gistmem_store_read_seconds") continue;
    for (const prometheus::ClientMetric& metric : metrics.metric) {
      for (const prometheus::ClientMetric::Label& l : metric.label) {
        if (l.name == "op" && l.value == op) return metric.histogram.sample_count;
      }
    }
  }
  return 0;
}

// Every idle session leaves the pool (its budget is below one page) for a host tier of
// `host_bytes`.
service::ServerConfig ParkingConfig(const std::filesystem::path& db, int64_t host_bytes) {
  service::ServerConfig config = TestConfig(db);
  config.limits.max_cache_bytes = 1024;
  config.limits.max_host_cache_bytes = host_bytes;
  return config;
}

TEST(TiersTest, StatsAndMetricsReportThePoolsTier) {
  TempDir dir;
  TestServer server(TestConfig(dir.path() / "db"));
  const Tiers tiers = TiersOf(server);
  EXPECT_EQ(server.server().engine().kv_pool().tier(), tiers.here);
  const std::string id = CreateSession(server.stub(), "Tiers.");
  ASSERT_TRUE(Generate(server.stub(), id, "Where is the cache?", Greedy(6)).status.ok());

  const v1::SessionStats stats = GetStats(server.stub(), id);
  EXPECT_GT(BytesIn(stats, tiers.here), 0);
  EXPECT_EQ(BytesIn(stats, tiers.other), 0);
  EXPECT_EQ(BytesIn(stats, tiers.here), server.server().sessions().cache_bytes_in_memory());

  EXPECT_GE(Gauge("gistmem_sessions", "tier", tiers.here), 1);
  EXPECT_EQ(Gauge("gistmem_sessions", "tier", tiers.other), 0);
  EXPECT_GE(Gauge("gistmem_cache_bytes", "tier", tiers.here), BytesIn(stats, tiers.here));
  EXPECT_EQ(Gauge("gistmem_cache_bytes", "tier", tiers.other), 0);
}

// With room for one session in memory, the idle one goes to the store: no bytes in any memory
// tier, still on disk; used again, it comes back into the tier and continues like a session
// that never left.
TEST(TiersTest, SessionLeavesForTheStoreAndComesBackExactly) {
  TempDir reference_dir;
  TestServer roomy(TestConfig(reference_dir.path() / "db"));
  TempDir dir;
  service::ServerConfig config = TestConfig(dir.path() / "db");
  config.limits.max_sessions_in_memory = 1;
  TestServer tight(config);
  const Tiers tiers = TiersOf(tight);

  const std::string reference = CreateSession(roomy.stub(), "Tiers.");
  const std::string a = CreateSession(tight.stub(), "Tiers.");
  const std::string b = CreateSession(tight.stub(), "Other.");
  const std::vector<std::string> turns = {"First turn.", "Second turn.", "Third turn."};
  ASSERT_TRUE(Generate(roomy.stub(), reference, turns[0], Greedy(8)).status.ok());
  ASSERT_TRUE(Generate(tight.stub(), a, turns[0], Greedy(8)).status.ok());
  EXPECT_GT(BytesIn(GetStats(tight.stub(), a), tiers.here), 0);

  ASSERT_TRUE(Generate(tight.stub(), b, "Push the other one out.", Greedy(8)).status.ok());
  const v1::SessionStats out = GetStats(tight.stub(), a);
  EXPECT_EQ(out.bytes_gpu(), 0);
  EXPECT_EQ(out.bytes_host(), 0);
  EXPECT_GT(out.bytes_disk(), 0);
  EXPECT_GT(BytesIn(GetStats(tight.stub(), b), tiers.here), 0);

  for (size_t t = 1; t < turns.size(); ++t) {
    const TurnResult expected = Generate(roomy.stub(), reference, turns[t], Greedy(8));
    const TurnResult actual = Generate(tight.stub(), a, turns[t], Greedy(8));
    ASSERT_TRUE(actual.status.ok()) << actual.status.error_message();
    EXPECT_EQ(actual.token_ids, expected.token_ids) << "turn " << t;
    EXPECT_GT(BytesIn(GetStats(tight.stub(), a), tiers.here), 0);
    EXPECT_EQ(BytesIn(GetStats(tight.stub(), a), tiers.other), 0);
  }
}

// Pushed out of the pool, an idle session is parked in the host tier: its bytes are reported
// there, no page of the pool is its, and its next turn brings it back without reading the
// store, continuing token for token like a session that never moved.
TEST(TiersTest, IdleSessionIsParkedInTheHostTierAndComesBackExactly) {
  TempDir reference_dir;
  TestServer roomy(TestConfig(reference_dir.path() / "db"));
  TempDir dir;
  TestServer tight(ParkingConfig(dir.path() / "db", int64_t{64} << 20));
  const Tiers tiers = TiersOf(tight);

  const std::string reference = CreateSession(roomy.stub(), "Tiers.");
  const std::string id = CreateSession(tight.stub(), "Tiers.");
  const std::vector<std::string> turns = {"First turn.", "Second turn.", "Third turn."};
  for (size_t t = 0; t < turns.size(); ++t) {
    const double parks = Counter("gistmem_host_tier_moves_total", "direction", "park");
    const double unparks = Counter("gistmem_host_tier_moves_total", "direction", "unpark");
    const uint64_t segment_reads = StoreReads("LoadKvSegments");
    const TurnResult expected = Generate(roomy.stub(), reference, turns[t], Greedy(8));
    const TurnResult actual = Generate(tight.stub(), id, turns[t], Greedy(8));
    ASSERT_TRUE(actual.status.ok()) << actual.status.error_message();
    EXPECT_EQ(actual.token_ids, expected.token_ids) << "turn " << t;
    if (t > 0) {  // the first turn loads the new session from the store, the others do not
      EXPECT_EQ(StoreReads("LoadKvSegments"), segment_reads) << "turn " << t << " read the store";
    }
    EXPECT_EQ(Counter("gistmem_host_tier_moves_total", "direction", "park"), parks + 1);
    EXPECT_EQ(Counter("gistmem_host_tier_moves_total", "direction", "unpark"),
              unparks + (t > 0 ? 1 : 0));

    const v1::SessionStats stats = GetStats(tight.stub(), id);
    EXPECT_EQ(stats.bytes_gpu(), 0);
    EXPECT_GT(stats.bytes_host(), 0);
    EXPECT_EQ(stats.bytes_host(), tight.server().sessions().parked_bytes());
    EXPECT_EQ(tight.server().sessions().sessions_parked(), 1);
    EXPECT_EQ(tight.server().sessions().sessions_in_memory(), 1);
    EXPECT_EQ(tight.server().sessions().cache_bytes_in_memory(), 0);
    EXPECT_EQ(tight.server().engine().kv_pool().pages_in_use(), 0) << tiers.here;
    EXPECT_GE(Gauge("gistmem_sessions", "tier", "host"), 1);
  }
  // Deleted while parked: its host memory goes too.
  grpc::ClientContext context;
  v1::DeleteSessionRequest request;
  request.set_session_id(id);
  v1::DeleteSessionResponse deleted;
  ASSERT_TRUE(tight.stub().DeleteSession(&context, request, &deleted).ok());
  EXPECT_EQ(tight.server().sessions().sessions_parked(), 0);
  EXPECT_EQ(tight.server().sessions().parked_bytes(), 0);
}

// A full host tier lets its least recently parked session go to the store (it comes back from
// there, exactly); a session larger than the whole tier goes straight to the store.
TEST(TiersTest, AFullHostTierSendsTheLeastRecentlyParkedToTheStore) {
  int64_t one_session = 0;
  {
    TempDir dir;
    TestServer probe(ParkingConfig(dir.path() / "db", int64_t{64} << 20));
    const std::string id = CreateSession(probe.stub(), "Tiers.");
    ASSERT_TRUE(Generate(probe.stub(), id, "First turn.", Greedy(8)).status.ok());
    one_session = probe.server().sessions().parked_bytes();
    ASSERT_GT(one_session, 0);
  }
  TempDir reference_dir;
  TestServer roomy(TestConfig(reference_dir.path() / "db"));
  TempDir dir;
  TestServer tight(ParkingConfig(dir.path() / "db", one_session + one_session / 2));
  const std::string reference = CreateSession(roomy.stub(), "Tiers.");
  const std::string a = CreateSession(tight.stub(), "Tiers.");
  const std::string b = CreateSession(tight.stub(), "Tiers.");
  ASSERT_TRUE(Generate(roomy.stub(), reference, "First turn.", Greedy(8)).status.ok());
  ASSERT_TRUE(Generate(tight.stub(), a, "First turn.", Greedy(8)).status.ok());
  ASSERT_TRUE(Generate(tight.stub(), b, "First turn.", Greedy(8)).status.ok());
  EXPECT_EQ(tight.server().sessions().sessions_parked(), 1);
  EXPECT_EQ(GetStats(tight.stub(), b).bytes_host(), one_session);
  const v1::SessionStats out = GetStats(tight.stub(), a);
  EXPECT_EQ(out.bytes_host(), 0);
  EXPECT_EQ(out.bytes_gpu(), 0);
  EXPECT_GT(out.bytes_disk(), 0);

  const uint64_t segment_reads = StoreReads("LoadKvSegments");
  const TurnResult expected = Generate(roomy.stub(), reference, "Second turn.", Greedy(8));
  const TurnResult actual = Generate(tight.stub(), a, "Second turn.", Greedy(8));
  ASSERT_TRUE(actual.status.ok()) << actual.status.error_message();
  EXPECT_EQ(actual.token_ids, expected.token_ids);
  EXPECT_EQ(StoreReads("LoadKvSegments"), segment_reads + 1);  // a came from the store

  TempDir small_dir;
  TestServer small(ParkingConfig(small_dir.path() / "db", 1));
  const std::string c = CreateSession(small.stub(), "Tiers.");
  ASSERT_TRUE(Generate(small.stub(), c, "First turn.", Greedy(8)).status.ok());
  EXPECT_EQ(small.server().sessions().sessions_parked(), 0);
  EXPECT_EQ(small.server().sessions().sessions_in_memory(), 0);
}

}  // namespace
}  // namespace gistmem::testing
