// Session management through the real server: create, get, list with paging, delete, fork,
// stats, and the standard health and reflection services.
#include <grpcpp/generic/generic_stub.h>
#include <gtest/gtest.h>

#include <future>
#include <set>

#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

class SessionsTest : public ::testing::Test {
 protected:
  TempDir dir_;
  TestServer server_{TestConfig(dir_.path() / "db")};
};

grpc::ByteBuffer Bytes(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::string ToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string bytes;
  for (const grpc::Slice& slice : slices) {
    bytes.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return bytes;
}

TEST_F(SessionsTest, CreateGetAndDelete) {
  grpc::ClientContext context;
  v1::CreateSessionRequest request;
  request.set_system_prompt("You are terse.");
  request.set_session_id("my-session.1");
  (*request.mutable_labels())["owner"] = "tests";
  request.mutable_default_sampling()->set_temperature(0);
  request.mutable_default_sampling()->set_max_tokens(7);
  v1::Session created;
  ASSERT_TRUE(server_.stub().CreateSession(&context, request, &created).ok());
  EXPECT_EQ(created.session_id(), "my-session.1");
  EXPECT_EQ(created.model(), server_.server().model_fingerprint());
  EXPECT_EQ(created.model().rfind("llama-", 0), 0u);
  EXPECT_EQ(created.policy().kind(), v1::MemoryPolicy::FULL);
  EXPECT_EQ(created.turns(), 0);
  EXPECT_GT(created.create_time().seconds(), 0);

  const v1::Session got = GetSession(server_.stub(), "my-session.1");
  EXPECT_EQ(got.system_prompt(), "You are terse.");
  EXPECT_EQ(got.labels().at("owner"), "tests");
  EXPECT_EQ(got.default_sampling().max_tokens(), 7);

  // The session's defaults apply: max_tokens 7 unless the request says otherwise.
  const TurnResult turn = Generate(server_.stub(), "my-session.1", "Hi", {});
  ASSERT_TRUE(turn.status.ok()) << turn.status.error_message();
  EXPECT_LE(turn.end.usage().completion_tokens(), 7);

  grpc::ClientContext again_context;
  v1::Session duplicate;
  EXPECT_EQ(server_.stub().CreateSession(&again_context, request, &duplicate).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  grpc::ClientContext delete_context;
  v1::DeleteSessionRequest del;
  del.set_session_id("my-session.1");
  v1::DeleteSessionResponse deleted;
  ASSERT_TRUE(server_.stub().DeleteSession(&delete_context, del, &deleted).ok());
  grpc::ClientContext get_context;
  v1::GetSessionRequest get;
  get.set_session_id("my-session.1");
  v1::Session gone;
  EXPECT_EQ(server_.stub().GetSession(&get_context, get, &gone).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Generate(server_.stub(), "my-session.1", "Hi", Greedy(2)).status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext delete_again_context;
  EXPECT_EQ(server_.stub().DeleteSession(&delete_again_context, del, &deleted).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

TEST_F(SessionsTest, ServerMakesUniqueIds) {
  const std::string first = CreateSession(server_.stub(), "");
  const std::string second = CreateSession(server_.stub(), "");
  EXPECT_FALSE(first.empty());
  EXPECT_NE(first, second);
}

TEST_F(SessionsTest, ListPagesThroughEverySessionOnce) {
  std::set<std::string> created;
  for (int i = 0; i < 7; ++i)
    created.insert(CreateSession(server_.stub(), "p"));
  std::vector<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    grpc::ClientContext context;
    v1::ListSessionsRequest request;
    request.set_page_size(3);
    request.set_page_token(token);
    v1::ListSessionsResponse response;
    ASSERT_TRUE(server_.stub().ListSessions(&context, request, &response).ok());
    EXPECT_LE(response.sessions_size(), 3);
    for (const v1::Session& session : response.sessions())
      listed.push_back(session.session_id());
    token = response.next_page_token();
    ASSERT_LT(++pages, 10);
  } while (!token.empty());
  EXPECT_EQ(pages, 3);
  EXPECT_TRUE(std::is_sorted(listed.begin(), listed.end()));
  EXPECT_EQ(std::set<std::string>(listed.begin(), listed.end()), created);
  EXPECT_EQ(listed.size(), created.size());

  grpc::ClientContext bad_token_context;
  v1::ListSessionsRequest bad_token;
  bad_token.set_page_token("not a token");
  v1::ListSessionsResponse ignored;
  EXPECT_EQ(server_.stub().ListSessions(&bad_token_context, bad_token, &ignored).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext negative_context;
  v1::ListSessionsRequest negative;
  negative.set_page_size(-1);
  EXPECT_EQ(server_.stub().ListSessions(&negative_context, negative, &ignored).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(SessionsTest, ForkStartsFromTheSameMemoryAndEvolvesAlone) {
  const std::string original = CreateSession(server_.stub(), "Fork me.");
  ASSERT_TRUE(Generate(server_.stub(), original, "First question", Greedy(6)).status.ok());

  grpc::ClientContext context;
  v1::ForkSessionRequest fork;
  fork.set_session_id(original);
  fork.set_new_session_id("the-fork");
  v1::Session forked;
  ASSERT_TRUE(server_.stub().ForkSession(&context, fork, &forked).ok());
  EXPECT_EQ(forked.session_id(), "the-fork");
  const v1::Session source = GetSession(server_.stub(), original);
  EXPECT_EQ(forked.turns(), source.turns());
  EXPECT_EQ(forked.stream_tokens(), source.stream_tokens());

  // Same memory: the same question gets the same greedy reply in both.
  const TurnResult in_original = Generate(server_.stub(), original, "Second", Greedy(8));
  const TurnResult in_fork = Generate(server_.stub(), "the-fork", "Second", Greedy(8));
  ASSERT_TRUE(in_original.status.ok());
  ASSERT_TRUE(in_fork.status.ok());
  EXPECT_EQ(in_original.token_ids, in_fork.token_ids);

  // Independent afterwards.
  ASSERT_TRUE(Append(server_.stub(), "the-fork", "Only the fork reads this.").ok());
  const v1::Session original_after = GetSession(server_.stub(), original);
  const v1::Session fork_after = GetSession(server_.stub(), "the-fork");
  EXPECT_EQ(original_after.stream_tokens(), in_original.end.usage().stream_tokens());
  EXPECT_GT(fork_after.stream_tokens(), original_after.stream_tokens());
  EXPECT_EQ(fork_after.turns(), original_after.turns() + 1);

  grpc::ClientContext delete_context;
  v1::DeleteSessionRequest del;
  del.set_session_id(original);
  v1::DeleteSessionResponse deleted;
  ASSERT_TRUE(server_.stub().DeleteSession(&delete_context, del, &deleted).ok());
  EXPECT_TRUE(Generate(server_.stub(), "the-fork", "Still here?", Greedy(3)).status.ok());
}

TEST_F(SessionsTest, StatsDescribeTheFullCache) {
  const std::string id = CreateSession(server_.stub(), "Stats.");
  const TurnResult turn = Generate(server_.stub(), id, "Count me", Greedy(5));
  ASSERT_TRUE(turn.status.ok());
  grpc::ClientContext context;
  v1::GetSessionStatsRequest request;
  request.set_session_id(id);
  v1::SessionStats stats;
  ASSERT_TRUE(server_.stub().GetSessionStats(&context, request, &stats).ok());
  EXPECT_EQ(stats.session_id(), id);
  EXPECT_EQ(stats.stream_tokens(), turn.end.usage().stream_tokens());
  EXPECT_EQ(stats.raw_tokens(), stats.stream_tokens());
  // Every token read has its entry; a reply cut by max_tokens leaves its last one unread.
  const int64_t read =
      stats.stream_tokens() - (turn.end.finish_reason() == v1::FINISH_REASON_LENGTH ? 1 : 0);
  EXPECT_EQ(stats.retained_entries(), read);
  EXPECT_EQ(stats.window_entries(), read);
  EXPECT_EQ(stats.gist_entries(), 0);
  EXPECT_EQ(stats.sink_entries(), 0);
  EXPECT_DOUBLE_EQ(stats.compression_ratio(), double(stats.stream_tokens()) / read);
  // The cache is the KV pages the session holds: pages of 16 entries of 2 layers x (K + V) x
  // 2 kv heads x 16 dims x 4 bytes (fp32 host pages; bf16 GPU pages: 2 bytes); under full
  // every entry is pinned, so ceil(read / 16).
  const bool cpu = server_.config().device == "cpu";
  const int64_t entry_bytes = 2 * 2 * 2 * 16 * (cpu ? 4 : 2);
  EXPECT_EQ(cpu ? stats.bytes_host() : stats.bytes_gpu(), (read + 15) / 16 * 16 * entry_bytes);
  EXPECT_EQ(cpu ? stats.bytes_gpu() : stats.bytes_host(), 0);
  // Every entry's rows (fp32 in the store), and the transcript.
  EXPECT_GT(stats.bytes_disk(), read * 2 * 2 * 2 * 16 * 4);
  EXPECT_EQ(GetSession(server_.stub(), id).stream_tokens(), stats.stream_tokens());
}

// grpc.health.v1.Health/Check, hand-encoded: HealthCheckRequest{service}.
TEST_F(SessionsTest, HealthCheckReportsServing) {
  grpc::GenericStub generic(server_.channel());
  for (const std::string service : {"", "gistmem.v1.Gistmem"}) {
    std::string request = "\x0a" + std::string(1, static_cast<char>(service.size())) + service;
    if (service.empty()) request.clear();
    const grpc::ByteBuffer request_bytes = Bytes(request);
    grpc::ByteBuffer response;
    grpc::ClientContext context;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&context, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request_bytes,
                      &response, [&done](grpc::Status status) { done.set_value(status); });
    const grpc::Status status = done.get_future().get();
    ASSERT_TRUE(status.ok()) << "service '" << service << "': " << status.error_message();
    EXPECT_EQ(ToString(response), std::string("\x08\x01", 2)) << "SERVING for '" << service << "'";
  }
}

// grpc.reflection.v1alpha: one ServerReflectionRequest{list_services: ""} on the bidi stream.
class ListServicesCall : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  explicit ListServicesCall(grpc::GenericStub& stub) {
    stub.PrepareBidiStreamingCall(&context_,
                                  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                  grpc::StubOptions(), this);
    request_ = Bytes(std::string("\x3a\x00", 2));
    StartWrite(&request_);
    StartRead(&response_);
    StartCall();
  }
  void OnWriteDone(bool) override { StartWritesDone(); }
  void OnReadDone(bool ok) override {
    if (ok) text_ = ToString(response_);
  }
  void OnDone(const grpc::Status& status) override { done_.set_value(status); }
  std::pair<grpc::Status, std::string> Wait() { return {done_.get_future().get(), text_}; }

 private:
  grpc::ClientContext context_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
  std::string text_;
  std::promise<grpc::Status> done_;
};

TEST_F(SessionsTest, ReflectionListsTheService) {
  grpc::GenericStub generic(server_.channel());
  ListServicesCall call(generic);
  const auto [status, response] = call.Wait();
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_NE(response.find("gistmem.v1.Gistmem"), std::string::npos);
  EXPECT_NE(response.find("grpc.health.v1.Health"), std::string::npos);
}

}  // namespace
}  // namespace gistmem::testing
