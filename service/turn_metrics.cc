#include "service/turn_metrics.h"

#include <mutex>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/time/clock.h"
#include "service/logging.h"
#include "service/metrics.h"

namespace gistmem::service {
namespace {

class MeasuredTurn final : public TurnObserver {
 public:
  MeasuredTurn(const TurnRequest& request, std::shared_ptr<TurnObserver> inner)
      : inner_(std::move(inner)),
        tenant_(request.tenant),
        session_id_(request.session_id),
        kind_(request.kind == TurnRequest::Kind::kAppend ? "append" : "generate"),
        content_(LogContent() ? request.content : std::string()),
        submitted_(absl::Now()) {}

  void OnStart(const std::string& session_id, int64_t turn_index) override {
    {
      std::lock_guard lock(mutex_);
      turn_index_ = turn_index;
    }
    inner_->OnStart(session_id, turn_index);
  }

  void OnDelta(std::string text, std::vector<int32_t> token_ids) override {
    const absl::Time now = absl::Now();
    {
      std::lock_guard lock(mutex_);
      if (!token_ids.empty()) {
        if (!first_token_) {
          first_token_ = now;
          metrics::ObserveTimeToFirstToken(now - submitted_);
          // The first token of a delta is the turn's first; the rest came with it.
          for (size_t i = 1; i < token_ids.size(); ++i)
            metrics::ObserveInterTokenLatency(absl::ZeroDuration());
        } else {
          const absl::Duration each = (now - last_token_) / static_cast<int64_t>(token_ids.size());
          for (size_t i = 0; i < token_ids.size(); ++i)
            metrics::ObserveInterTokenLatency(each);
        }
        last_token_ = now;
      }
      if (LogContent()) reply_ += text;
    }
    inner_->OnDelta(std::move(text), std::move(token_ids));
  }

  void OnEnd(const absl::Status& status, const TurnOutcome& outcome) override {
    const absl::Time now = absl::Now();
    if (status.ok()) {
      metrics::CountTurnTokens(outcome.usage.prompt_tokens(), outcome.usage.completion_tokens(),
                               outcome.usage.cached_tokens());
    }
    {
      std::lock_guard lock(mutex_);
      const std::string finish =
          status.ok() ? std::string(v1::FinishReason_Name(outcome.finish_reason)) : std::string();
      LogEvent(status.ok() ? spdlog::level::info : spdlog::level::warn, "turn",
               {{"kind", kind_},
                {"tenant", tenant_},
                {"session_id", session_id_},
                {"code", std::string(metrics::GrpcCodeName(static_cast<int>(status.code())))},
                {"finish_reason", finish},
                {"error", std::string(status.message())},
                {"message", content_},
                {"reply", reply_}},
               {{"turn", static_cast<double>(status.ok() ? outcome.turn_index : turn_index_)},
                {"prompt_tokens", static_cast<double>(outcome.usage.prompt_tokens())},
                {"completion_tokens", static_cast<double>(outcome.usage.completion_tokens())},
                {"cached_tokens", static_cast<double>(outcome.usage.cached_tokens())},
                {"ttft_ms",
                 first_token_ ? absl::ToDoubleMilliseconds(*first_token_ - submitted_) : -1.0},
                {"duration_ms", absl::ToDoubleMilliseconds(now - submitted_)}});
    }
    inner_->OnEnd(status, outcome);
  }

 private:
  const std::shared_ptr<TurnObserver> inner_;
  const std::string tenant_, session_id_, kind_, content_;
  const absl::Time submitted_;
  std::mutex mutex_;
  int64_t turn_index_ ABSL_GUARDED_BY(mutex_) = -1;
  std::optional<absl::Time> first_token_ ABSL_GUARDED_BY(mutex_);
  absl::Time last_token_ ABSL_GUARDED_BY(mutex_);
  std::string reply_ ABSL_GUARDED_BY(mutex_);
};

}  // namespace

std::shared_ptr<TurnObserver> MeasureTurn(const TurnRequest& request,
                                          std::shared_ptr<TurnObserver> observer) {
  return std::make_shared<MeasuredTurn>(request, std::move(observer));
}

}  // namespace gistmem::service
