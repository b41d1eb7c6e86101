#include "tests/integration/service_test_support.h"

#include <gtest/gtest.h>
#include <spdlog/spdlog.h>

#include <cstdlib>
#include <random>
#include <thread>

namespace gistmem::testing {

std::filesystem::path FixtureModelDir() {
  // $GISTMEM_FIXTURES (tests/fixtures/models of a checkout elsewhere, as on the GPU machine)
  // overrides the source tree the binary was built from.
  if (const char* fixtures = std::getenv("GISTMEM_FIXTURES"); fixtures != nullptr && *fixtures)
    return std::filesystem::path(fixtures) / "llama-gqa-bf16";
  return std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/models/llama-gqa-bf16";
}

const model::Tokenizer& FixtureTokenizer() {
  static const model::Tokenizer tokenizer =
      model::Tokenizer::FromFile(FixtureModelDir() / "tokenizer.json");
  return tokenizer;
}

TempDir::TempDir() {
  std::random_device random;
  path_ = std::filesystem::temp_directory_path() /
          ("gistmem-test-" + std::to_string(random()) + std::to_string(random()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

service::ServerConfig TestConfig(const std::filesystem::path& db) {
  spdlog::set_level(spdlog::level::warn);
  service::ServerConfig config;
  config.model_dir = FixtureModelDir();
  config.db_path = db;
  config.listen_address = "127.0.0.1:0";
  // GISTMEM_TEST_DEVICE=cuda runs every integration test on the GPU (tests/gpu/run-service.sh).
  const char* device = std::getenv("GISTMEM_TEST_DEVICE");
  config.device = device != nullptr && *device != '\0' ? device : "cpu";
  // The CUDA engine allocates its whole KV budget up front; 1 GiB is plenty for the fixture
  // and lets several test processes share one GPU.
  if (config.device != "cpu") config.kv_pool_bytes = int64_t{1} << 30;
  config.compute_threads = 1;
  config.worker_threads = 4;
  config.shutdown_grace = absl::Seconds(5);
  return config;
}

TestServer::TestServer(service::ServerConfig config) : config_(std::move(config)) {
  Start();
}

TestServer::~TestServer() {
  Stop();
}

void TestServer::Start() {
  absl::StatusOr<std::unique_ptr<service::Server>> server = service::Server::Start(config_);
  if (!server.ok()) {
    ADD_FAILURE() << "server did not start: " << server.status();
    return;
  }
  server_ = *std::move(server);
  channel_ = grpc::CreateChannel(server_->address(), grpc::InsecureChannelCredentials());
  stub_ = v1::Gistmem::NewStub(channel_);
}

void TestServer::Stop() {
  stub_.reset();
  channel_.reset();
  if (server_) server_->Shutdown(config_.shutdown_grace);
  server_.reset();
}

void TestServer::Restart() {
  Stop();
  Start();
}

bool TestServer::WaitForIdleScheduler(std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (server_->scheduler().jobs_in_flight() != 0) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

v1::SamplingParams Greedy(int max_tokens) {
  v1::SamplingParams sampling;
  sampling.set_temperature(0);
  sampling.set_max_tokens(max_tokens);
  return sampling;
}

std::string CreateSession(v1::Gistmem::Stub& stub, const std::string& system_prompt,
                          const v1::SamplingParams& defaults) {
  grpc::ClientContext context;
  v1::CreateSessionRequest request;
  request.set_system_prompt(system_prompt);
  *request.mutable_default_sampling() = defaults;
  v1::Session session;
  const grpc::Status status = stub.CreateSession(&context, request, &session);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return session.session_id();
}

TurnResult Generate(v1::Gistmem::Stub& stub, const std::string& session_id,
                    const std::string& content, const v1::SamplingParams& sampling,
                    const GenerateOptions& options) {
  grpc::ClientContext context;
  if (options.deadline) context.set_deadline(std::chrono::system_clock::now() + *options.deadline);
  v1::GenerateRequest request;
  request.set_session_id(session_id);
  request.mutable_message()->set_role(options.role);
  request.mutable_message()->set_content(content);
  *request.mutable_sampling() = sampling;
  request.set_if_idle(options.if_idle);
  TurnResult result;
  std::unique_ptr<grpc::ClientReader<v1::ChatEvent>> reader = stub.Generate(&context, request);
  std::function<void()> cancel;
  if (options.cancel_after_first_delta) cancel = [&context] { context.TryCancel(); };
  ReadTurn(*reader, result, cancel);
  v1::ChatEvent extra;
  if (result.ended && reader->Read(&extra)) result.well_ordered = false;  // nothing after end
  result.status = reader->Finish();
  return result;
}

grpc::Status Append(v1::Gistmem::Stub& stub, const std::string& session_id,
                    const std::string& content, v1::AppendResponse* response,
                    const std::string& role) {
  grpc::ClientContext context;
  v1::AppendRequest request;
  request.set_session_id(session_id);
  request.mutable_message()->set_role(role);
  request.mutable_message()->set_content(content);
  v1::AppendResponse ignored;
  return stub.Append(&context, request, response ? response : &ignored);
}

v1::SessionStats GetStats(v1::Gistmem::Stub& stub, const std::string& session_id) {
  grpc::ClientContext context;
  v1::GetSessionStatsRequest request;
  request.set_session_id(session_id);
  v1::SessionStats stats;
  const grpc::Status status = stub.GetSessionStats(&context, request, &stats);
  EXPECT_TRUE(status.ok()) << session_id << ": " << status.error_message();
  return stats;
}

v1::Session GetSession(v1::Gistmem::Stub& stub, const std::string& session_id) {
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session_id(session_id);
  v1::Session session;
  const grpc::Status status = stub.GetSession(&context, request, &session);
  EXPECT_TRUE(status.ok()) << session_id << ": " << status.error_message();
  return session;
}

ChatClient::ChatClient(v1::Gistmem::Stub& stub, const std::string& session_id)
    : stream_(stub.Chat(&context_)), session_id_(session_id) {}

TurnResult ChatClient::Turn(const std::string& content, const v1::SamplingParams& sampling,
                            bool cancel_after_first_delta) {
  v1::ChatRequest request;
  if (first_) request.set_session_id(session_id_);
  first_ = false;
  request.mutable_turn()->mutable_message()->set_content(content);
  *request.mutable_turn()->mutable_sampling() = sampling;
  TurnResult result;
  if (!stream_->Write(request)) {
    result.status = grpc::Status(grpc::StatusCode::UNAVAILABLE, "write failed");
    return result;
  }
  std::function<void()> cancel;
  if (cancel_after_first_delta) {
    cancel = [this] {
      v1::ChatRequest cancel_request;
      cancel_request.mutable_cancel();
      stream_->Write(cancel_request);
    };
  }
  if (!ReadTurn(*stream_, result, cancel)) result.status = stream_->Finish();
  return result;
}

grpc::Status ChatClient::Close() {
  stream_->WritesDone();
  v1::ChatEvent extra;
  while (stream_->Read(&extra)) {
  }
  return stream_->Finish();
}

}  // namespace gistmem::testing
