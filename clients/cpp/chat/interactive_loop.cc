#include "clients/cpp/chat/interactive_loop.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>

#include "clients/cpp/chat/exit_codes.h"
#include "clients/cpp/chat/json_output.h"

namespace gistmem::chat {
namespace {

// Ctrl-C during a turn cancels the turn (CancelTurn on the stream); at the prompt it quits.
// The handler may only touch lock-free atomics; a watcher thread does the gRPC write.
static_assert(std::atomic<bool>::is_always_lock_free);
std::atomic<bool> g_turn_running{false};
std::atomic<bool> g_cancel_requested{false};

extern "C" void OnInterrupt(int signal_number) {
  if (g_turn_running.load()) {
    g_cancel_requested.store(true);
    return;
  }
  std::signal(signal_number, SIG_DFL);
  std::raise(signal_number);
}

void InstallInterruptHandler() {
  struct sigaction action = {};
  action.sa_handler = OnInterrupt;
  action.sa_flags = SA_RESTART;  // reading stdin goes on after a Ctrl-C that cancelled a turn
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
}

constexpr char kHelp[] =
    "commands: /new (start a session), /session ID (switch to a session), /stats (memory of\n"
    "this session), /help, /quit. Other lines are turns; '//text' sends '/text'.\n"
    "Ctrl-C stops the running reply.\n";

class InteractiveLoop {
 public:
  InteractiveLoop(const ChatOptions& options, GistmemClient& client)
      : options_(options), client_(client), prompt_(isatty(STDIN_FILENO) ? "> " : "") {}

  int Run() {
    grpc::Status status = options_.create_session || options_.session_id.empty()
                              ? NewSession(options_.create)
                              : SwitchSession(options_.session_id);
    if (!status.ok()) return ReportRpcError(status);
    InstallInterruptHandler();
    std::string line;
    while (Prompt(), std::getline(std::cin, line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      if (line.starts_with("//")) {
        RunTurn(line.substr(1));
      } else if (line.starts_with("/")) {
        if (!RunCommand(line)) break;
      } else {
        RunTurn(line);
      }
    }
    CloseStream();
    return kExitOk;
  }

 private:
  void Prompt() const {
    std::fputs(prompt_, stdout);
    std::fflush(stdout);
  }

  // Returns false for /quit.
  bool RunCommand(const std::string& line) {
    const std::string command = line.substr(0, line.find(' '));
    const std::string argument =
        command.size() < line.size() ? line.substr(command.size() + 1) : std::string();
    grpc::Status status;
    if (command == "/quit" || command == "/exit") return false;
    if (command == "/new") {
      v1::CreateSessionRequest request = options_.create;
      request.clear_session_id();  // an id from --new --session is taken by now
      status = NewSession(request);
    } else if (command == "/session" && !argument.empty()) {
      status = SwitchSession(argument);
    } else if (command == "/stats") {
      v1::SessionStats stats;
      status = client_.GetSessionStats(session_id_, &stats);
      if (status.ok()) std::printf("%s\n", StatsJson(stats).dump(2).c_str());
    } else {
      std::fputs(kHelp, stdout);
    }
    if (!status.ok()) ReportRpcError(status);
    return true;
  }

  grpc::Status NewSession(const v1::CreateSessionRequest& request) {
    v1::Session session;
    grpc::Status status = client_.CreateSession(request, &session);
    if (!status.ok()) return status;
    CloseStream();
    session_id_ = session.session_id();
    std::printf("session: %s\n", session_id_.c_str());
    return status;
  }

  // Checks that the session exists before leaving the current one.
  grpc::Status SwitchSession(const std::string& session_id) {
    v1::Session session;
    grpc::Status status = client_.GetSession(session_id, &session);
    if (!status.ok()) return status;
    CloseStream();
    session_id_ = session.session_id();
    std::printf("session: %s (%lld turns, %lld tokens)\n", session_id_.c_str(),
                static_cast<long long>(session.turns()),
                static_cast<long long>(session.stream_tokens()));
    return status;
  }

  void RunTurn(const std::string& text) {
    if (!stream_) stream_ = client_.OpenChat(session_id_);
    v1::Turn turn;
    turn.mutable_message()->set_role("user");
    turn.mutable_message()->set_content(text);
    *turn.mutable_sampling() = options_.sampling;
    TurnResult result;
    g_cancel_requested.store(false);
    g_turn_running.store(true);
    grpc::Status status;
    {
      std::jthread cancel_watcher([this](std::stop_token stop) {
        while (!stop.stop_requested()) {
          if (g_cancel_requested.exchange(false)) stream_->CancelTurn();
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      });
      status = stream_->RunTurn(
          turn,
          [](const v1::TokenDelta& delta) {
            std::fwrite(delta.text().data(), 1, delta.text().size(), stdout);
            std::fflush(stdout);
          },
          &result);
      g_turn_running.store(false);
    }
    std::printf("\n");
    std::fflush(stdout);
    if (!status.ok()) {
      stream_.reset();
      ReportRpcError(status);
      return;
    }
    std::fprintf(stderr,
                 "[%s: %lld prompt + %lld completion tokens, %lld cached, %lld in stream]\n",
                 FinishReasonName(result.finish_reason).c_str(),
                 static_cast<long long>(result.usage.prompt_tokens()),
                 static_cast<long long>(result.usage.completion_tokens()),
                 static_cast<long long>(result.usage.cached_tokens()),
                 static_cast<long long>(result.usage.stream_tokens()));
  }

  void CloseStream() {
    if (!stream_) return;
    if (grpc::Status status = stream_->Close(); !status.ok()) ReportRpcError(status);
    stream_.reset();
  }

  const ChatOptions& options_;
  GistmemClient& client_;
  const char* const prompt_;
  std::string session_id_;
  std::unique_ptr<ChatStream> stream_;
};

}  // namespace

int RunInteractive(const ChatOptions& options, GistmemClient& client) {
  return InteractiveLoop(options, client).Run();
}

}  // namespace gistmem::chat
