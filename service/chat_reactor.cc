#include "service/chat_reactor.h"

#include <utility>

#include "service/grpc_codec.h"

namespace gistmem::service {

// Forwards a turn's events to the stream; the reactor outlives it (see GenerateReactor).
class ChatReactor::Observer final : public TurnObserver {
 public:
  explicit Observer(ChatReactor* reactor) : reactor_(reactor) {}

  void OnStart(const std::string& session_id, int64_t turn_index) override {
    v1::ChatEvent event;
    event.mutable_start()->set_session_id(session_id);
    event.mutable_start()->set_turn_index(turn_index);
    reactor_->writer_.Write(SerializeMessage(event));
  }

  void OnDelta(std::string text, std::vector<int32_t> token_ids) override {
    v1::ChatEvent event;
    event.mutable_delta()->set_text(std::move(text));
    event.mutable_delta()->mutable_token_ids()->Add(token_ids.begin(), token_ids.end());
    reactor_->writer_.Write(SerializeMessage(event));
  }

  void OnEnd(const absl::Status& status, const TurnOutcome& outcome) override {
    reactor_->TurnEnded(status, outcome);
  }

 private:
  ChatReactor* reactor_;
};

ChatReactor::ChatReactor(grpc::CallbackServerContext* context, absl::StatusOr<std::string> tenant,
                         TurnExecutor& turns, std::function<void(ChatReactor*)> on_done)
    : context_(context), turns_(turns), on_done_(std::move(on_done)), writer_(this) {
  if (!tenant.ok()) {
    FinishWhenIdle(ToGrpcStatus(tenant.status()));
    return;
  }
  tenant_ = *std::move(tenant);
  StartRead(&read_buffer_);
}

void ChatReactor::OnReadDone(bool ok) {
  if (!ok) {  // half-close, or the call is over
    {
      std::lock_guard lock(mutex_);
      read_closed_ = true;
    }
    FinishIfDrained();
    return;
  }
  absl::StatusOr<v1::ChatRequest> request = ParseRequest<v1::ChatRequest>(read_buffer_);
  if (!request.ok()) {
    FinishWhenIdle(ToGrpcStatus(request.status()));
  } else {
    HandleRequest(*request);
  }
  bool read_more = false;
  {
    std::lock_guard lock(mutex_);
    read_more = !final_status_.has_value();
    read_closed_ = !read_more;
  }
  if (read_more) StartRead(&read_buffer_);
}

void ChatReactor::HandleRequest(const v1::ChatRequest& request) {
  std::string bound;
  {
    std::lock_guard lock(mutex_);
    if (session_id_.empty()) session_id_ = request.session_id();
    bound = session_id_;
  }
  if (bound.empty()) {
    return FinishWhenIdle(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                                       "the first ChatRequest of a stream must name the session"));
  }
  if (!request.session_id().empty() && request.session_id() != bound) {
    return FinishWhenIdle(
        grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                     "this stream is bound to session " + bound + ", not " + request.session_id()));
  }
  switch (request.action_case()) {
    case v1::ChatRequest::kTurn: {
      {
        std::lock_guard lock(mutex_);
        if (final_status_) return;
        waiting_.push_back(request.turn());
      }
      StartNextTurn();
      return;
    }
    case v1::ChatRequest::kCancel: {
      std::lock_guard lock(mutex_);
      if (running_ && cancel_running_) *cancel_running_ = true;
      return;
    }
    case v1::ChatRequest::ACTION_NOT_SET:
      return;  // names the session only
  }
}

void ChatReactor::StartNextTurn() {
  TurnRequest turn;
  {
    std::lock_guard lock(mutex_);
    if (running_ || waiting_.empty() || final_status_) return;
    const v1::Turn next = std::move(waiting_.front());
    waiting_.pop_front();
    running_ = true;
    cancel_running_ = std::make_shared<std::atomic<bool>>(false);
    turn.kind = TurnRequest::Kind::kGenerate;
    turn.tenant = tenant_;
    turn.session_id = session_id_;
    turn.role = next.message().role();
    turn.content = next.message().content();
    turn.sampling = next.sampling();
    turn.is_cancelled = [cancel = cancel_running_, context = context_] {
      return cancel->load() || context->IsCancelled();
    };
  }
  turns_.Submit(std::move(turn), std::make_shared<Observer>(this));
}

void ChatReactor::TurnEnded(const absl::Status& status, const TurnOutcome& outcome) {
  if (status.ok()) {
    v1::ChatEvent event;
    event.mutable_end()->set_finish_reason(outcome.finish_reason);
    *event.mutable_end()->mutable_usage() = outcome.usage;
    event.mutable_end()->set_turn_index(outcome.turn_index);
    writer_.Write(SerializeMessage(event));
  }
  {
    std::lock_guard lock(mutex_);
    running_ = false;
    cancel_running_.reset();
  }
  if (!status.ok()) return FinishWhenIdle(ToGrpcStatus(status));
  if (context_->IsCancelled()) return FinishWhenIdle(CancelledStatus(*context_));
  std::optional<grpc::Status> pending;
  {
    std::lock_guard lock(mutex_);
    pending = final_status_;
  }
  if (pending) return writer_.Finish(*pending);  // a finish waited for this turn
  StartNextTurn();
  FinishIfDrained();
}

void ChatReactor::FinishWhenIdle(const grpc::Status& status) {
  grpc::Status final_status;
  {
    std::lock_guard lock(mutex_);
    if (!final_status_) final_status_ = status;
    waiting_.clear();
    if (running_) return;  // TurnEnded finishes
    final_status = *final_status_;
  }
  writer_.Finish(final_status);
}

void ChatReactor::FinishIfDrained() {
  {
    std::lock_guard lock(mutex_);
    if (!read_closed_ || running_ || !waiting_.empty() || final_status_) return;
    final_status_ = grpc::Status::OK;
  }
  writer_.Finish(grpc::Status::OK);
}

void ChatReactor::OnCancel() {
  {
    std::lock_guard lock(mutex_);
    if (cancel_running_) *cancel_running_ = true;
  }
  FinishWhenIdle(CancelledStatus(*context_));
}

void ChatReactor::Shutdown() {
  {
    std::lock_guard lock(mutex_);
    // The running turn may finish within the grace period; waiting ones never start.
    waiting_.clear();
  }
  FinishWhenIdle(grpc::Status(grpc::StatusCode::UNAVAILABLE, "the server is shutting down"));
}

void ChatReactor::OnDone() {
  on_done_(this);
  delete this;
}

}  // namespace gistmem::service
