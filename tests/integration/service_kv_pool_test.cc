// The engine's KV page pool through the real server: a request that finds no room fails
// alone with RESOURCE_EXHAUSTED, leaves its session as it was, and gives every page back.
#include <gtest/gtest.h>

#include <string>

#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

using grpc::StatusCode;

// The fixture model's pages: 16 entries x 2 layers x (K + V) x 2 kv heads x 16 dims x 4 bytes
// (fp32, the CPU engine) or 2 (bf16, the CUDA engine).
int64_t PageBytes(const std::string& device) {
  return int64_t{16} * 2 * 2 * 2 * 16 * (device == "cpu" ? 4 : 2);
}

class KvPoolTest : public ::testing::Test {
 protected:
  static service::ServerConfig Config(const std::filesystem::path& db) {
    service::ServerConfig config = TestConfig(db);
    config.kv_pool_bytes = 12 * PageBytes(config.device);  // 192 entries, all sessions together
    return config;
  }

  int64_t PagesInUse() { return server_.server().engine().kv_pool().pages_in_use(); }

  TempDir dir_;
  TestServer server_{Config(dir_.path() / "db")};
};

TEST_F(KvPoolTest, NoRoomFailsThatRequestAloneAndLeavesNothingBehind) {
  v1::Gistmem::Stub& stub = server_.stub();
  const std::string big = CreateSession(stub, "");
  const std::string small = CreateSession(stub, "");
  ASSERT_TRUE(Append(stub, big, "A short first message.").ok());
  const v1::Session before = GetSession(stub, big);
  const int64_t pages_before = PagesInUse();

  // About 300 tokens: more entries than the whole pool holds.
  std::string long_message;
  for (int i = 0; i < 150; ++i)
    long_message += " w" + std::to_string(i);
  const grpc::Status full = Append(stub, big, long_message);
  EXPECT_EQ(full.error_code(), StatusCode::RESOURCE_EXHAUSTED) << full.error_message();
  EXPECT_NE(full.error_message().find("KV pool is full"), std::string::npos)
      << full.error_message();
  // Nothing of the failed request stays: not in the session, not in the pool (a failed turn's
  // session may also leave memory: it comes back from the store).
  const v1::Session after = GetSession(stub, big);
  EXPECT_EQ(after.stream_tokens(), before.stream_tokens());
  EXPECT_EQ(after.turns(), before.turns());
  EXPECT_LE(PagesInUse(), pages_before);

  // Other sessions, and the same one, go on.
  EXPECT_TRUE(Append(stub, small, "Hello there.").ok());
  const TurnResult reply = Generate(stub, big, "And now?", Greedy(4));
  ASSERT_TRUE(reply.status.ok()) << reply.status.error_message();
  EXPECT_GT(GetSession(stub, big).stream_tokens(), before.stream_tokens());
}

}  // namespace
}  // namespace gistmem::testing
