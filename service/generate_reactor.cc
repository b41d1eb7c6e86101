#include "service/generate_reactor.h"

#include <memory>

#include "service/grpc_codec.h"

namespace gistmem::service {

// Turns a turn's events into ChatEvents on the stream. Holds the reactor by pointer: the
// reactor lives until Finish, which comes only from OnEnd, the last event.
class GenerateReactor::Observer final : public TurnObserver {
 public:
  explicit Observer(GenerateReactor* reactor) : reactor_(reactor) {}

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
    if (!status.ok()) return reactor_->writer_.Finish(ToGrpcStatus(status));
    if (outcome.finish_reason == v1::FINISH_REASON_CANCELLED) {
      return reactor_->writer_.Finish(CancelledStatus(*reactor_->context_));
    }
    v1::ChatEvent event;
    event.mutable_end()->set_finish_reason(outcome.finish_reason);
    *event.mutable_end()->mutable_usage() = outcome.usage;
    event.mutable_end()->set_turn_index(outcome.turn_index);
    reactor_->writer_.Write(SerializeMessage(event));
    reactor_->writer_.Finish(grpc::Status::OK);
  }

 private:
  GenerateReactor* reactor_;
};

GenerateReactor::GenerateReactor(grpc::CallbackServerContext* context,
                                 const grpc::ByteBuffer* request,
                                 absl::StatusOr<std::string> tenant, TurnExecutor& turns)
    : context_(context), writer_(this) {
  if (!tenant.ok()) {
    writer_.Finish(ToGrpcStatus(tenant.status()));
    return;
  }
  absl::StatusOr<v1::GenerateRequest> parsed = ParseRequest<v1::GenerateRequest>(*request);
  if (!parsed.ok()) {
    writer_.Finish(ToGrpcStatus(parsed.status()));
    return;
  }
  TurnRequest turn;
  turn.kind = TurnRequest::Kind::kGenerate;
  turn.tenant = *std::move(tenant);
  turn.session_id = parsed->session_id();
  turn.role = parsed->message().role();
  turn.content = parsed->message().content();
  turn.sampling = parsed->sampling();
  turn.if_idle = parsed->if_idle();
  turn.is_cancelled = [context] { return context->IsCancelled(); };
  turns.Submit(std::move(turn), std::make_shared<Observer>(this));
}

}  // namespace gistmem::service
