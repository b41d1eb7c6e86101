#include "clients/cpp/chat/scripted_run.h"

#include <cstdio>
#include <memory>
#include <string>

#include "clients/cpp/chat/exit_codes.h"
#include "clients/cpp/chat/json_output.h"

namespace gistmem::chat {
namespace {

void PrintJsonLine(const nlohmann::json& object) {
  // Replies hold whole UTF-8 characters; replacing bad bytes keeps a buggy server from
  // crashing the client.
  std::printf("%s\n",
              object.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  std::fflush(stdout);
}

class ScriptedRun {
 public:
  ScriptedRun(const ChatOptions& options, GistmemClient& client)
      : options_(options), client_(client), session_id_(options.session_id) {}

  grpc::Status Run() {
    if (options_.create_session) {
      if (grpc::Status status = CreateSession(); !status.ok()) return status;
    }
    for (const Action& action : options_.actions) {
      grpc::Status status =
          action.kind == Action::Kind::kMessage ? RunTurn(action.text) : RunAppend(action.text);
      if (!status.ok()) return status;
    }
    // Appends are separate RPCs, so the stream is closed before each and at the end; its
    // final status can still carry an error the server sent after the last TurnEnd.
    if (grpc::Status status = CloseStream(); !status.ok()) return status;
    if (options_.stats) return PrintStats();
    return grpc::Status::OK;
  }

 private:
  grpc::Status CreateSession() {
    v1::Session session;
    grpc::Status status = client_.CreateSession(options_.create, &session);
    if (!status.ok()) return status;
    session_id_ = session.session_id();
    if (!options_.json) {
      std::fprintf(stderr, "session: %s\n", session_id_.c_str());
    } else if (options_.actions.empty() && !options_.stats) {
      PrintJsonLine({{"session_id", session_id_}});
    }
    return status;
  }

  grpc::Status RunTurn(const std::string& text) {
    v1::Turn turn;
    turn.mutable_message()->set_role("user");
    turn.mutable_message()->set_content(text);
    *turn.mutable_sampling() = options_.sampling;
    ChatStream::DeltaCallback print_delta;
    if (!options_.json) {
      print_delta = [](const v1::TokenDelta& delta) {
        std::fwrite(delta.text().data(), 1, delta.text().size(), stdout);
        std::fflush(stdout);
      };
    }
    TurnResult result;
    grpc::Status status = client_.RunTurn(&stream_, session_id_, turn, print_delta, &result);
    if (!status.ok()) return status;
    if (options_.json) {
      PrintJsonLine(TurnJson(result));
    } else {
      std::printf("\n");
      std::fflush(stdout);
    }
    return status;
  }

  grpc::Status RunAppend(const std::string& text) {
    if (grpc::Status status = CloseStream(); !status.ok()) return status;
    v1::Message message;
    message.set_role(options_.append_role);
    message.set_content(text);
    v1::Usage usage;
    grpc::Status status = client_.Append(session_id_, message, &usage);
    if (status.ok() && options_.json) PrintJsonLine(AppendJson(session_id_, usage));
    return status;
  }

  grpc::Status CloseStream() {
    if (!stream_) return grpc::Status::OK;
    grpc::Status status = stream_->Close();
    stream_.reset();
    return status;
  }

  grpc::Status PrintStats() {
    v1::SessionStats stats;
    grpc::Status status = client_.GetSessionStats(session_id_, &stats);
    if (status.ok()) PrintJsonLine(StatsJson(stats));
    return status;
  }

  const ChatOptions& options_;
  GistmemClient& client_;
  std::string session_id_;
  std::unique_ptr<ChatStream> stream_;
};

}  // namespace

int RunScripted(const ChatOptions& options, GistmemClient& client) {
  grpc::Status status = ScriptedRun(options, client).Run();
  return status.ok() ? kExitOk : ReportRpcError(status);
}

int RunHealthCheck(const ChatOptions& options, GistmemClient& client) {
  using grpc::health::v1::HealthCheckResponse;
  HealthCheckResponse::ServingStatus serving = HealthCheckResponse::UNKNOWN;
  grpc::Status status = client.CheckHealth(options.health_service, &serving);
  if (!status.ok()) return ReportRpcError(status);
  std::printf("%s\n", HealthCheckResponse::ServingStatus_Name(serving).c_str());
  return serving == HealthCheckResponse::SERVING ? kExitOk : kExitNotServing;
}

}  // namespace gistmem::chat
