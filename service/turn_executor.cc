#include "service/turn_executor.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "model/tokenizer/incremental_decoder.h"
#include "service/kv_segment.h"
#include "service/memory_commit.h"
#include "service/sampling_options.h"
#include "service/turn_metrics.h"

namespace gistmem::service {

// Everything one turn carries from Submit to OnEnd.
struct TurnExecutor::Turn {
  TurnRequest request;
  std::shared_ptr<TurnObserver> observer;
  std::shared_ptr<LiveSession> session;
  SessionManager::Release release;

  // What the turn adds: records of the messages it reads, then (Generate) the reply record,
  // whose tokens are `reply_prefix` followed by the generated ones.
  int64_t stream_before = 0;  // raw tokens of the stream before the turn
  int64_t unread_before = 0;  // of those, not yet read into the memory (a cut reply's last)
  std::vector<store::TurnRecord> records;
  bool generate = false;
  bool continues_reply = false;  // no message: a cut reply goes on where it stopped
  std::vector<int32_t> reply_prefix;
  int64_t new_tokens = 0;  // tokens read this turn
  int64_t turn_index = 0;
  std::vector<int32_t> stop_token_ids;

  // The reply as it streams.
  std::unique_ptr<model::IncrementalDecoder> decoder;
  std::string reply_text;
  std::vector<int32_t> unsent_ids;
  JobResult result;

  void End(const absl::Status& status, const TurnOutcome& outcome = {}) {
    observer->OnEnd(status, outcome);
  }
};

TurnExecutor::TurnExecutor(const ServiceRuntime& runtime, SessionManager& sessions)
    : runtime_(runtime), sessions_(sessions) {}

void TurnExecutor::Submit(TurnRequest request, std::shared_ptr<TurnObserver> observer) {
  observer = MeasureTurn(request, std::move(observer));
  const Limits& limits = runtime_.config.limits;
  if (static_cast<int64_t>(request.content.size()) > limits.max_content_bytes) {
    observer->OnEnd(
        absl::InvalidArgumentError(absl::StrCat("message content has ", request.content.size(),
                                                " bytes; the limit is ", limits.max_content_bytes)),
        {});
    return;
  }
  if (request.kind == TurnRequest::Kind::kAppend && request.content.empty()) {
    observer->OnEnd(absl::InvalidArgumentError("Append needs a message with content"), {});
    return;
  }
  absl::StatusOr<std::string_view> role = NormalizeRole(request.role);
  if (!role.ok()) {
    observer->OnEnd(role.status(), {});
    return;
  }
  request.role = std::string(*role);
  if (!request.is_cancelled) request.is_cancelled = [] { return false; };

  auto turn = std::make_shared<Turn>();
  turn->generate = request.kind == TurnRequest::Kind::kGenerate;
  turn->observer = std::move(observer);
  turn->request = std::move(request);
  absl::Status queued =
      sessions_.RunExclusive(turn->request.tenant, turn->request.session_id, turn->request.if_idle,
                             [this, turn](absl::StatusOr<std::shared_ptr<LiveSession>> session,
                                          SessionManager::Release release) {
                               turn->release = std::move(release);
                               if (!session.ok()) {
                                 turn->release(true);
                                 turn->End(session.status());
                                 return;
                               }
                               turn->session = *std::move(session);
                               Prepare(turn);
                             });
  if (!queued.ok()) turn->End(queued);
}

void TurnExecutor::Prepare(const std::shared_ptr<Turn>& turn) {
  LiveSession& session = *turn->session;
  const TurnRequest& request = turn->request;
  const Limits& limits = runtime_.config.limits;
  const TurnTokens& tokens = runtime_.turn_tokens;
  auto refuse = [&](const absl::Status& status) {
    turn->release(true);
    turn->End(status);
  };

  if (request.is_cancelled()) {
    turn->release(true);
    TurnOutcome outcome;
    outcome.finish_reason = v1::FINISH_REASON_CANCELLED;
    outcome.usage.set_stream_tokens(static_cast<int64_t>(session.stream.size()));
    turn->End(absl::OkStatus(), outcome);
    return;
  }
  TurnSampling sampling;
  if (turn->generate) {
    absl::StatusOr<TurnSampling> resolved =
        ResolveSampling(session.record.default_sampling(), request.sampling, limits);
    if (!resolved.ok()) return refuse(resolved.status());
    sampling = *resolved;
  }

  // The tokens this turn reads, record by record (service/turn_tokens.h says which).
  turn->stream_before = static_cast<int64_t>(session.stream.size());
  turn->unread_before = session.reply_open ? 1 : 0;
  int64_t next_index = session.record.turn_count();
  std::vector<int32_t> prompt;
  int64_t session_start_tokens = 0;
  auto add_record = [&](std::string_view role, const std::string& text,
                        const std::vector<int32_t>& ids) {
    store::TurnRecord& record = turn->records.emplace_back();
    record.set_turn_index(next_index++);
    record.set_role(std::string(role));
    record.set_text(text);
    record.mutable_token_ids()->Add(ids.begin(), ids.end());
    prompt.insert(prompt.end(), ids.begin(), ids.end());
  };
  if (session.stream.empty()) {
    absl::StatusOr<std::vector<int32_t>> start =
        tokens.SessionStart(session.record.system_prompt());
    if (!start.ok()) return refuse(start.status());
    session_start_tokens = static_cast<int64_t>(start->size());
    add_record("system", session.record.system_prompt(), *start);
  }
  bool reply_open = session.reply_open;
  if (!request.content.empty()) {
    absl::StatusOr<std::vector<int32_t>> message = tokens.Message(request.role, request.content);
    if (!message.ok()) return refuse(message.status());
    std::vector<int32_t> ids = reply_open ? tokens.CloseReply() : std::vector<int32_t>();
    ids.insert(ids.end(), message->begin(), message->end());
    add_record(request.role, request.content, ids);
    reply_open = false;
  }
  if (turn->generate) {
    // An open reply (cut by max_tokens) and no new message: the reply goes on where it stopped.
    turn->continues_reply = reply_open;
    if (!turn->continues_reply) turn->reply_prefix = tokens.ReplyPrompt();
    prompt.insert(prompt.end(), turn->reply_prefix.begin(), turn->reply_prefix.end());
    turn->turn_index = next_index;
  } else {
    turn->turn_index = next_index - 1;
  }
  turn->new_tokens = static_cast<int64_t>(prompt.size());

  const int64_t request_tokens = turn->new_tokens - session_start_tokens;
  if (request_tokens > limits.max_request_tokens) {
    return refuse(absl::ResourceExhaustedError(
        absl::StrCat("the request adds ", request_tokens, " tokens; the limit is ",
                     limits.max_request_tokens, " (--max_request_tokens)")));
  }
  // Positions are what runs out (gist tokens take them too), not cache entries.
  const int64_t room =
      session.memory->RawRoom(runtime_.max_session_tokens) - turn->unread_before - turn->new_tokens;
  if (room < (turn->generate ? 1 : 0)) {
    return refuse(absl::ResourceExhaustedError(
        absl::StrCat("session ", session.id, " holds ", session.memory->state().stream_tokens,
                     " stream tokens and this turn adds ", turn->new_tokens,
                     turn->generate ? " plus a reply" : "", "; a session may hold ",
                     runtime_.max_session_tokens)));
  }

  auto job = std::make_unique<Job>();
  job->memory = session.memory.get();
  // A cut reply's last token is read first: nothing had needed its logits until now.
  if (turn->unread_before > 0) job->prompt.push_back(session.stream.back());
  job->prompt.insert(job->prompt.end(), prompt.begin(), prompt.end());
  job->generate = turn->generate;
  job->sampling = sampling.params;
  job->max_new_tokens = std::min(sampling.max_tokens, room);
  job->stop_token_ids = tokens.stop_token_ids();
  job->history.assign(session.stream.begin(), session.stream.end() - turn->unread_before);
  turn->stop_token_ids = tokens.stop_token_ids();
  turn->decoder = std::make_unique<model::IncrementalDecoder>(runtime_.tokenizer, true);
  job->is_cancelled = [turn] { return turn->request.is_cancelled() || turn->session->deleted; };
  job->on_token = [turn](int32_t token) {
    if (std::ranges::find(turn->stop_token_ids, token) != turn->stop_token_ids.end()) return;
    turn->unsent_ids.push_back(token);
    std::string text = turn->decoder->Push(token);
    if (text.empty()) return;  // the rest of a character is still to come
    turn->reply_text += text;
    turn->observer->OnDelta(std::move(text), std::exchange(turn->unsent_ids, {}));
  };
  job->on_done = [this, turn](JobResult result) {
    turn->result = std::move(result);
    runtime_.workers.Post([this, turn] { Finish(turn); });
  };
  turn->observer->OnStart(session.id, turn->turn_index);
  session.memory->BeginTurn();
  runtime_.scheduler.Submit(std::move(job));
}

void TurnExecutor::Finish(const std::shared_ptr<Turn>& turn) {
  LiveSession& session = *turn->session;
  JobResult& result = turn->result;
  const auto generated = static_cast<int64_t>(result.generated.size());
  TurnOutcome outcome;
  outcome.turn_index = turn->turn_index;
  outcome.usage.set_prompt_tokens(turn->new_tokens);
  outcome.usage.set_completion_tokens(generated);
  outcome.usage.set_cached_tokens(session.record.stream_tokens() - turn->unread_before);
  outcome.usage.set_stream_tokens(session.record.stream_tokens());

  if (result.outcome == JobResult::Outcome::kFailed) {
    session.memory->Rollback();
    spdlog::error("session {} turn {} failed in the forward pass: {}", session.id, turn->turn_index,
                  result.error);
    turn->release(false);  // its cache may be damaged: reload from the store next time
    turn->End(absl::Status(result.error_code, absl::StrCat("forward pass failed: ", result.error)));
    return;
  }
  // A cancel that arrives after the last step still wins: nothing is committed yet.
  if (result.outcome == JobResult::Outcome::kCancelled || turn->request.is_cancelled() ||
      session.deleted) {
    session.memory->Rollback();
    const bool deleted = session.deleted;
    spdlog::info("session {} turn {} cancelled after {} tokens", session.id, turn->turn_index,
                 generated);
    turn->release(true);
    if (deleted) {
      turn->End(absl::NotFoundError(absl::StrCat("session ", session.id, " was deleted")));
    } else {
      outcome.finish_reason = v1::FINISH_REASON_CANCELLED;
      turn->End(absl::OkStatus(), outcome);
    }
    return;
  }

  std::string rest = turn->decoder->Flush();
  if (!rest.empty() || !turn->unsent_ids.empty()) {
    turn->reply_text += rest;
    turn->observer->OnDelta(std::move(rest), std::exchange(turn->unsent_ids, {}));
  }
  if (turn->generate) {
    outcome.finish_reason = result.stopped ? v1::FINISH_REASON_STOP : v1::FINISH_REASON_LENGTH;
    store::TurnRecord& reply = turn->records.emplace_back();
    reply.set_turn_index(turn->turn_index);
    reply.set_role("assistant");
    reply.set_text(turn->reply_text);
    reply.mutable_token_ids()->Add(turn->reply_prefix.begin(), turn->reply_prefix.end());
    reply.mutable_token_ids()->Add(result.generated.begin(), result.generated.end());
    reply.set_generated(true);
    reply.set_finish_reason(outcome.finish_reason);
  }

  const int64_t stream_after = turn->stream_before + turn->new_tokens + generated;
  const int64_t unread_after = turn->generate && !result.stopped && generated > 0 ? 1 : 0;
  if (session.memory->state().raw_tokens != stream_after - unread_after) {
    session.memory->Rollback();
    turn->release(false);
    turn->End(absl::InternalError(
        absl::StrCat("the memory read ", session.memory->state().raw_tokens,
                     " raw tokens after the turn, expected ", stream_after - unread_after)));
    return;
  }
  store::TurnCommit commit;
  commit.session = session.record;
  commit.session.set_turn_count(session.record.turn_count() +
                                static_cast<int64_t>(turn->records.size()));
  commit.session.set_update_time_micros(absl::ToUnixMicros(absl::Now()));
  commit.turns = turn->records;
  AddMemoryToCommit(runtime_.engine.config(), *session.memory, runtime_.model_fingerprint,
                    unread_after, commit);
  commit.epoch = session.epoch;
  if (absl::Status committed = runtime_.store.CommitTurn(commit); !committed.ok()) {
    spdlog::error("session {} turn {} not stored: {}", session.id, turn->turn_index,
                  committed.ToString());
    session.memory->Rollback();
    // Fenced (another server owns the session) or overtaken: this copy is stale.
    turn->release(!absl::IsAborted(committed) && !absl::IsFailedPrecondition(committed));
    turn->End(committed);
    return;
  }
  session.memory->EndTurn();

  session.record = std::move(commit.session);
  for (const store::TurnRecord& record : turn->records) {
    session.stream.insert(session.stream.end(), record.token_ids().begin(),
                          record.token_ids().end());
  }
  session.reply_open = unread_after > 0;
  session.cache_bytes = session.memory->Bytes();
  outcome.usage.set_stream_tokens(session.record.stream_tokens());
  spdlog::info("session {} turn {}: read {}, generated {}, stream {} tokens, cache {}{}",
               session.id, turn->turn_index, turn->new_tokens, generated,
               session.record.stream_tokens(), session.memory->Counts().total(),
               turn->generate ? (result.stopped ? " (stop)" : " (length)") : "");
  turn->release(true);
  turn->End(absl::OkStatus(), outcome);
}

}  // namespace gistmem::service
