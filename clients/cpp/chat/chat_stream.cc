#include "clients/cpp/chat/chat_stream.h"

#include <utility>

namespace gistmem::chat {

ChatStream::ChatStream(v1::Gistmem::Stub& stub, std::string session_id,
                       std::chrono::milliseconds deadline, const std::string& api_key)
    : session_id_(std::move(session_id)) {
  if (deadline.count() > 0) context_.set_deadline(std::chrono::system_clock::now() + deadline);
  if (!api_key.empty()) context_.AddMetadata("x-api-key", api_key);
  if (!session_id_.empty()) context_.AddMetadata(kSessionHeader, session_id_);
  stream_ = stub.Chat(&context_);
}

ChatStream::~ChatStream() {
  // Finish() must run before the context goes away; a stream given up on is cancelled first.
  if (!finished_) {
    context_.TryCancel();
    stream_->Finish();
  }
}

grpc::Status ChatStream::RunTurn(const v1::Turn& turn, const DeltaCallback& on_delta,
                                 TurnResult* result) {
  if (finished_) return final_status_;
  *result = TurnResult{};
  result->session_id = session_id_;
  {
    v1::ChatRequest request;
    // The first request names the session; later ones may leave it empty.
    if (first_request_) request.set_session_id(session_id_);
    *request.mutable_turn() = turn;
    std::lock_guard lock(write_mutex_);
    if (!stream_->Write(request)) return FinishBroken();
    first_request_ = false;
    turn_running_ = true;
  }
  v1::ChatEvent event;
  while (stream_->Read(&event)) {
    switch (event.event_case()) {
      case v1::ChatEvent::kStart:
        if (!event.start().session_id().empty()) result->session_id = event.start().session_id();
        result->turn_index = event.start().turn_index();
        break;
      case v1::ChatEvent::kDelta:
        result->reply += event.delta().text();
        if (on_delta) on_delta(event.delta());
        break;
      case v1::ChatEvent::kEnd: {
        std::lock_guard lock(write_mutex_);
        turn_running_ = false;
        result->finish_reason = event.end().finish_reason();
        result->usage = event.end().usage();
        result->turn_index = event.end().turn_index();
        return grpc::Status::OK;
      }
      case v1::ChatEvent::EVENT_NOT_SET:
        break;
    }
  }
  return FinishBroken();
}

void ChatStream::CancelTurn() {
  std::lock_guard lock(write_mutex_);
  if (!turn_running_ || finished_) return;
  v1::ChatRequest request;
  request.mutable_cancel();
  // A failed write shows up as a failed read in RunTurn, which reports it.
  stream_->Write(request);
}

grpc::Status ChatStream::Close() {
  if (finished_) return final_status_;
  {
    std::lock_guard lock(write_mutex_);
    finished_ = true;
  }
  stream_->WritesDone();
  // Drain events the server may still send after our half-close.
  v1::ChatEvent event;
  while (stream_->Read(&event)) {
  }
  final_status_ = stream_->Finish();
  return final_status_;
}

grpc::Status ChatStream::FinishBroken() {
  {
    // From here on CancelTurn writes nothing, so Finish runs alone.
    std::lock_guard lock(write_mutex_);
    turn_running_ = false;
    finished_ = true;
  }
  v1::ChatEvent event;
  while (stream_->Read(&event)) {
  }
  final_status_ = stream_->Finish();
  if (final_status_.ok()) {
    // The server closed the stream cleanly in the middle of a turn: a protocol violation.
    final_status_ = grpc::Status(grpc::StatusCode::UNKNOWN, "Chat stream ended before TurnEnd");
  }
  return final_status_;
}

}  // namespace gistmem::chat
