// Sessions outlive the server: after a restart, or after leaving memory, a session continues
// token for token as if nothing had happened, from its stored KV cache. A session stored for
// another model is refused.
#include <gtest/gtest.h>

#include "absl/time/clock.h"
#include "service/runtime.h"
#include "store/rocks_store.h"
#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

const std::vector<std::string> kConversation = {"Hello, who are you?", "What can you do?",
                                                "Tell me more."};

TEST(ResumeTest, RestartGivesTheSameGreedyContinuation) {
  TempDir dir;
  TestServer server(TestConfig(dir.path() / "db"));
  // The reference: every turn on one server, in one go.
  const std::string uninterrupted = CreateSession(server.stub(), "Resume test.");
  std::vector<TurnResult> expected;
  for (const std::string& message : kConversation) {
    expected.push_back(Generate(server.stub(), uninterrupted, message, Greedy(12)));
    ASSERT_TRUE(expected.back().status.ok());
  }

  // The same conversation with a restart (server destroyed, a new one on the database) after
  // the first turn and again after the second.
  const std::string resumed = CreateSession(server.stub(), "Resume test.");
  for (size_t i = 0; i < kConversation.size(); ++i) {
    const TurnResult turn = Generate(server.stub(), resumed, kConversation[i], Greedy(12));
    ASSERT_TRUE(turn.status.ok()) << turn.status.error_message();
    EXPECT_EQ(turn.token_ids, expected[i].token_ids) << "turn " << i;
    EXPECT_EQ(turn.end.usage().stream_tokens(), expected[i].end.usage().stream_tokens());
    EXPECT_EQ(turn.end.usage().cached_tokens(), expected[i].end.usage().cached_tokens());
    server.Restart();
  }
  const v1::Session session = GetSession(server.stub(), resumed);
  EXPECT_EQ(session.turns(), 1 + 2 * static_cast<int64_t>(kConversation.size()));
  EXPECT_EQ(session.stream_tokens(), expected.back().end.usage().stream_tokens());
}

TEST(ResumeTest, CutReplyContinuesAfterRestart) {
  TempDir dir;
  TestServer server(TestConfig(dir.path() / "db"));
  const std::string whole = CreateSession(server.stub(), "");
  const TurnResult longer = Generate(server.stub(), whole, "Go on and on", Greedy(10));
  const std::string split = CreateSession(server.stub(), "");
  const TurnResult first = Generate(server.stub(), split, "Go on and on", Greedy(5));
  ASSERT_TRUE(first.status.ok());
  if (first.end.finish_reason() != v1::FINISH_REASON_LENGTH) {
    GTEST_SKIP() << "the fixture model stopped within 5 tokens";
  }
  server.Restart();
  const TurnResult rest = Generate(server.stub(), split, "", Greedy(5));
  ASSERT_TRUE(rest.status.ok());
  std::vector<int32_t> joined = first.token_ids;
  joined.insert(joined.end(), rest.token_ids.begin(), rest.token_ids.end());
  EXPECT_EQ(joined, longer.token_ids);
}

// With room for one session in memory, two sessions take turns leaving it; they come back
// from the store and continue exactly.
TEST(ResumeTest, SessionsLeavingMemoryComeBackFromTheStore) {
  TempDir reference_dir;
  TestServer roomy(TestConfig(reference_dir.path() / "db"));
  TempDir dir;
  service::ServerConfig tight_config = TestConfig(dir.path() / "db");
  tight_config.limits.max_sessions_in_memory = 1;
  TestServer tight(tight_config);

  std::vector<std::string> roomy_ids = {CreateSession(roomy.stub(), "A"),
                                        CreateSession(roomy.stub(), "B")};
  std::vector<std::string> tight_ids = {CreateSession(tight.stub(), "A"),
                                        CreateSession(tight.stub(), "B")};
  for (const std::string& message : kConversation) {
    for (size_t s = 0; s < 2; ++s) {
      const TurnResult expected = Generate(roomy.stub(), roomy_ids[s], message, Greedy(8));
      const TurnResult actual = Generate(tight.stub(), tight_ids[s], message, Greedy(8));
      ASSERT_TRUE(actual.status.ok()) << actual.status.error_message();
      EXPECT_EQ(actual.token_ids, expected.token_ids);
      EXPECT_LE(tight.server().sessions().sessions_in_memory(), 1);
    }
  }
  EXPECT_EQ(roomy.server().sessions().sessions_in_memory(), 2);
}

// A byte budget smaller than one session keeps nothing idle in memory (no host tier either:
// service_tiers_test parks); turns still work.
TEST(ResumeTest, ByteBudgetEvictsIdleSessions) {
  TempDir dir;
  service::ServerConfig config = TestConfig(dir.path() / "db");
  config.limits.max_cache_bytes = 1024;
  config.limits.max_host_cache_bytes = 0;
  TestServer server(config);
  const std::string id = CreateSession(server.stub(), "Budget.");
  ASSERT_TRUE(Generate(server.stub(), id, "One", Greedy(4)).status.ok());
  EXPECT_EQ(server.server().sessions().sessions_in_memory(), 0);
  EXPECT_EQ(server.server().sessions().cache_bytes_in_memory(), 0);
  ASSERT_TRUE(Generate(server.stub(), id, "Two", Greedy(4)).status.ok());
}

TEST(ResumeTest, SessionOfAnotherModelIsFailedPrecondition) {
  TempDir dir;
  {
    absl::StatusOr<std::unique_ptr<store::RocksStore>> store =
        store::RocksStore::Open(dir.path() / "db");
    ASSERT_TRUE(store.ok()) << store.status();
    store::SessionRecord record;
    record.set_tenant(std::string(service::kDefaultTenant));
    record.set_session_id("old-model");
    record.set_model_fingerprint("llama-0123456789abcdef");
    record.mutable_policy()->set_kind(v1::MemoryPolicy::FULL);
    record.set_create_time_micros(absl::ToUnixMicros(absl::Now()));
    record.set_update_time_micros(record.create_time_micros());
    ASSERT_TRUE((*store)->CreateSession(record).ok());
  }
  TestServer server(TestConfig(dir.path() / "db"));
  const TurnResult turn = Generate(server.stub(), "old-model", "Hi", Greedy(3));
  EXPECT_EQ(turn.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(turn.status.error_message().find("llama-0123456789abcdef"), std::string::npos);
  EXPECT_EQ(Append(server.stub(), "old-model", "Hi").error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  ChatClient chat(server.stub(), "old-model");
  EXPECT_EQ(chat.Turn("Hi", Greedy(3)).status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);

  grpc::ClientContext fork_context;
  v1::ForkSessionRequest fork;
  fork.set_session_id("old-model");
  v1::Session forked;
  EXPECT_EQ(server.stub().ForkSession(&fork_context, fork, &forked).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  // Its metadata stays readable, and it can be deleted.
  EXPECT_EQ(GetSession(server.stub(), "old-model").model(), "llama-0123456789abcdef");
  grpc::ClientContext delete_context;
  v1::DeleteSessionRequest del;
  del.set_session_id("old-model");
  v1::DeleteSessionResponse deleted;
  EXPECT_TRUE(server.stub().DeleteSession(&delete_context, del, &deleted).ok());
}

}  // namespace
}  // namespace gistmem::testing
