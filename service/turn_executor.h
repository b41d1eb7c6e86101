// One turn of a session, from request to durable commit: Append (read a message) and Generate
// (read a message, then reply). The Chat stream runs its turns through here one by one.
//
//   Submit -> SessionManager::RunExclusive (waits for the session's earlier turns, loads it)
//          -> tokens of the turn (service/turn_tokens.h), limits, sampling
//          -> Scheduler job (batched with other sessions; deltas stream out as tokens come)
//          -> on a worker: one CommitTurn (transcript, KV segment, metadata; synced)
//          -> OnEnd, only after the commit is durable
//
// A cancelled turn (client cancel, deadline, CancelTurn, session deleted) stores nothing and
// leaves the in-memory cache as it was before the turn.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "gistmem/v1/gistmem.pb.h"
#include "service/runtime.h"
#include "service/session_manager.h"

namespace gistmem::service {

struct TurnRequest {
  enum class Kind {
    kAppend,    // read the message, generate nothing
    kGenerate,  // read the message (if any), then reply
  };
  Kind kind = Kind::kGenerate;
  std::string tenant;  // the caller's (service/auth.h)
  std::string session_id;
  std::string role;     // empty: "user"
  std::string content;  // empty for Generate: continue from the current stream
  v1::SamplingParams sampling;
  bool if_idle = false;
  // Polled between forward steps; true cancels the turn.
  std::function<bool()> is_cancelled;
};

struct TurnOutcome {
  int64_t turn_index = 0;  // the transcript index of the reply (Append: of the message)
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  v1::Usage usage;
};

// Receives a turn's events. OnStart and OnEnd come from worker threads, OnDelta from the
// scheduler's thread: none may block.
class TurnObserver {
 public:
  virtual ~TurnObserver() = default;
  // The turn has been admitted and starts; not called when it fails before.
  virtual void OnStart(const std::string& session_id, int64_t turn_index) = 0;
  // New reply text (whole UTF-8 characters) and the token ids that made it.
  virtual void OnDelta(std::string text, std::vector<int32_t> token_ids) = 0;
  // Exactly once, last. OK with the outcome (FINISH_REASON_CANCELLED when cancelled: nothing
  // stored), or the error; nothing of a failed turn is stored.
  virtual void OnEnd(const absl::Status& status, const TurnOutcome& outcome) = 0;
};

class TurnExecutor {
 public:
  TurnExecutor(const ServiceRuntime& runtime, SessionManager& sessions);

  // Starts the turn and returns; `observer` hears the rest. Never blocks on the model or store.
  void Submit(TurnRequest request, std::shared_ptr<TurnObserver> observer);

 private:
  struct Turn;
  void Prepare(const std::shared_ptr<Turn>& turn);
  void Finish(const std::shared_ptr<Turn>& turn);

  const ServiceRuntime& runtime_;
  SessionManager& sessions_;
};

}  // namespace gistmem::service
