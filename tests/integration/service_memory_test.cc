// Memory policies through the real service: sessions ask for full, window, pool or gist; the
// cache really shrinks (stats), only what the policy retains is stored, and a compressed
// session resumed after a restart continues token for token as if uninterrupted.
#include <gtest/gtest.h>

#include <fstream>

#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

// The fixture checkpoint plus a gist_config.json, as a gist-trained model ships it (the
// weights are random: this checks the machinery, not what gists learn).
std::filesystem::path GistModelDir(const std::filesystem::path& under) {
  const std::filesystem::path dir = under / "gist-model";
  std::filesystem::create_directories(dir);
  for (const auto& file : std::filesystem::directory_iterator(FixtureModelDir())) {
    std::filesystem::create_symlink(file.path(), dir / file.path().filename());
  }
  std::ofstream(dir / "gist_config.json") << R"({"gist_token_id": 7, "ratios": [2, 4],
    "default_ratio": 4, "sink_tokens": 4, "window": 16})";
  return dir;
}

v1::MemoryPolicy Policy(v1::MemoryPolicy::Kind kind, int ratio, int window, int sinks) {
  v1::MemoryPolicy policy;
  policy.set_kind(kind);
  policy.set_ratio(ratio);
  policy.set_window(window);
  policy.set_sink_tokens(sinks);
  return policy;
}

grpc::Status Create(v1::Gistmem::Stub& stub, const v1::MemoryPolicy& policy, v1::Session& out) {
  grpc::ClientContext context;
  v1::CreateSessionRequest request;
  request.set_system_prompt("You remember.");
  *request.mutable_policy() = policy;
  return stub.CreateSession(&context, request, &out);
}

const std::vector<std::string> kTurns = {
    "My name is Ada and my locker code is 4417. Please remember both.",
    "Here is a long distraction about the weather, trains, and the price of tea in town.",
    "What was my locker code?"};

class MemoryTest : public ::testing::Test {
 protected:
  service::ServerConfig Config() {
    service::ServerConfig config = TestConfig(dir_.path() / "db");
    config.model_dir = GistModelDir(dir_.path());
    return config;
  }
  TempDir dir_;
};

TEST_F(MemoryTest, EveryPolicyShrinksTheCacheAndResumesExactly) {
  const std::vector<v1::MemoryPolicy> policies = {
      Policy(v1::MemoryPolicy::FULL, 0, 0, 0), Policy(v1::MemoryPolicy::WINDOW, 0, 16, 4),
      Policy(v1::MemoryPolicy::POOL, 4, 16, 4), Policy(v1::MemoryPolicy::GIST, 4, 16, 4),
      Policy(v1::MemoryPolicy::GIST, 2, 8, 2)};
  TestServer server(Config());
  int64_t full_disk = 0;
  for (const v1::MemoryPolicy& policy : policies) {
    SCOPED_TRACE(policy.ShortDebugString());
    v1::Session straight, resumed;
    ASSERT_TRUE(Create(server.stub(), policy, straight).ok());
    ASSERT_TRUE(Create(server.stub(), policy, resumed).ok());
    EXPECT_EQ(straight.policy().kind(), policy.kind());
    for (const std::string& message : kTurns) {
      const TurnResult want = Generate(server.stub(), straight.session_id(), message, Greedy(9));
      ASSERT_TRUE(want.status.ok()) << want.status.error_message();
      server.Restart();  // the other session resumes from the store at every turn
      const TurnResult got = Generate(server.stub(), resumed.session_id(), message, Greedy(9));
      ASSERT_TRUE(got.status.ok()) << got.status.error_message();
      EXPECT_EQ(got.token_ids, want.token_ids);
      EXPECT_EQ(got.end.usage().stream_tokens(), want.end.usage().stream_tokens());
    }
    const v1::SessionStats a = GetStats(server.stub(), straight.session_id());
    const v1::SessionStats b = GetStats(server.stub(), resumed.session_id());
    EXPECT_EQ(a.retained_entries(), b.retained_entries());
    EXPECT_EQ(a.retained_entries(),
              a.sink_entries() + a.gist_entries() + a.pooled_entries() + a.window_entries());
    EXPECT_GT(a.bytes_disk(), 0);
    if (policy.kind() == v1::MemoryPolicy::FULL) {
      full_disk = a.bytes_disk();
      continue;
    }
    // The cache keeps sinks, window and (gist, pool) about one entry per r raw tokens.
    EXPECT_LT(a.retained_entries(), a.stream_tokens() / 2);
    EXPECT_GT(a.compression_ratio(), 2.0);
    EXPECT_LE(a.window_entries(), policy.window() + policy.ratio());
    EXPECT_EQ(a.sink_entries(), policy.sink_tokens());
    if (policy.kind() == v1::MemoryPolicy::GIST) {
      // A gist follows every r-th raw token read (a cut reply's last token is not read yet).
      const int64_t read = a.retained_entries() > 0 ? a.stream_tokens() - a.gist_entries() : 0;
      EXPECT_GE(a.gist_entries(), (read - 1) / policy.ratio());
      EXPECT_LE(a.gist_entries(), read / policy.ratio());
      EXPECT_EQ(a.stream_tokens(), a.raw_tokens() + a.gist_entries());
    }
    if (policy.kind() == v1::MemoryPolicy::POOL) {
      EXPECT_GT(a.pooled_entries(), 0);
    }
    // Only what the policy retains is stored.
    EXPECT_LT(a.bytes_disk(), full_disk);
  }
}

TEST_F(MemoryTest, CancelledTurnLeavesACompressedSessionAsItWas) {
  TestServer server(Config());
  v1::Session session, twin;
  const v1::MemoryPolicy gist = Policy(v1::MemoryPolicy::GIST, 2, 8, 2);
  ASSERT_TRUE(Create(server.stub(), gist, session).ok());
  ASSERT_TRUE(Create(server.stub(), gist, twin).ok());
  ASSERT_TRUE(Generate(server.stub(), session.session_id(), kTurns[0], Greedy(6)).status.ok());
  ASSERT_TRUE(Generate(server.stub(), twin.session_id(), kTurns[0], Greedy(6)).status.ok());
  GenerateOptions cancel;
  cancel.cancel_after_first_delta = true;
  const TurnResult cut =
      Generate(server.stub(), session.session_id(), kTurns[1], Greedy(200), cancel);
  EXPECT_FALSE(cut.status.ok());
  ASSERT_TRUE(server.WaitForIdleScheduler());
  // The cancelled turn evicted entries of the first one while it ran; they are back.
  const TurnResult a = Generate(server.stub(), session.session_id(), kTurns[2], Greedy(8));
  const TurnResult b = Generate(server.stub(), twin.session_id(), kTurns[2], Greedy(8));
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.token_ids, b.token_ids);
  EXPECT_EQ(a.end.usage().stream_tokens(), b.end.usage().stream_tokens());
}

TEST_F(MemoryTest, BadPoliciesAreRefusedWithTheReason) {
  TestServer server(Config());
  v1::Session session;
  grpc::Status status = Create(server.stub(), Policy(v1::MemoryPolicy::POOL, 4, 6, 4), session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(status.error_message().find("multiple of ratio"), std::string::npos);
  status = Create(server.stub(), Policy(v1::MemoryPolicy::GIST, 8, 16, 4), session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("trained for gist ratios 2, 4"), std::string::npos);
  status = Create(server.stub(), Policy(v1::MemoryPolicy::WINDOW, 0, -3, 0), session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Unset fields come from the model's gist_config.json.
  ASSERT_TRUE(Create(server.stub(), Policy(v1::MemoryPolicy::GIST, 0, 0, 0), session).ok());
  EXPECT_EQ(session.policy().ratio(), 4);
  EXPECT_EQ(session.policy().window(), 16);
  EXPECT_EQ(session.policy().sink_tokens(), 4);
}

TEST(MemoryPolicyTest, GistNeedsAGistTrainedModel) {
  TempDir dir;
  TestServer server(TestConfig(dir.path() / "db"));  // the fixture has no gist_config.json
  v1::Session session;
  const grpc::Status status =
      Create(server.stub(), Policy(v1::MemoryPolicy::GIST, 4, 16, 4), session);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(status.error_message().find("gist_config.json"), std::string::npos);
  // The training-free policies work on any checkpoint.
  EXPECT_TRUE(Create(server.stub(), Policy(v1::MemoryPolicy::WINDOW, 0, 32, 4), session).ok());
  EXPECT_TRUE(Create(server.stub(), Policy(v1::MemoryPolicy::POOL, 8, 32, 4), session).ok());

  service::ServerConfig config = TestConfig(dir.path() / "db2");
  config.policy.kind = memory::PolicyKind::kGist;
  EXPECT_EQ(service::Server::Start(config).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace gistmem::testing
