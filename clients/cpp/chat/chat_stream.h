// One Chat call (a bidirectional stream bound to one session): turns go in, the reply's
// deltas and the turn's end come back.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "gistmem/v1/gistmem.grpc.pb.h"

namespace gistmem::chat {

// The metadata a router hashes on to send a session's calls to one server.
inline constexpr char kSessionHeader[] = "x-gistmem-session";

// What a turn produced, once its TurnEnd has arrived.
struct TurnResult {
  std::string session_id;
  int64_t turn_index = 0;
  std::string reply;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
};

class ChatStream {
 public:
  using DeltaCallback = std::function<void(const v1::TokenDelta&)>;

  ChatStream(v1::Gistmem::Stub& stub, std::string session_id, std::chrono::milliseconds deadline,
             const std::string& api_key = "");
  ~ChatStream();
  ChatStream(const ChatStream&) = delete;
  ChatStream& operator=(const ChatStream&) = delete;

  // Sends one turn and reads events until its TurnEnd, calling on_delta for each delta as it
  // arrives. A non-OK status means the call is over: open a new stream for the next turn.
  grpc::Status RunTurn(const v1::Turn& turn, const DeltaCallback& on_delta, TurnResult* result);

  // Asks the server to stop the running turn (it then ends as cancelled). Safe to call from
  // another thread while RunTurn reads; does nothing when no turn is running.
  void CancelTurn();

  // Half-closes the stream and returns the call's final status.
  grpc::Status Close();

  // True once the call is over (it failed or was closed); open a new stream to go on.
  bool finished() const { return finished_; }

 private:
  // Ends the call after a failed read or write and returns why it failed.
  grpc::Status FinishBroken();

  grpc::ClientContext context_;
  std::unique_ptr<grpc::ClientReaderWriter<v1::ChatRequest, v1::ChatEvent>> stream_;
  std::string session_id_;
  bool first_request_ = true;
  bool finished_ = false;
  grpc::Status final_status_;
  std::mutex write_mutex_;     // RunTurn and CancelTurn may write from different threads
  bool turn_running_ = false;  // guarded by write_mutex_
};

}  // namespace gistmem::chat
