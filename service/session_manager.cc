#include "service/session_manager.h"

#include <spdlog/spdlog.h>

#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "service/kv_segment.h"
#include "service/memory_commit.h"
#include "service/metrics.h"
#include "service/sampling_options.h"
#include "store/ids.h"

namespace gistmem::service {
namespace {

absl::Status CheckUsable(const store::SessionRecord& record, const std::string& fingerprint) {
  if (record.model_fingerprint() != fingerprint) {
    return absl::FailedPreconditionError(
        absl::StrCat("session ", record.session_id(), " was made for model ",
                     record.model_fingerprint(), "; this server runs ", fingerprint));
  }
  return absl::OkStatus();
}

}  // namespace

std::string NewSessionId() {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = "s-";
  for (int word = 0; word < 2; ++word) {
    uint64_t bits = generator();
    for (int i = 0; i < 16; ++i, bits >>= 4)
      id += kHex[bits & 0xf];
  }
  return id;
}

namespace {

int64_t HostBudget(const ServiceRuntime& runtime) {
  const int64_t configured = runtime.config.limits.max_host_cache_bytes;
  if (configured >= 0) return configured;
  // A host tier under a pool that is host memory already would only copy pages around.
  return runtime.engine.kv_pool().tier() == "gpu" ? int64_t{4} << 30 : 0;
}

}  // namespace

SessionManager::SessionManager(const ServiceRuntime& runtime)
    : runtime_(runtime), host_budget_(HostBudget(runtime)) {
  if (host_budget_ > 0) spdlog::info("host tier for parked sessions: {} bytes", host_budget_);
}

absl::Status SessionManager::Init() {
  absl::StatusOr<int64_t> stored = runtime_.store.CountSessions();
  if (!stored.ok()) return stored.status();
  stored_sessions_ = *stored;
  spdlog::info("store holds {} sessions", *stored);
  return absl::OkStatus();
}

absl::Status SessionManager::ReserveStoredSession() {
  const int64_t limit = runtime_.config.limits.max_stored_sessions;
  int64_t current = stored_sessions_.load();
  do {
    if (current >= limit) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "the store holds ", current, " sessions, the limit (--max_stored_sessions)"));
    }
  } while (!stored_sessions_.compare_exchange_weak(current, current + 1));
  return absl::OkStatus();
}

absl::StatusOr<store::SessionRecord> SessionManager::Create(
    std::string_view tenant, const v1::CreateSessionRequest& request) {
  const Limits& limits = runtime_.config.limits;
  const std::string id = request.session_id().empty() ? NewSessionId() : request.session_id();
  if (absl::Status valid = store::ValidateId("session id", id); !valid.ok()) return valid;
  absl::StatusOr<memory::Policy> policy = runtime_.policies.Resolve(request.policy());
  if (!policy.ok()) return policy.status();
  if (static_cast<int64_t>(request.system_prompt().size()) > limits.max_content_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("system_prompt has ", request.system_prompt().size(), " bytes; the limit is ",
                     limits.max_content_bytes));
  }
  absl::StatusOr<std::vector<int32_t>> start =
      runtime_.turn_tokens.SessionStart(request.system_prompt());
  if (!start.ok()) return start.status();
  const auto start_tokens = static_cast<int64_t>(start->size());
  if (start_tokens > limits.max_request_tokens || start_tokens >= runtime_.max_session_tokens) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the system prompt takes ", start_tokens, " tokens; a request may add ",
        limits.max_request_tokens, " and a session hold ", runtime_.max_session_tokens));
  }
  if (absl::Status sampling = ValidateSamplingDefaults(request.default_sampling(), limits);
      !sampling.ok()) {
    return sampling;
  }
  int64_t label_bytes = 0;
  for (const auto& [key, value] : request.labels())
    label_bytes += key.size() + value.size();
  if (label_bytes > limits.max_content_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "labels take ", label_bytes, " bytes; the limit is ", limits.max_content_bytes));
  }

  store::SessionRecord record;
  record.set_tenant(std::string(tenant));
  record.set_session_id(id);
  record.set_model_fingerprint(runtime_.model_fingerprint);
  *record.mutable_policy() = PolicyResolver::ToProto(*policy);
  record.set_system_prompt(request.system_prompt());
  *record.mutable_default_sampling() = request.default_sampling();
  record.mutable_labels()->insert(request.labels().begin(), request.labels().end());
  const int64_t now = absl::ToUnixMicros(absl::Now());
  record.set_create_time_micros(now);
  record.set_update_time_micros(now);

  if (absl::Status room = ReserveStoredSession(); !room.ok()) return room;
  if (absl::Status created = runtime_.store.CreateSession(record); !created.ok()) {
    stored_sessions_.fetch_sub(1);
    return created;
  }
  spdlog::info("session {} created, memory {}", id, memory::Describe(*policy));
  return record;
}

absl::StatusOr<store::SessionRecord> SessionManager::Get(std::string_view tenant,
                                                         std::string_view session_id) const {
  return runtime_.store.GetSession(tenant, session_id);
}

absl::StatusOr<store::SessionPage> SessionManager::List(std::string_view tenant, int page_size,
                                                        std::string_view page_token) const {
  if (page_size < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size must not be negative, got ", page_size));
  }
  absl::StatusOr<store::SessionPage> page =
      runtime_.store.ListSessions(tenant, page_size, page_token);
  if (page.ok()) {
    for (const store::UnreadableSession& bad : page->unreadable) {
      spdlog::warn("session {} is unreadable: {}", bad.session_id, bad.status.ToString());
    }
  }
  return page;
}

absl::Status SessionManager::Delete(std::string_view tenant, std::string_view session_id) {
  if (absl::Status valid = store::ValidateId("session id", session_id); !valid.ok()) return valid;
  {
    std::lock_guard lock(mutex_);
    const std::string key = absl::StrCat(std::string(tenant), "/", std::string(session_id));
    if (auto found = sessions_.find(key); found != sessions_.end()) {
      // Operations holding it see `deleted`: a running turn is cancelled, waiting ones fail.
      found->second->deleted = true;
      if (!found->second->busy) DropLocked(*found->second);
      sessions_.erase(found);
    }
  }
  absl::Status deleted = runtime_.store.DeleteSession(tenant, session_id);
  if (deleted.ok()) {
    stored_sessions_.fetch_sub(1);
    spdlog::info("session {} deleted", session_id);
  }
  return deleted;
}

absl::StatusOr<store::SessionRecord> SessionManager::Fork(std::string_view tenant,
                                                          std::string_view session_id,
                                                          std::string_view new_session_id) {
  const std::string new_id = new_session_id.empty() ? NewSessionId() : std::string(new_session_id);
  if (absl::Status valid = store::ValidateId("new session id", new_id); !valid.ok()) return valid;
  absl::StatusOr<store::SessionRecord> source = runtime_.store.GetSession(tenant, session_id);
  if (!source.ok()) return source.status();
  if (absl::Status usable = CheckUsable(*source, runtime_.model_fingerprint); !usable.ok()) {
    return usable;
  }
  if (absl::Status room = ReserveStoredSession(); !room.ok()) return room;
  absl::StatusOr<store::SessionRecord> forked =
      runtime_.store.ForkSession(tenant, session_id, new_id);
  if (!forked.ok()) {
    stored_sessions_.fetch_sub(1);
    return forked.status();
  }
  spdlog::info("session {} forked from {}", new_id, session_id);
  return forked;
}

absl::StatusOr<v1::SessionStats> SessionManager::Stats(std::string_view tenant,
                                                       std::string_view session_id) const {
  absl::StatusOr<store::SessionRecord> record = runtime_.store.GetSession(tenant, session_id);
  if (!record.ok()) return record.status();
  absl::StatusOr<store::SessionStorageStats> storage = runtime_.store.Stats(tenant, session_id);
  if (!storage.ok()) return storage.status();

  v1::SessionStats stats;
  stats.set_session_id(record->session_id());
  const store::v1::MemoryStateRecord& memory = record->memory();
  stats.set_stream_tokens(record->stream_tokens());
  stats.set_raw_tokens(memory.raw_tokens() + memory.unread_tokens());
  stats.set_sink_entries(memory.sink_entries());
  stats.set_gist_entries(memory.gist_entries());
  stats.set_pooled_entries(memory.pooled_entries());
  stats.set_window_entries(memory.raw_entries());
  const int64_t retained = memory.sink_entries() + memory.gist_entries() + memory.pooled_entries() +
                           memory.raw_entries();
  stats.set_retained_entries(retained);
  for (const store::v1::AttachedDocumentRecord& document : memory.documents())
    stats.set_document_entries(stats.document_entries() + document.entries());
  stats.set_documents(memory.documents_size());
  const int64_t kept = retained + stats.document_entries();
  stats.set_compression_ratio(kept > 0 ? static_cast<double>(record->stream_tokens()) / kept : 1.0);

  stats.set_bytes_disk(storage->kv_bytes + storage->transcript_bytes);
  // A session in memory holds pages of the engine's pool: host memory for the CPU engine,
  // device memory for the CUDA engine.
  // A parked one holds host memory instead.
  stats.set_bytes_gpu(0);
  {
    std::lock_guard lock(mutex_);
    const std::string key = absl::StrCat(std::string(tenant), "/", std::string(session_id));
    if (auto found = sessions_.find(key); found != sessions_.end()) {
      const int64_t bytes = found->second->cache_bytes.load();
      if (found->second->parked) {
        stats.set_bytes_host(found->second->parked_bytes);
      } else if (runtime_.engine.kv_pool().tier() == "gpu") {
        stats.set_bytes_gpu(bytes);
      } else {
        stats.set_bytes_host(bytes);
      }
    }
  }
  return stats;
}

absl::Status SessionManager::RunExclusive(std::string_view tenant, std::string_view session_id,
                                          bool if_idle, Operation operation) {
  if (absl::Status valid = store::ValidateId("session id", session_id); !valid.ok()) return valid;
  std::shared_ptr<LiveSession> session;
  {
    std::lock_guard lock(mutex_);
    const std::string key = absl::StrCat(std::string(tenant), "/", std::string(session_id));
    std::shared_ptr<LiveSession>& entry = sessions_[key];
    if (!entry) entry = std::make_shared<LiveSession>(std::string(tenant), std::string(session_id));
    session = entry;
    if (session->busy) {
      if (if_idle) {
        return absl::AbortedError(absl::StrCat("session ", std::string(session_id),
                                               " is running a turn (if_idle was set)"));
      }
      session->waiting.push_back(
          [this, session, operation = std::move(operation)] { Start(session, operation); });
      return absl::OkStatus();
    }
    session->busy = true;
    UnlinkLocked(*session);
  }
  Start(session, std::move(operation));
  return absl::OkStatus();
}

void SessionManager::Start(const std::shared_ptr<LiveSession>& session, Operation operation) {
  runtime_.workers.Post([this, session, operation = std::move(operation)] {
    auto release = [this, session,
                    released = std::make_shared<std::atomic<bool>>(false)](bool keep_in_memory) {
      if (released->exchange(true)) return;  // only the first call counts
      ReleaseSession(session, keep_in_memory);
    };
    if (session->deleted) {
      operation(absl::NotFoundError(absl::StrCat("session ", session->id, " was deleted")),
                release);
      return;
    }
    if (absl::Status loaded = EnsureLoaded(*session); !loaded.ok()) {
      operation(loaded, release);
      return;
    }
    operation(session, release);
  });
}

absl::Status SessionManager::EnsureLoaded(LiveSession& session) {
  if (session.loaded && runtime_.store.shared()) {
    // Servers sharing the store: another one may have taken the session over (and committed
    // turns) since this one loaded it. One small read says; a stale copy is loaded anew
    // rather than run into the commit's fence after a whole turn of work.
    absl::StatusOr<uint64_t> epoch = runtime_.store.SessionEpoch(session.tenant, session.id);
    if (!epoch.ok()) return epoch.status();
    if (*epoch != session.epoch) {
      spdlog::info("session {} was taken over by another server (epoch {}, ours {}): reloading",
                   session.id, *epoch, session.epoch);
      std::lock_guard lock(mutex_);
      DropLocked(session);
    }
  }
  if (session.loaded) {
    bool parked = false;
    {
      std::lock_guard lock(mutex_);
      parked = session.parked;
    }
    return parked ? Unpark(session) : absl::OkStatus();
  }
  {
    std::lock_guard lock(mutex_);
    const int64_t limit = runtime_.config.limits.max_sessions_in_memory;
    if (sessions_in_memory_ >= limit) EvictLocked(sessions_in_memory_ - limit + 1);
    if (sessions_in_memory_ >= limit) {
      return absl::ResourceExhaustedError(
          absl::StrCat(sessions_in_memory_,
                       " sessions are in memory and busy, the limit "
                       "(--max_sessions_in_memory)"));
    }
    ++sessions_in_memory_;
    session.counted_in_memory = true;
  }
  absl::Status loaded = LoadFromStore(session);
  if (!loaded.ok()) {
    session.memory.reset();
    session.stream.clear();
    std::lock_guard lock(mutex_);
    --sessions_in_memory_;
    session.counted_in_memory = false;
  }
  return loaded;
}

absl::Status SessionManager::LoadFromStore(LiveSession& session) {
  // Ownership first, then the reads: a commit of the previous owner either landed before the
  // epoch moved (and is read below) or is refused by the store's fence.
  absl::StatusOr<uint64_t> epoch = runtime_.store.AcquireSession(session.tenant, session.id);
  if (!epoch.ok()) return epoch.status();
  session.epoch = *epoch;
  absl::StatusOr<store::SessionRecord> record =
      runtime_.store.GetSession(session.tenant, session.id);
  if (!record.ok()) return record.status();
  if (absl::Status usable = CheckUsable(*record, runtime_.model_fingerprint); !usable.ok()) {
    return usable;
  }
  absl::StatusOr<std::vector<store::TurnRecord>> transcript =
      runtime_.store.LoadTranscript(session.tenant, session.id);
  if (!transcript.ok()) return transcript.status();
  absl::StatusOr<std::vector<store::KvSegment>> segments =
      runtime_.store.LoadKvSegments(session.tenant, session.id);
  if (!segments.ok()) return segments.status();

  session.stream.clear();
  for (const store::TurnRecord& turn : *transcript) {
    session.stream.insert(session.stream.end(), turn.token_ids().begin(), turn.token_ids().end());
  }
  absl::StatusOr<memory::Policy> policy = runtime_.policies.FromStored(record->policy());
  if (!policy.ok()) {
    return absl::Status(policy.status().code(),
                        absl::StrCat("session ", session.id, ": ", policy.status().message()));
  }
  const store::v1::MemoryStateRecord& stored = record->memory();
  session.reply_open = stored.unread_tokens() > 0;
  session.memory = std::make_unique<memory::SessionMemory>(runtime_.engine.kv_pool(), *policy);
  for (const store::v1::AttachedDocumentRecord& attached : stored.documents()) {
    absl::StatusOr<LoadedDocument> document =
        runtime_.documents.Load(session.tenant, attached.document_id());
    if (!document.ok()) {
      return absl::Status(document.status().code(),
                          absl::StrCat("session ", session.id, ": ", document.status().message()));
    }
    if (document->entries->size() != attached.entries() ||
        document->record.stream_tokens() != attached.stream_tokens()) {
      return absl::DataLossError(absl::StrCat("session ", session.id, ": document ",
                                              attached.document_id(), " is not the one attached"));
    }
    session.memory->RestoreAttached({.kv = document->entries,
                                     .position_offset = attached.position_offset(),
                                     .label = attached.document_id()});
  }
  if (absl::Status restored =
          RestoreMemory(runtime_.engine.config(), *segments, runtime_.model_fingerprint,
                        StoredMemoryState(*record), *session.memory);
      !restored.ok()) {
    // No room in the KV pool is the caller's to retry; anything else is damage.
    const absl::StatusCode code = restored.code() == absl::StatusCode::kResourceExhausted
                                      ? restored.code()
                                      : absl::StatusCode::kDataLoss;
    return absl::Status(code, absl::StrCat("session ", session.id, ": ", restored.message()));
  }
  // A missing segment passes every checksum: the entries must be the ones the state counted.
  const memory::RetainedCounts counts = session.memory->Counts();
  if (counts.sink != stored.sink_entries() || counts.raw != stored.raw_entries() ||
      counts.gist != stored.gist_entries() || counts.pooled != stored.pooled_entries()) {
    return absl::DataLossError(absl::StrCat("session ", session.id, ": the stored segments hold ",
                                            counts.total(), " entries, the session record counts ",
                                            stored.sink_entries() + stored.raw_entries() +
                                                stored.gist_entries() + stored.pooled_entries()));
  }
  const auto tokens = static_cast<int64_t>(session.stream.size());
  const memory::MemoryState& state = session.memory->state();
  if (state.raw_tokens + stored.unread_tokens() != tokens ||
      record->stream_tokens() != state.stream_tokens + stored.unread_tokens() ||
      (stored.unread_tokens() != 0 && stored.unread_tokens() != 1)) {
    return absl::DataLossError(
        absl::StrCat("session ", session.id, " is inconsistent: the transcript has ", tokens,
                     " tokens, the memory read ", state.raw_tokens, " (", stored.unread_tokens(),
                     " unread), the record says ", record->stream_tokens(), " stream tokens"));
  }
  session.record = *std::move(record);
  session.loaded = true;
  session.cache_bytes = session.memory->Bytes();
  spdlog::debug("session {} loaded: {} tokens, {} entries from {} segments", session.id, tokens,
                session.memory->Counts().total(), segments->size());
  return absl::OkStatus();
}

absl::Status SessionManager::Unpark(LiveSession& session) {
  {
    std::lock_guard lock(mutex_);
    EvictLocked(0, session.parked_bytes);
  }
  if (absl::Status back = session.memory->Unpark(); !back.ok()) {
    // Still parked, nothing lost: the caller may retry once the pool has room.
    return absl::Status(back.code(),
                        absl::StrCat("session ", session.id,
                                     " cannot come back from the host tier: ", back.message()));
  }
  std::lock_guard lock(mutex_);
  parked_bytes_ -= session.parked_bytes;
  session.parked = false;
  session.parked_bytes = 0;
  session.cache_bytes = session.memory->Bytes();
  metrics::SessionUnparked();
  spdlog::debug("session {} back from the host tier ({} bytes)", session.id,
                session.cache_bytes.load());
  return absl::OkStatus();
}

void SessionManager::ReleaseSession(const std::shared_ptr<LiveSession>& session,
                                    bool keep_in_memory) {
  std::function<void()> next;
  {
    std::lock_guard lock(mutex_);
    if (!keep_in_memory || session->deleted) {
      DropLocked(*session);
    } else {
      bytes_in_memory_ += session->cache_bytes.load() - session->accounted_bytes;
      session->accounted_bytes = session->cache_bytes.load();
      if (session->loaded) metrics::SessionInMemory(*session);
    }
    if (!session->waiting.empty()) {
      next = std::move(session->waiting.front());
      session->waiting.pop_front();
    } else {
      session->busy = false;
      auto found = sessions_.find(session->key());
      const bool current = found != sessions_.end() && found->second == session;
      if (current && session->loaded) {
        session->lru_list = session->parked ? &parked_ : &lru_;
        session->lru_position = session->lru_list->insert(session->lru_list->end(), session.get());
      } else if (current) {
        sessions_.erase(found);  // nothing in memory and nobody waiting
      }
      EvictLocked(0);
    }
  }
  if (next) next();
}

void SessionManager::EvictLocked(int64_t sessions_to_free, int64_t bytes_needed) {
  const Limits& limits = runtime_.config.limits;
  // The session count covers both tiers: the least recently used leave memory, the parked
  // ones first (they have waited longest).
  while ((sessions_to_free > 0 || sessions_in_memory_ > limits.max_sessions_in_memory) &&
         (!parked_.empty() || !lru_.empty())) {
    LiveSession* victim = !parked_.empty() ? parked_.front() : lru_.front();
    spdlog::debug("session {} leaves memory", victim->id);
    DropLocked(*victim);
    sessions_.erase(victim->key());  // last use of `victim`: the map held its only reference
    --sessions_to_free;
  }
  // The byte budget counts every page of the engine's pool: idle sessions, the running ones
  // and documents alike, so idle sessions leave the pool to make room for live ones.
  const memory::BlockPool& pool = runtime_.engine.kv_pool();
  while (pool.bytes_in_use() + bytes_needed > limits.max_cache_bytes && !lru_.empty()) {
    LiveSession* victim = lru_.front();
    if (ParkLocked(*victim)) continue;
    spdlog::debug("session {} leaves memory ({} bytes)", victim->id, victim->accounted_bytes);
    DropLocked(*victim);
    sessions_.erase(victim->key());
  }
}

bool SessionManager::ParkLocked(LiveSession& session) {
  if (session.memory->Bytes() > host_budget_) return false;
  if (absl::Status parked = session.memory->Park(); !parked.ok()) {
    spdlog::warn("session {} cannot be parked in the host tier: {}", session.id, parked.ToString());
    return false;
  }
  UnlinkLocked(session);
  session.parked = true;
  session.parked_bytes = session.memory->ParkedBytes();
  parked_bytes_ += session.parked_bytes;
  // Room for it: the least recently parked leave memory (only once it is parked for sure).
  while (parked_bytes_ > host_budget_ && !parked_.empty()) {
    LiveSession* victim = parked_.front();
    spdlog::debug("parked session {} leaves memory ({} bytes)", victim->id, victim->parked_bytes);
    DropLocked(*victim);
    sessions_.erase(victim->key());
  }
  session.lru_list = &parked_;
  session.lru_position = parked_.insert(parked_.end(), &session);
  bytes_in_memory_ -= session.accounted_bytes;
  session.accounted_bytes = 0;
  session.cache_bytes = 0;
  metrics::SessionParked();
  metrics::SessionInMemory(session);
  spdlog::debug("session {} parked in the host tier ({} bytes)", session.id, session.parked_bytes);
  return true;
}

void SessionManager::UnlinkLocked(LiveSession& session) {
  if (session.lru_list == nullptr) return;
  session.lru_list->erase(session.lru_position);
  session.lru_list = nullptr;
}

void SessionManager::DropLocked(LiveSession& session) {
  metrics::SessionLeftMemory(session);
  UnlinkLocked(session);
  parked_bytes_ -= session.parked_bytes;
  session.parked = false;
  session.parked_bytes = 0;
  bytes_in_memory_ -= session.accounted_bytes;
  session.accounted_bytes = 0;
  if (session.counted_in_memory) {
    --sessions_in_memory_;
    session.counted_in_memory = false;
  }
  session.loaded = false;
  session.memory.reset();
  session.stream.clear();
  session.cache_bytes = 0;
}

int64_t SessionManager::sessions_in_memory() const {
  std::lock_guard lock(mutex_);
  return sessions_in_memory_;
}

int64_t SessionManager::cache_bytes_in_memory() const {
  std::lock_guard lock(mutex_);
  return bytes_in_memory_;
}

int64_t SessionManager::sessions_parked() const {
  std::lock_guard lock(mutex_);
  return static_cast<int64_t>(parked_.size());
}

int64_t SessionManager::parked_bytes() const {
  std::lock_guard lock(mutex_);
  return parked_bytes_;
}

}  // namespace gistmem::service
