// Many sessions at once: the scheduler batches their steps, and every session's tokens are
// the same as when it runs alone. Turns of one session are serialized.
#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

constexpr int kSessions = 6;

std::vector<std::vector<std::string>> Conversations() {
  std::vector<std::vector<std::string>> conversations;
  for (int i = 0; i < kSessions; ++i) {
    // Different lengths, so that prefill chunks and decode tokens share steps.
    conversations.push_back({"Session " + std::to_string(i) + std::string(i * 7, '!'),
                             "Second turn of " + std::to_string(i)});
  }
  return conversations;
}

std::vector<std::vector<int32_t>> RunConversation(v1::Gistmem::Stub& stub, int index,
                                                  const std::vector<std::string>& messages) {
  const std::string id = CreateSession(stub, "Concurrent " + std::to_string(index % 2));
  std::vector<std::vector<int32_t>> replies;
  for (const std::string& message : messages) {
    const TurnResult turn = Generate(stub, id, message, Greedy(20 + index));
    EXPECT_TRUE(turn.status.ok()) << turn.status.error_message();
    replies.push_back(turn.token_ids);
  }
  return replies;
}

TEST(ConcurrencyTest, ConcurrentSessionsEqualSerialRuns) {
  TempDir dir;
  service::ServerConfig config = TestConfig(dir.path() / "db");
  config.scheduler.prefill_chunk = 8;  // prompts take several steps, overlapping decodes
  TestServer server(config);
  const auto conversations = Conversations();

  std::vector<std::vector<std::vector<int32_t>>> serial;
  for (int i = 0; i < kSessions; ++i) {
    serial.push_back(RunConversation(server.stub(), i, conversations[i]));
  }
  EXPECT_EQ(server.server().scheduler().max_sequences_in_step(), 1);

  std::vector<std::vector<std::vector<int32_t>>> concurrent(kSessions);
  std::vector<std::thread> threads;
  for (int i = 0; i < kSessions; ++i) {
    threads.emplace_back(
        [&, i] { concurrent[i] = RunConversation(server.stub(), i, conversations[i]); });
  }
  for (std::thread& thread : threads)
    thread.join();

  for (int i = 0; i < kSessions; ++i)
    EXPECT_EQ(concurrent[i], serial[i]) << "session " << i;
  EXPECT_GT(server.server().scheduler().max_sequences_in_step(), 1)
      << "the sessions never shared a forward step";
}

// Without if_idle, turns sent at once to one session run one after the other.
TEST(ConcurrencyTest, TurnsOfOneSessionAreSerialized) {
  TempDir dir;
  TestServer server(TestConfig(dir.path() / "db"));
  const std::string id = CreateSession(server.stub(), "One at a time.");
  constexpr int kTurns = 4;
  std::vector<TurnResult> results(kTurns);
  std::vector<std::thread> threads;
  for (int i = 0; i < kTurns; ++i) {
    threads.emplace_back([&, i] {
      results[i] = Generate(server.stub(), id, "Turn " + std::to_string(i), Greedy(6));
    });
  }
  for (std::thread& thread : threads)
    thread.join();
  std::set<int64_t> indices;
  int64_t longest_stream = 0;
  for (const TurnResult& result : results) {
    ASSERT_TRUE(result.status.ok()) << result.status.error_message();
    indices.insert(result.end.turn_index());
    longest_stream = std::max(longest_stream, result.end.usage().stream_tokens());
  }
  EXPECT_EQ(indices, (std::set<int64_t>{2, 4, 6, 8}));
  const v1::Session session = GetSession(server.stub(), id);
  EXPECT_EQ(session.turns(), 1 + 2 * kTurns);
  EXPECT_EQ(session.stream_tokens(), longest_stream);
}

}  // namespace
}  // namespace gistmem::testing
