// What the service's integration tests share: a temporary directory, a real gistmem server on
// 127.0.0.1 (port chosen by the kernel) over the fixture checkpoint, and helpers that run
// turns through real gRPC stubs and collect what came back.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gistmem/v1/gistmem.grpc.pb.h"
#include "model/tokenizer/tokenizer.h"
#include "service/config.h"
#include "service/server.h"

namespace gistmem::testing {

std::filesystem::path FixtureModelDir();
const model::Tokenizer& FixtureTokenizer();

// A fresh directory under the system's temp dir, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The fixture model, `db`, 127.0.0.1:0, one compute thread, quiet logs, $GISTMEM_TEST_DEVICE.
service::ServerConfig TestConfig(const std::filesystem::path& db);

// An in-process server and a channel to it.
class TestServer {
 public:
  explicit TestServer(service::ServerConfig config);
  ~TestServer();

  // Shuts the server down (as SIGTERM would) and starts a new one on the same database.
  void Restart();
  void Stop();

  v1::Gistmem::Stub& stub() { return *stub_; }
  std::shared_ptr<grpc::Channel> channel() { return channel_; }
  service::Server& server() { return *server_; }
  const service::ServerConfig& config() const { return config_; }
  // Waits until the scheduler has no job left (turns cancelled or finished).
  bool WaitForIdleScheduler(std::chrono::milliseconds timeout = std::chrono::seconds(10));

 private:
  void Start();

  service::ServerConfig config_;
  std::unique_ptr<service::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::Gistmem::Stub> stub_;
};

v1::SamplingParams Greedy(int max_tokens);

// Creates a session (failing the test when that fails) and returns its id.
std::string CreateSession(v1::Gistmem::Stub& stub, const std::string& system_prompt,
                          const v1::SamplingParams& defaults = {});

// Everything one turn sent back.
struct TurnResult {
  grpc::Status status;
  bool started = false;
  std::string start_session_id;
  int64_t start_turn_index = -1;
  std::string text;                // the deltas' text, concatenated
  std::vector<int32_t> token_ids;  // the deltas' ids, concatenated
  int deltas = 0;
  bool ended = false;
  v1::TurnEnd end;
  // Event order was start, deltas, end (nothing before start, nothing after end).
  bool well_ordered = true;
};

// Reads events of a Generate or Chat stream into `result` until a TurnEnd (true) or the end
// of the stream (false). `after_first_delta` runs once, when the first delta arrives.
template <typename Stream>
bool ReadTurn(Stream& stream, TurnResult& result,
              const std::function<void()>& after_first_delta = nullptr) {
  v1::ChatEvent event;
  while (stream.Read(&event)) {
    switch (event.event_case()) {
      case v1::ChatEvent::kStart:
        if (result.started || result.ended) result.well_ordered = false;
        result.started = true;
        result.start_session_id = event.start().session_id();
        result.start_turn_index = event.start().turn_index();
        break;
      case v1::ChatEvent::kDelta:
        if (!result.started || result.ended) result.well_ordered = false;
        result.text += event.delta().text();
        result.token_ids.insert(result.token_ids.end(), event.delta().token_ids().begin(),
                                event.delta().token_ids().end());
        if (++result.deltas == 1 && after_first_delta) after_first_delta();
        break;
      case v1::ChatEvent::kEnd:
        if (!result.started || result.ended) result.well_ordered = false;
        result.ended = true;
        result.end = event.end();
        return true;
      case v1::ChatEvent::EVENT_NOT_SET:
        result.well_ordered = false;
        break;
    }
  }
  return false;
}

struct GenerateOptions {
  std::string role;
  bool if_idle = false;
  std::optional<std::chrono::milliseconds> deadline;
  // Cancels the call (client side) once the first delta has arrived.
  bool cancel_after_first_delta = false;
};

TurnResult Generate(v1::Gistmem::Stub& stub, const std::string& session_id,
                    const std::string& content, const v1::SamplingParams& sampling,
                    const GenerateOptions& options = {});

grpc::Status Append(v1::Gistmem::Stub& stub, const std::string& session_id,
                    const std::string& content, v1::AppendResponse* response = nullptr,
                    const std::string& role = "");

// The session as GetSession returns it; a failed call fails the test.
v1::Session GetSession(v1::Gistmem::Stub& stub, const std::string& session_id);
// The session's GetSessionStats; a failed call fails the test.
v1::SessionStats GetStats(v1::Gistmem::Stub& stub, const std::string& session_id);

// A Chat stream used turn by turn.
class ChatClient {
 public:
  ChatClient(v1::Gistmem::Stub& stub, const std::string& session_id);
  // Sends a turn and reads its events; `cancel_after_first_delta` sends CancelTurn then.
  TurnResult Turn(const std::string& content, const v1::SamplingParams& sampling,
                  bool cancel_after_first_delta = false);
  // Cancels the whole call (a client that goes away).
  void CancelCall() { context_.TryCancel(); }
  // Half-closes and returns the call's status.
  grpc::Status Close();
  grpc::ClientReaderWriter<v1::ChatRequest, v1::ChatEvent>& stream() { return *stream_; }

 private:
  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ChatRequest, v1::ChatEvent>> stream_;
  std::string session_id_;
  bool first_ = true;
};

}  // namespace gistmem::testing
