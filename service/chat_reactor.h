// Chat: a conversation on one bidirectional stream. Requests carry turns (run one after
// another through the TurnExecutor) or CancelTurn (stops the running turn, which then ends
// with FINISH_REASON_CANCELLED and is not stored). Events go out in order: TurnStart, deltas,
// TurnEnd per turn. The stream ends OK after the client half-closes and the last turn is over,
// with the error of a failed turn, CANCELLED when the call is cancelled, or UNAVAILABLE when
// the server shuts down.
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "gistmem/v1/gistmem.pb.h"
#include "service/event_writer.h"
#include "service/turn_executor.h"

namespace gistmem::service {

class ChatReactor final : public grpc::ServerBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  // `on_done` runs when the call is over, just before the reactor deletes itself.
  // Serves the stream for `tenant`, or ends it at once with the status that refused the caller.
  ChatReactor(grpc::CallbackServerContext* context, absl::StatusOr<std::string> tenant,
              TurnExecutor& turns, std::function<void(ChatReactor*)> on_done);

  // Server shutdown: no new turns; the stream ends UNAVAILABLE once the running turn is over.
  void Shutdown();

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override { writer_.OnWriteDone(ok); }
  void OnCancel() override;
  void OnDone() override;

 private:
  class Observer;

  void HandleRequest(const v1::ChatRequest& request);
  // Submits the next waiting turn when none is running.
  void StartNextTurn();
  void TurnEnded(const absl::Status& status, const TurnOutcome& outcome);
  // Ends the call with `status` as soon as no turn is running (the first status wins).
  void FinishWhenIdle(const grpc::Status& status);
  // Ends the call OK once the client has half-closed and every turn is over.
  void FinishIfDrained();

  grpc::CallbackServerContext* context_;
  TurnExecutor& turns_;
  std::function<void(ChatReactor*)> on_done_;
  EventWriter<ChatReactor> writer_;
  grpc::ByteBuffer read_buffer_;

  std::mutex mutex_;
  std::string tenant_;
  std::string session_id_;
  std::deque<v1::Turn> waiting_;
  bool running_ = false;
  std::shared_ptr<std::atomic<bool>> cancel_running_;
  bool read_closed_ = false;
  std::optional<grpc::Status> final_status_;
};

}  // namespace gistmem::service
