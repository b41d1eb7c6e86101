#include "service/document_service.h"

#include <google/protobuf/util/time_util.h>
#include <openssl/evp.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/kv_segment.h"
#include "service/memory_commit.h"

namespace gistmem::service {
namespace {

// "d-" + the first 128 bits of SHA-256 over what determines the entries.
std::string DocumentId(const std::string& model_fingerprint, const memory::Policy& policy,
                       const std::vector<int32_t>& tokens) {
  const std::string head = absl::StrCat(model_fingerprint, "\n", memory::Describe(policy), "\n");
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_MD_CTX* context = EVP_MD_CTX_new();
  EVP_DigestInit_ex(context, EVP_sha256(), nullptr);
  EVP_DigestUpdate(context, head.data(), head.size());
  EVP_DigestUpdate(context, tokens.data(), tokens.size() * sizeof(int32_t));
  EVP_DigestFinal_ex(context, digest, &size);
  EVP_MD_CTX_free(context);
  return "d-" + absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(digest), 16));
}

}  // namespace

DocumentService::DocumentService(const ServiceRuntime& runtime, SessionManager& sessions)
    : runtime_(runtime), sessions_(sessions) {}

v1::Document DocumentService::ToProto(const store::DocumentRecord& record,
                                      const memory::FrozenKv& entries, bool created) const {
  v1::Document document;
  document.set_document_id(record.document_id());
  document.set_model(record.model_fingerprint());
  *document.mutable_policy() = record.policy();
  document.set_raw_tokens(record.raw_tokens());
  document.set_stream_tokens(record.stream_tokens());
  document.set_retained_entries(entries.size());
  document.set_bytes(entries.bytes());
  document.set_created(created);
  document.mutable_labels()->insert(record.labels().begin(), record.labels().end());
  *document.mutable_create_time() =
      google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(record.create_time_micros());
  return document;
}

void DocumentService::Put(const std::string& tenant, const v1::PutDocumentRequest& request,
                          std::function<bool()> is_cancelled, Done<v1::Document> done) {
  const Limits& limits = runtime_.config.limits;
  if (request.text().empty()) return done(absl::InvalidArgumentError("the document is empty"));
  if (static_cast<int64_t>(request.text().size()) > limits.max_content_bytes) {
    return done(absl::InvalidArgumentError(absl::StrCat("the document has ", request.text().size(),
                                                        " bytes; the limit is ",
                                                        limits.max_content_bytes)));
  }
  absl::StatusOr<std::string_view> role =
      NormalizeRole(request.role().empty() ? "user" : request.role());
  if (!role.ok()) return done(role.status());
  if (*role == "assistant") {
    return done(absl::InvalidArgumentError("a document is read as a user, system or tool message"));
  }
  absl::StatusOr<memory::Policy> policy = runtime_.policies.Resolve(request.policy());
  if (!policy.ok()) return done(policy.status());
  absl::StatusOr<std::vector<int32_t>> tokens = runtime_.turn_tokens.Message(*role, request.text());
  if (!tokens.ok()) return done(tokens.status());
  if (static_cast<int64_t>(tokens->size()) > limits.max_request_tokens) {
    return done(absl::ResourceExhaustedError(
        absl::StrCat("the document takes ", tokens->size(), " tokens; a request may add ",
                     limits.max_request_tokens, " (--max_request_tokens)")));
  }
  auto memory = std::make_shared<memory::SessionMemory>(runtime_.engine.kv_pool(), *policy);
  if (memory->RawRoom(runtime_.max_session_tokens) < static_cast<int64_t>(tokens->size())) {
    return done(absl::ResourceExhaustedError("the document does not fit in a session"));
  }

  store::DocumentRecord record;
  record.set_tenant(tenant);
  record.set_document_id(DocumentId(runtime_.model_fingerprint, *policy, *tokens));
  record.set_model_fingerprint(runtime_.model_fingerprint);
  *record.mutable_policy() = PolicyResolver::ToProto(*policy);
  record.mutable_token_ids()->Add(tokens->begin(), tokens->end());
  record.set_raw_tokens(static_cast<int64_t>(tokens->size()));
  record.mutable_labels()->insert(request.labels().begin(), request.labels().end());

  // Stored already: nothing to compute.
  absl::StatusOr<LoadedDocument> existing = runtime_.documents.Load(tenant, record.document_id());
  if (existing.ok()) return done(ToProto(existing->record, *existing->entries, false));
  if (existing.status().code() != absl::StatusCode::kNotFound) return done(existing.status());

  auto job = std::make_unique<Job>();
  job->memory = memory.get();
  job->prompt = *tokens;
  job->is_cancelled = std::move(is_cancelled);
  job->on_token = [](int32_t) {};
  job->on_done = [this, memory, record = std::move(record),
                  done = std::move(done)](JobResult result) mutable {
    runtime_.workers.Post([this, memory, record = std::move(record), done = std::move(done),
                           result = std::move(result)]() mutable {
      if (result.outcome == JobResult::Outcome::kCancelled) {
        return done(absl::CancelledError("PutDocument was cancelled"));
      }
      if (result.outcome == JobResult::Outcome::kFailed) {
        return done(
            absl::Status(result.error_code, absl::StrCat("forward pass failed: ", result.error)));
      }
      absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> frozen = memory->Frozen();
      if (!frozen.ok()) return done(frozen.status());
      const memory::EntryList kept = memory->FrozenEntries();
      store::KvSegment segment = EncodeKvSegment(runtime_.engine.config(), *memory, kept,
                                                 runtime_.model_fingerprint, 0, "document");
      record.set_stream_tokens(memory->state().stream_tokens);
      record.set_create_time_micros(absl::ToUnixMicros(absl::Now()));
      *record.mutable_segment() = segment.header;
      absl::Status stored = runtime_.store.PutDocument(record, segment.payload);
      if (!stored.ok() && stored.code() != absl::StatusCode::kAlreadyExists) return done(stored);
      LoadedDocument loaded{record, *std::move(frozen)};
      spdlog::info("document {} stored: {} tokens, {} entries kept ({})", record.document_id(),
                   record.token_ids_size(), loaded.entries->size(),
                   memory::Describe(memory->policy()));
      v1::Document document = ToProto(record, *loaded.entries, stored.ok());
      runtime_.documents.Insert(record.tenant(), std::move(loaded));
      done(std::move(document));
    });
  };
  runtime_.scheduler.Submit(std::move(job));
}

absl::StatusOr<v1::Document> DocumentService::Get(const std::string& tenant,
                                                  std::string_view document_id) {
  absl::StatusOr<LoadedDocument> loaded = runtime_.documents.Load(tenant, document_id);
  if (!loaded.ok()) return loaded.status();
  return ToProto(loaded->record, *loaded->entries, false);
}

void DocumentService::Attach(const std::string& tenant, const v1::AttachDocumentRequest& request,
                             Done<v1::AttachDocumentResponse> done) {
  auto operation = [this, request, done](absl::StatusOr<std::shared_ptr<LiveSession>> held,
                                         SessionManager::Release release) {
    if (!held.ok()) {
      release(true);
      return done(held.status());
    }
    LiveSession& session = **held;
    absl::StatusOr<LoadedDocument> document =
        runtime_.documents.Load(session.tenant, request.document_id());
    if (!document.ok()) {
      release(true);
      return done(document.status());
    }
    if (session.stream.empty()) {
      release(true);
      return done(absl::FailedPreconditionError(
          absl::StrCat("session ", session.id,
                       " has not read its system prompt yet; append a message or "
                       "run a turn before attaching a document")));
    }
    if (session.reply_open) {
      release(true);
      return done(absl::FailedPreconditionError(
          "the session's last reply was cut by max_tokens; continue or answer it first"));
    }
    if (session.memory->state().stream_tokens + document->record.stream_tokens() >
        runtime_.max_session_tokens) {
      release(true);
      return done(absl::ResourceExhaustedError(absl::StrCat(
          "attaching ", document->record.stream_tokens(), " positions to session ", session.id,
          " would pass the ", runtime_.max_session_tokens, " a session may hold")));
    }
    session.memory->BeginTurn();
    session.memory->Attach(document->entries, document->record.document_id());
    store::TurnCommit commit;
    commit.session = session.record;
    store::TurnRecord& turn = commit.turns.emplace_back();
    turn.set_turn_index(session.record.turn_count());
    turn.set_role("document");
    turn.set_document_id(document->record.document_id());
    commit.session.set_turn_count(session.record.turn_count() + 1);
    commit.session.set_update_time_micros(absl::ToUnixMicros(absl::Now()));
    AddMemoryToCommit(runtime_.engine.config(), *session.memory, runtime_.model_fingerprint, 0,
                      commit);
    commit.epoch = session.epoch;
    if (absl::Status committed = runtime_.store.CommitTurn(commit); !committed.ok()) {
      session.memory->Rollback();
      // Fenced (another server owns the session) or overtaken: this copy is stale.
      release(!absl::IsAborted(committed) && !absl::IsFailedPrecondition(committed));
      return done(committed);
    }
    session.memory->EndTurn();
    session.record = std::move(commit.session);
    v1::AttachDocumentResponse response;
    response.mutable_usage()->set_cached_tokens(document->record.stream_tokens());
    response.mutable_usage()->set_stream_tokens(session.record.stream_tokens());
    response.set_attached_entries(document->entries->size());
    spdlog::info("session {}: document {} attached at {} ({} entries)", session.id,
                 document->record.document_id(),
                 session.memory->state().stream_tokens - document->record.stream_tokens(),
                 document->entries->size());
    release(true);
    done(std::move(response));
  };
  if (absl::Status queued = sessions_.RunExclusive(tenant, request.session_id(), request.if_idle(),
                                                   std::move(operation));
      !queued.ok()) {
    done(queued);
  }
}

}  // namespace gistmem::service
