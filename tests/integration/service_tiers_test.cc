// Where a session's cache is, as GetSessionStats and the Prometheus metrics report it: in the
// engine pool's tier while the session is in memory (host for the CPU engine, gpu for the CUDA
// engine: GISTMEM_TEST_DEVICE=cuda), only on disk once it left memory for the store, and back in
// the tier, continuing exactly, when it is used again.
#include <gtest/gtest.h>
#include <prometheus/metric_family.h>

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

}  // namespace
}  // namespace gistmem::testing
