// Turns that do not finish: a client that cancels or goes away, a deadline, CancelTurn on a
// Chat stream, a session deleted mid-turn, and if_idle on a busy session. Nothing of such a
// turn is stored, the session stays usable (its next turn is what it would have been without
// the cancelled one), and no work is left behind in the scheduler.
#include <gtest/gtest.h>

#include <thread>

#include "absl/time/time.h"
#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

using grpc::StatusCode;

// Long replies: thousands of tokens, so a cancel always lands mid-turn.
constexpr int kLongReply = 1800;

class CancelTest : public ::testing::Test {
 protected:
  static service::ServerConfig Config(const std::filesystem::path& db) {
    service::ServerConfig config = TestConfig(db);
    config.limits.max_new_tokens = kLongReply;
    return config;
  }

  // A session with one finished turn, and its twin, which the cancelled turn never touches.
  void MakeTwins(std::string* session, std::string* twin) {
    *session = CreateSession(server_.stub(), "Cancel test.");
    *twin = CreateSession(server_.stub(), "Cancel test.");
    for (const std::string* id : {session, twin}) {
      ASSERT_TRUE(Generate(server_.stub(), *id, "Warm up", Greedy(4)).status.ok());
    }
  }

  // The cancelled turn left nothing: same metadata as the twin and the same next reply.
  void ExpectUntouched(const std::string& session, const std::string& twin) {
    ASSERT_TRUE(server_.WaitForIdleScheduler()) << "a cancelled job is still running";
    const v1::Session after = GetSession(server_.stub(), session);
    const v1::Session reference = GetSession(server_.stub(), twin);
    EXPECT_EQ(after.turns(), reference.turns());
    EXPECT_EQ(after.stream_tokens(), reference.stream_tokens());
    const TurnResult next = Generate(server_.stub(), session, "After", Greedy(8));
    const TurnResult expected = Generate(server_.stub(), twin, "After", Greedy(8));
    ASSERT_TRUE(next.status.ok()) << next.status.error_message();
    EXPECT_EQ(next.token_ids, expected.token_ids);
    EXPECT_EQ(next.end.usage().stream_tokens(), expected.end.usage().stream_tokens());
    // Also after a restart, from what the store holds.
    server_.Restart();
    EXPECT_EQ(Generate(server_.stub(), session, "Again", Greedy(6)).token_ids,
              Generate(server_.stub(), twin, "Again", Greedy(6)).token_ids);
  }

  TempDir dir_;
  TestServer server_{Config(dir_.path() / "db")};
};

TEST_F(CancelTest, ClientCancelMidStreamStoresNothing) {
  std::string session, twin;
  MakeTwins(&session, &twin);
  GenerateOptions options;
  options.cancel_after_first_delta = true;
  const TurnResult cancelled =
      Generate(server_.stub(), session, "Talk for a long time", Greedy(kLongReply), options);
  EXPECT_EQ(cancelled.status.error_code(), StatusCode::CANCELLED);
  EXPECT_FALSE(cancelled.ended);
  ExpectUntouched(session, twin);
}

TEST_F(CancelTest, DeadlineMidGenerationIsDeadlineExceeded) {
  std::string session, twin;
  MakeTwins(&session, &twin);
  GenerateOptions options;
  options.deadline = std::chrono::milliseconds(30);
  const TurnResult late =
      Generate(server_.stub(), session, "Talk for a long time", Greedy(kLongReply), options);
  if (late.status.ok()) GTEST_SKIP() << "the reply ended within the deadline";
  EXPECT_EQ(late.status.error_code(), StatusCode::DEADLINE_EXCEEDED);
  ExpectUntouched(session, twin);
}

TEST_F(CancelTest, AppendPastItsDeadlineStoresNothing) {
  std::string session, twin;
  MakeTwins(&session, &twin);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() - std::chrono::seconds(1));
  v1::AppendRequest request;
  request.set_session_id(session);
  request.mutable_message()->set_content("Too late");
  v1::AppendResponse response;
  EXPECT_EQ(server_.stub().Append(&context, request, &response).error_code(),
            StatusCode::DEADLINE_EXCEEDED);
  ExpectUntouched(session, twin);
}

TEST_F(CancelTest, CancelTurnEndsTheTurnAndTheStreamGoesOn) {
  std::string session, twin;
  MakeTwins(&session, &twin);
  ChatClient chat(server_.stub(), session);
  const TurnResult cancelled = chat.Turn("Talk for a long time", Greedy(kLongReply), true);
  ASSERT_TRUE(cancelled.ended) << cancelled.status.error_message();
  EXPECT_EQ(cancelled.end.finish_reason(), v1::FINISH_REASON_CANCELLED);
  EXPECT_LT(cancelled.end.usage().completion_tokens(), kLongReply);
  const int64_t stream_before = GetSession(server_.stub(), twin).stream_tokens();
  EXPECT_EQ(cancelled.end.usage().stream_tokens(), stream_before);

  // The same stream takes the next turn, which matches the twin's.
  const TurnResult next = chat.Turn("Short one", Greedy(5));
  ASSERT_TRUE(next.ended);
  EXPECT_EQ(next.end.turn_index(), 4);
  EXPECT_EQ(next.token_ids, Generate(server_.stub(), twin, "Short one", Greedy(5)).token_ids);
  EXPECT_TRUE(chat.Close().ok());
}

TEST_F(CancelTest, ChatClientDisconnectMidTurnStoresNothing) {
  std::string session, twin;
  MakeTwins(&session, &twin);
  {
    ChatClient chat(server_.stub(), session);
    v1::ChatRequest request;
    request.set_session_id(session);
    request.mutable_turn()->mutable_message()->set_content("Talk for a long time");
    *request.mutable_turn()->mutable_sampling() = Greedy(kLongReply);
    ASSERT_TRUE(chat.stream().Write(request));
    v1::ChatEvent event;
    while (chat.stream().Read(&event) && !event.has_delta()) {
    }
    chat.CancelCall();
    EXPECT_EQ(chat.stream().Finish().error_code(), StatusCode::CANCELLED);
  }
  ExpectUntouched(session, twin);
}

TEST_F(CancelTest, DeletingASessionEndsItsRunningTurn) {
  const std::string id = CreateSession(server_.stub(), "");
  TurnResult turn;
  std::thread generating([&] {
    GenerateOptions options;
    turn = Generate(server_.stub(), id, "Talk for a long time", Greedy(kLongReply), options);
  });
  // Delete once the turn has started streaming.
  while (GetSession(server_.stub(), id).turns() == 0 &&
         server_.server().scheduler().jobs_in_flight() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  grpc::ClientContext context;
  v1::DeleteSessionRequest del;
  del.set_session_id(id);
  v1::DeleteSessionResponse deleted;
  ASSERT_TRUE(server_.stub().DeleteSession(&context, del, &deleted).ok());
  generating.join();
  if (turn.status.ok()) GTEST_SKIP() << "the turn was committed before the delete";
  EXPECT_EQ(turn.status.error_code(), StatusCode::NOT_FOUND);
  EXPECT_TRUE(server_.WaitForIdleScheduler());
  grpc::ClientContext get_context;
  v1::GetSessionRequest get;
  get.set_session_id(id);
  v1::Session gone;
  EXPECT_EQ(server_.stub().GetSession(&get_context, get, &gone).error_code(),
            StatusCode::NOT_FOUND);
}

TEST_F(CancelTest, IfIdleOnABusySessionIsAborted) {
  const std::string id = CreateSession(server_.stub(), "");
  ChatClient chat(server_.stub(), id);
  v1::ChatRequest request;
  request.set_session_id(id);
  request.mutable_turn()->mutable_message()->set_content("Talk for a long time");
  *request.mutable_turn()->mutable_sampling() = Greedy(kLongReply);
  ASSERT_TRUE(chat.stream().Write(request));
  v1::ChatEvent event;
  ASSERT_TRUE(chat.stream().Read(&event));
  ASSERT_TRUE(event.has_start());

  GenerateOptions options;
  options.if_idle = true;
  const TurnResult refused = Generate(server_.stub(), id, "Me too", Greedy(2), options);
  v1::ChatRequest cancel;
  cancel.mutable_cancel();
  chat.stream().Write(cancel);
  while (chat.stream().Read(&event) && !event.has_end()) {
  }
  if (refused.status.ok()) GTEST_SKIP() << "the long turn ended before the second arrived";
  EXPECT_EQ(refused.status.error_code(), StatusCode::ABORTED);
  EXPECT_TRUE(chat.Close().ok());
  // Without if_idle the same request waits its turn and runs.
  EXPECT_TRUE(Generate(server_.stub(), id, "Me too", Greedy(2)).status.ok());
}

TEST_F(CancelTest, ShutdownEndsOpenChatStreams) {
  const std::string id = CreateSession(server_.stub(), "");
  ChatClient chat(server_.stub(), id);
  ASSERT_TRUE(chat.Turn("Hello", Greedy(3)).ended);
  server_.Stop();  // the stream is idle between turns: it ends UNAVAILABLE at once
  v1::ChatEvent event;
  EXPECT_FALSE(chat.stream().Read(&event));
  EXPECT_EQ(chat.stream().Finish().error_code(), StatusCode::UNAVAILABLE);
}

// Starts a long Generate on another thread and returns once the scheduler runs it.
std::thread StartLongTurn(TestServer& server, const std::string& id, TurnResult& result) {
  std::thread thread([&server, id, &result] {
    result = Generate(server.stub(), id, "Talk for a long time", Greedy(kLongReply));
  });
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (server.server().scheduler().jobs_in_flight() == 0 &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return thread;
}

TEST_F(CancelTest, ShutdownLetsARunningTurnFinishWithinTheGrace) {
  const std::string id = CreateSession(server_.stub(), "");
  TurnResult turn;
  std::thread generating = StartLongTurn(server_, id, turn);
  server_.Restart();  // grace 5 s: the turn ends and is stored first
  generating.join();
  ASSERT_TRUE(turn.status.ok()) << turn.status.error_message();
  ASSERT_TRUE(turn.ended);
  const v1::Session session = GetSession(server_.stub(), id);
  EXPECT_EQ(session.turns(), 3);
  EXPECT_EQ(session.stream_tokens(), turn.end.usage().stream_tokens());
}

TEST(ShutdownTest, TurnsStillRunningAfterTheGraceAreCancelled) {
  TempDir dir;
  service::ServerConfig config = TestConfig(dir.path() / "db");
  config.limits.max_new_tokens = kLongReply;
  config.shutdown_grace = absl::ZeroDuration();
  TestServer server(config);
  const std::string id = CreateSession(server.stub(), "");
  TurnResult turn;
  std::thread generating = StartLongTurn(server, id, turn);
  server.Restart();
  generating.join();
  EXPECT_FALSE(turn.status.ok());
  EXPECT_FALSE(turn.ended);
  const v1::Session session = GetSession(server.stub(), id);
  EXPECT_EQ(session.turns(), 0);
  EXPECT_EQ(session.stream_tokens(), 0);
  EXPECT_TRUE(Generate(server.stub(), id, "Still usable", Greedy(3)).status.ok());
}

// Every place in memory is held by a busy session: a turn of another one cannot load.
TEST(MemoryLimitTest, AllSessionsInMemoryBusyIsResourceExhausted) {
  TempDir dir;
  service::ServerConfig config = TestConfig(dir.path() / "db");
  config.limits.max_new_tokens = kLongReply;
  config.limits.max_sessions_in_memory = 1;
  TestServer server(config);
  const std::string busy = CreateSession(server.stub(), "");
  const std::string other = CreateSession(server.stub(), "");
  ChatClient chat(server.stub(), busy);
  v1::ChatRequest request;
  request.set_session_id(busy);
  request.mutable_turn()->mutable_message()->set_content("Talk for a long time");
  *request.mutable_turn()->mutable_sampling() = Greedy(kLongReply);
  ASSERT_TRUE(chat.stream().Write(request));
  v1::ChatEvent event;
  ASSERT_TRUE(chat.stream().Read(&event));
  ASSERT_TRUE(event.has_start());
  const grpc::Status refused = Append(server.stub(), other, "No room");
  v1::ChatRequest cancel;
  cancel.mutable_cancel();
  chat.stream().Write(cancel);
  bool cancelled = false;
  while (chat.stream().Read(&event)) {
    if (event.has_end()) {
      cancelled = event.end().finish_reason() == v1::FINISH_REASON_CANCELLED;
      break;
    }
  }
  if (!cancelled) GTEST_SKIP() << "the long turn ended before the second request arrived";
  EXPECT_EQ(refused.error_code(), StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_TRUE(chat.Close().ok());
  // Once the busy session is idle it leaves memory for the other one.
  EXPECT_TRUE(Append(server.stub(), other, "Room now").ok());
}

}  // namespace
}  // namespace gistmem::testing
