#include "store/rados_store.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "store/absl_view.h"
#include "store/ids.h"
#include "store/kv_segment_codec.h"
#include "store/page_token.h"
#include "store/records.h"
#include "store/turn_commit_check.h"

namespace gistmem::store {
namespace {

constexpr char kIndexObject[] = "gistmem.index";
constexpr char kEpochXattr[] = "gistmem.epoch";
constexpr char kTurnsXattr[] = "gistmem.turns";
constexpr char kMetaKey[] = "meta";
constexpr char kTurnPrefix[] = "t/";
constexpr char kSegmentPrefix[] = "k/";
// One read returns at most this many transcript or segment keys (the OSD's own limit is
// osd_max_omap_entries_per_request, 131072); a longer session is refused, never cut.
constexpr uint64_t kMaxOmapPerRead = 100000;
constexpr int kMaxEpochRaces = 16;

std::string Decimal20(uint64_t value) {
  return absl::StrFormat("%020u", value);
}

std::optional<uint64_t> ParseDecimal(std::string_view text) {
  uint64_t value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (error != std::errc() || end != text.data() + text.size() || text.empty()) return {};
  return value;
}

std::string HeadObject(std::string_view tenant, std::string_view session_id) {
  return absl::StrCat("head/", AbslView(tenant), "/", AbslView(session_id));
}
std::string IndexKey(std::string_view tenant, std::string_view session_id) {
  return absl::StrCat(AbslView(tenant), "/", AbslView(session_id));
}
std::string DocumentObject(std::string_view tenant, std::string_view document_id) {
  return absl::StrCat("doc/", AbslView(tenant), "/", AbslView(document_id));
}
std::string TurnKey(int64_t index) {
  return absl::StrCat(kTurnPrefix, Decimal20(static_cast<uint64_t>(index)));
}
std::string SegmentKey(uint64_t seq) {
  return absl::StrCat(kSegmentPrefix, Decimal20(seq));
}

// A name no other writer uses: the epoch says who wrote it, the nonce tells retries apart.
std::string NewSegmentObject(std::string_view tenant, std::string_view session_id, uint64_t seq,
                             uint64_t epoch) {
  thread_local std::mt19937_64 generator{std::random_device{}()};
  return absl::StrFormat("seg/%s/%s/%020u.%020u.%016x", AbslView(tenant), AbslView(session_id), seq,
                         epoch, generator());
}

absl::Status ValidateSessionIds(std::string_view tenant, std::string_view session_id) {
  if (absl::Status status = ValidateId("tenant", tenant); !status.ok()) return status;
  return ValidateId("session id", session_id);
}

absl::Status At(const absl::Status& status, std::string_view object) {
  return absl::Status(status.code(),
                      absl::StrCat("object ", AbslView(object), ": ", status.message()));
}

struct SegmentRef {
  uint64_t bytes = 0;
  std::string object;
};

std::string EncodeRef(uint64_t bytes, std::string_view object) {
  return absl::StrCat(bytes, " ", AbslView(object));
}
std::optional<SegmentRef> DecodeRef(std::string_view value) {
  const size_t space = value.find(' ');
  if (space == std::string_view::npos) return {};
  std::optional<uint64_t> bytes = ParseDecimal(value.substr(0, space));
  if (!bytes) return {};
  return SegmentRef{*bytes, std::string(value.substr(space + 1))};
}

}  // namespace

struct RadosStore::Head {
  std::string object;
  uint64_t epoch = 0;
  int64_t turns = 0;
  absl::StatusOr<SessionRecord> record = absl::UnknownError("unread");
  KeyValues transcript;  // "t/..." -> TurnRecord value
  KeyValues segments;    // "k/..." -> ref
};

absl::StatusOr<std::unique_ptr<RadosStore>> RadosStore::Open(const RadosStoreOptions& options) {
  if (options.pool.empty()) return absl::InvalidArgumentError("a RADOS pool name is required");
  absl::StatusOr<std::unique_ptr<RadosPool>> pool =
      RadosPool::Connect(options.conf_file, options.client_id, options.pool, options.op_timeout);
  if (!pool.ok()) return pool.status();
  spdlog::info("store: RADOS pool {} ({})", options.pool,
               options.conf_file.empty() ? "default Ceph configuration" : options.conf_file);
  return std::unique_ptr<RadosStore>(new RadosStore(*std::move(pool)));
}

absl::StatusOr<RadosStore::Head> RadosStore::ReadHead(std::string_view tenant,
                                                      std::string_view session_id, bool transcript,
                                                      bool segments) const {
  Head head;
  head.object = HeadObject(tenant, session_id);
  KeyValues xattrs, meta;
  bool more_turns = false, more_segments = false;
  ReadOp op;
  op.GetXattrs(&xattrs);
  op.GetOmapKeys({kMetaKey}, &meta);
  if (transcript) op.GetOmapPrefix(kTurnPrefix, kMaxOmapPerRead, &head.transcript, &more_turns);
  if (segments) op.GetOmapPrefix(kSegmentPrefix, kMaxOmapPerRead, &head.segments, &more_segments);
  if (absl::Status read = op.Run(*pool_, head.object); !read.ok()) {
    if (absl::IsNotFound(read)) {
      return absl::NotFoundError(absl::StrCat("no session \"", AbslView(session_id), "\""));
    }
    return read;
  }
  if (more_turns || more_segments) {
    return absl::ResourceExhaustedError(
        absl::StrCat("session ", AbslView(session_id), " has more than ", kMaxOmapPerRead,
                     more_turns ? " turns" : " KV segments", ", more than one RADOS read returns"));
  }
  std::optional<uint64_t> epoch, turns;
  if (auto it = xattrs.find(kEpochXattr); it != xattrs.end()) epoch = ParseDecimal(it->second);
  if (auto it = xattrs.find(kTurnsXattr); it != xattrs.end()) turns = ParseDecimal(it->second);
  if (!epoch || !turns) {
    return At(absl::DataLossError("the head's epoch or turn count xattr is missing or damaged"),
              head.object);
  }
  head.epoch = *epoch;
  head.turns = static_cast<int64_t>(*turns);
  if (auto it = meta.find(kMetaKey); it == meta.end()) {
    head.record = At(absl::DataLossError("the head has no \"meta\" record"), head.object);
  } else {
    head.record = DecodeSessionValue(it->second);
    if (!head.record.ok()) {
      head.record = At(head.record.status(), head.object);
    } else if (head.record->tenant() != tenant || head.record->session_id() != session_id) {
      head.record =
          At(absl::DataLossError(absl::StrCat("record belongs to session \"", head.record->tenant(),
                                              "/", head.record->session_id(), "\"")),
             head.object);
    } else if (head.record->turn_count() != head.turns) {
      head.record = At(absl::DataLossError(absl::StrCat("record counts ", head.record->turn_count(),
                                                        " turns, the head's xattr ", head.turns)),
                       head.object);
    }
  }
  return head;
}

absl::Status RadosStore::AddToIndex(std::string_view tenant, std::string_view session_id) {
  WriteOp op;
  op.OmapSet(IndexKey(tenant, session_id), "");
  return op.Run(*pool_, kIndexObject);
}

absl::Status RadosStore::CreateSession(const SessionRecord& record) {
  if (absl::Status ids = ValidateSessionIds(record.tenant(), record.session_id()); !ids.ok()) {
    return ids;
  }
  const std::string object = HeadObject(record.tenant(), record.session_id());
  WriteOp op;
  op.CreateExclusive();
  op.SetXattr(kEpochXattr, Decimal20(0));
  op.SetXattr(kTurnsXattr, Decimal20(static_cast<uint64_t>(record.turn_count())));
  op.OmapSet(kMetaKey, EncodeSessionValue(record));
  if (absl::Status created = op.Run(*pool_, object); !created.ok()) {
    if (absl::IsAlreadyExists(created)) {
      return absl::AlreadyExistsError(
          absl::StrCat("session \"", record.session_id(), "\" already exists"));
    }
    return created;
  }
  if (absl::Status indexed = AddToIndex(record.tenant(), record.session_id()); !indexed.ok()) {
    // Unlisted but whole would confuse: take the head back (best effort) and report.
    pool_->Remove(object).IgnoreError();
    return indexed;
  }
  return absl::OkStatus();
}

absl::StatusOr<SessionRecord> RadosStore::GetSession(std::string_view tenant,
                                                     std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  absl::StatusOr<Head> head = ReadHead(tenant, session_id, false, false);
  if (!head.ok()) return head.status();
  return head->record;
}

absl::StatusOr<SessionPage> RadosStore::ListSessions(std::string_view tenant, int page_size,
                                                     std::string_view page_token) const {
  if (absl::Status id = ValidateId("tenant", tenant); !id.ok()) return id;
  absl::StatusOr<PageRequest> request = ParsePageRequest(page_size, page_token);
  if (!request.ok()) return request.status();
  page_size = request->page_size;
  std::string after =
      request->after_id.empty() ? std::string() : IndexKey(tenant, request->after_id);
  const std::string prefix = absl::StrCat(AbslView(tenant), "/");
  SessionPage page;
  std::string last_id;
  bool more = true;
  // Index entries of sessions deleted half way have no head: skipped, and the page filled
  // from the entries after them.
  while (more && static_cast<int>(page.sessions.size() + page.unreadable.size()) < page_size) {
    KeyValues entries;
    ReadOp op;
    op.GetOmapPrefix(prefix, static_cast<uint64_t>(page_size), &entries, &more, after);
    if (absl::Status read = op.Run(*pool_, kIndexObject); !read.ok()) {
      if (absl::IsNotFound(read)) return page;  // no session was ever created
      return read;
    }
    for (const auto& [key, unused] : entries) {
      after = key;
      if (static_cast<int>(page.sessions.size() + page.unreadable.size()) >= page_size) {
        more = true;
        break;
      }
      const std::string id = key.substr(prefix.size());
      absl::StatusOr<Head> head = ReadHead(tenant, id, false, false);
      if (absl::IsNotFound(head.status())) continue;
      last_id = id;
      if (!head.ok()) {
        page.unreadable.push_back({id, head.status()});
      } else if (!head->record.ok()) {
        page.unreadable.push_back({id, head->record.status()});
      } else {
        page.sessions.push_back(*head->record);
      }
    }
    if (entries.empty()) break;
  }
  if (more && !last_id.empty()) page.next_page_token = EncodePageToken(last_id);
  return page;
}

absl::Status RadosStore::DeleteSession(std::string_view tenant, std::string_view session_id) {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  // Existence and segment list only: a damaged session must stay deletable.
  absl::StatusOr<Head> head = ReadHead(tenant, session_id, false, true);
  if (!head.ok() && !absl::IsDataLoss(head.status())) return head.status();
  const std::string object = HeadObject(tenant, session_id);
  WriteOp remove;
  remove.Remove();
  if (absl::Status removed = remove.Run(*pool_, object); !removed.ok()) {
    if (absl::IsNotFound(removed)) {
      return absl::NotFoundError(absl::StrCat("no session \"", AbslView(session_id), "\""));
    }
    return removed;
  }
  // The head was the session; what follows only tidies (CollectGarbage finishes it).
  WriteOp unindex;
  unindex.OmapRemove(IndexKey(tenant, session_id));
  if (absl::Status status = unindex.Run(*pool_, kIndexObject); !status.ok()) {
    spdlog::warn("session {}: index entry not removed: {}", session_id, status.ToString());
  }
  if (head.ok()) {
    std::vector<std::string> objects;
    for (const auto& [key, value] : head->segments) {
      if (std::optional<SegmentRef> ref = DecodeRef(value)) objects.push_back(ref->object);
    }
    if (absl::Status status = pool_->RemoveAll(objects); !status.ok()) {
      spdlog::warn("session {}: segments left for garbage collection: {}", session_id,
                   status.ToString());
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<KvSegment>> RadosStore::ReadSegments(const Head& head) const {
  std::vector<KvSegment> segments;
  for (const auto& [key, value] : head.segments) {
    std::optional<uint64_t> seq = ParseDecimal(std::string_view(key).substr(2));
    std::optional<SegmentRef> ref = DecodeRef(value);
    if (!seq || !ref) {
      return At(absl::DataLossError(absl::StrCat("malformed segment entry ", key)), head.object);
    }
    absl::StatusOr<std::string> data = pool_->ReadAll(ref->object);
    if (!data.ok()) {
      // The head names it, so it must be there; NOT_FOUND here is loss (or a racing delete,
      // which the caller retries).
      return absl::IsNotFound(data.status())
                 ? At(absl::DataLossError(
                          absl::StrCat("segment ", *seq, " (", ref->object, ") is missing")),
                      head.object)
                 : data.status();
    }
    if (data->size() != ref->bytes) {
      return At(absl::DataLossError(
                    absl::StrCat("holds ", data->size(), " bytes, the head says ", ref->bytes)),
                ref->object);
    }
    absl::StatusOr<DecodedKvSegment> decoded = DecodeKvSegmentValue(*data);
    if (!decoded.ok()) return At(decoded.status(), ref->object);
    segments.push_back(KvSegment{*seq, std::move(decoded->header), std::string(decoded->payload)});
  }
  return segments;
}

absl::StatusOr<SessionRecord> RadosStore::ForkSession(std::string_view tenant,
                                                      std::string_view source_session_id,
                                                      std::string_view new_session_id) {
  if (absl::Status ids = ValidateSessionIds(tenant, source_session_id); !ids.ok()) return ids;
  if (absl::Status id = ValidateId("session id", new_session_id); !id.ok()) return id;
  absl::StatusOr<Head> head = ReadHead(tenant, source_session_id, true, true);
  if (!head.ok()) return head.status();
  if (!head->record.ok()) return head->record.status();
  absl::StatusOr<std::vector<KvSegment>> segments = ReadSegments(*head);
  if (!segments.ok()) return segments.status();

  SessionRecord record = *head->record;
  record.set_session_id(std::string(new_session_id));
  const int64_t now = absl::ToUnixMicros(absl::Now());
  record.set_create_time_micros(now);
  record.set_update_time_micros(now);

  std::vector<std::pair<std::string, std::string>> objects;
  WriteOp op;
  op.CreateExclusive();
  op.SetXattr(kEpochXattr, Decimal20(0));
  op.SetXattr(kTurnsXattr, Decimal20(static_cast<uint64_t>(record.turn_count())));
  op.OmapSet(kMetaKey, EncodeSessionValue(record));
  for (const auto& [key, value] : head->transcript) {
    // Checked before it is copied, so damage is reported at the source.
    if (absl::Status valid = DecodeTurnValue(value).status(); !valid.ok()) {
      return At(valid, absl::StrCat(head->object, " ", key));
    }
    op.OmapSet(key, value);
  }
  for (const KvSegment& segment : *segments) {
    std::string name = NewSegmentObject(tenant, new_session_id, segment.seq, 0);
    std::string data = EncodeKvSegmentValue(segment.header, segment.payload);
    op.OmapSet(SegmentKey(segment.seq), EncodeRef(data.size(), name));
    objects.emplace_back(std::move(name), std::move(data));
  }
  auto forget_objects = [&] {
    std::vector<std::string> names;
    for (const auto& object : objects)
      names.push_back(object.first);
    pool_->RemoveAll(names).IgnoreError();
  };
  if (absl::Status written = pool_->CreateAll(objects); !written.ok()) {
    forget_objects();
    return written;
  }
  if (absl::Status created = op.Run(*pool_, HeadObject(tenant, new_session_id)); !created.ok()) {
    forget_objects();
    if (absl::IsAlreadyExists(created)) {
      return absl::AlreadyExistsError(
          absl::StrCat("session \"", AbslView(new_session_id), "\" already exists"));
    }
    return created;
  }
  if (absl::Status indexed = AddToIndex(tenant, new_session_id); !indexed.ok()) {
    spdlog::warn("fork {}: not in the session index: {}", new_session_id, indexed.ToString());
  }
  return record;
}

absl::Status RadosStore::CommitTurn(const TurnCommit& commit) {
  const std::string_view tenant = commit.session.tenant();
  const std::string_view session_id = commit.session.session_id();
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  absl::StatusOr<Head> head =
      ReadHead(tenant, session_id, false, !commit.deleted_kv_segments.empty());
  if (!head.ok()) return head.status();
  if (head->epoch != commit.epoch) {
    return absl::AbortedError(absl::StrCat(
        "session ", AbslView(session_id), " is owned by another server now (epoch ", head->epoch,
        "; this commit holds ", commit.epoch, "): the turn was not stored"));
  }
  if (!head->record.ok()) return head->record.status();
  if (absl::Status follows = CheckTurnCommit(*head->record, commit); !follows.ok()) return follows;

  // Step 1: the new segments, under names nobody else writes.
  std::vector<std::pair<std::string, std::string>> objects;
  WriteOp op;
  op.CmpXattrEq(kEpochXattr, Decimal20(commit.epoch));
  op.CmpXattrEq(kTurnsXattr, Decimal20(static_cast<uint64_t>(head->turns)));
  for (const KvSegment& segment : commit.new_kv_segments) {
    std::string name = NewSegmentObject(tenant, session_id, segment.seq, commit.epoch);
    std::string data = EncodeKvSegmentValue(segment.header, segment.payload);
    op.OmapSet(SegmentKey(segment.seq), EncodeRef(data.size(), name));
    objects.emplace_back(std::move(name), std::move(data));
  }
  std::vector<std::string> written;
  for (const auto& object : objects)
    written.push_back(object.first);
  if (absl::Status status = pool_->CreateAll(objects); !status.ok()) {
    pool_->RemoveAll(written).IgnoreError();
    return status;
  }

  // Step 2: the commit point.
  op.OmapSet(kMetaKey, EncodeSessionValue(commit.session));
  for (const TurnRecord& turn : commit.turns)
    op.OmapSet(TurnKey(turn.turn_index()), EncodeTurnValue(turn));
  std::vector<std::string> replaced;
  for (uint64_t seq : commit.deleted_kv_segments) {
    const std::string key = SegmentKey(seq);
    op.OmapRemove(key);
    if (auto it = head->segments.find(key); it != head->segments.end()) {
      if (std::optional<SegmentRef> ref = DecodeRef(it->second)) replaced.push_back(ref->object);
    }
  }
  const int64_t turns_after = commit.session.turn_count();
  op.SetXattr(kTurnsXattr, Decimal20(static_cast<uint64_t>(turns_after)));
  absl::Status committed = op.Run(*pool_, head->object);
  if (absl::IsAborted(committed)) {
    // A guard failed: someone took the session over or committed first. Nothing was applied.
    pool_->RemoveAll(written).IgnoreError();
    absl::StatusOr<uint64_t> now = SessionEpoch(tenant, session_id);
    if (now.ok() && *now != commit.epoch) {
      return absl::AbortedError(absl::StrCat(
          "session ", AbslView(session_id), " was taken over by another server (epoch ", *now,
          "; this commit holds ", commit.epoch, "): the turn was not stored"));
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "session ", AbslView(session_id), " changed while the turn was committed (it had ",
        head->turns, " turns): the turn was not stored"));
  }
  if (!committed.ok()) return ResolveUnknownCommit(commit, turns_after, committed);
  // The replaced segments are no longer named: remove them now (what fails, GC removes).
  if (absl::Status removed = pool_->RemoveAll(replaced); !removed.ok()) {
    spdlog::debug("session {}: replaced segments left for GC: {}", session_id, removed.ToString());
  }
  return absl::OkStatus();
}

absl::Status RadosStore::ResolveUnknownCommit(const TurnCommit& commit, int64_t turns_after,
                                              const absl::Status& failure) {
  const std::string_view tenant = commit.session.tenant();
  const std::string_view session_id = commit.session.session_id();
  // Raising the epoch orders a fence after the lost write at the head's primary: if the
  // write has not been applied by then it never will be (its epoch guard fails).
  WriteOp fence;
  fence.CmpXattrEq(kEpochXattr, Decimal20(commit.epoch));
  fence.SetXattr(kEpochXattr, Decimal20(commit.epoch + 1));
  const absl::Status fenced = fence.Run(*pool_, HeadObject(tenant, session_id));
  absl::StatusOr<Head> head = ReadHead(tenant, session_id, false, false);
  if ((fenced.ok() || absl::IsAborted(fenced)) && head.ok() && head->record.ok() &&
      head->turns == turns_after &&
      head->record->update_time_micros() == commit.session.update_time_micros()) {
    spdlog::warn("session {}: commit reported {} but is stored", session_id, failure.ToString());
    return absl::OkStatus();
  }
  if (fenced.ok() && head.ok()) {
    return absl::UnavailableError(absl::StrCat("the turn was not stored (", failure.message(),
                                               "); the session was fenced against it"));
  }
  return absl::UnavailableError(
      absl::StrCat("the turn's commit failed (", failure.message(),
                   "); whether it was stored shows when the session is next loaded"));
}

absl::StatusOr<std::vector<TurnRecord>> RadosStore::LoadTranscript(
    std::string_view tenant, std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  absl::StatusOr<Head> head = ReadHead(tenant, session_id, true, false);
  if (!head.ok()) return head.status();
  std::vector<TurnRecord> turns;
  for (const auto& [key, value] : head->transcript) {
    absl::StatusOr<TurnRecord> turn = DecodeTurnValue(value);
    if (!turn.ok()) return At(turn.status(), absl::StrCat(head->object, " ", key));
    if (ParseDecimal(std::string_view(key).substr(2)) !=
        static_cast<uint64_t>(turn->turn_index())) {
      return At(absl::DataLossError(absl::StrCat("record holds turn_index ", turn->turn_index())),
                absl::StrCat(head->object, " ", key));
    }
    turns.push_back(*std::move(turn));
  }
  return turns;
}

absl::StatusOr<std::vector<KvSegment>> RadosStore::LoadKvSegments(
    std::string_view tenant, std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  // A commit of the owner may replace (and remove) a segment between our head read and the
  // segment read; a second look at a newer head settles it.
  absl::Status last;
  for (int attempt = 0; attempt < 3; ++attempt) {
    absl::StatusOr<Head> head = ReadHead(tenant, session_id, false, true);
    if (!head.ok()) return head.status();
    absl::StatusOr<std::vector<KvSegment>> segments = ReadSegments(*head);
    if (segments.ok() || !absl::IsDataLoss(segments.status())) return segments;
    last = segments.status();
    absl::StatusOr<Head> again = ReadHead(tenant, session_id, false, true);
    if (!again.ok() || again->segments == head->segments) break;
  }
  return last;
}

absl::StatusOr<SessionStorageStats> RadosStore::Stats(std::string_view tenant,
                                                      std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  absl::StatusOr<Head> head = ReadHead(tenant, session_id, true, true);
  if (!head.ok()) return head.status();
  SessionStorageStats stats;
  for (const auto& [key, value] : head->segments) {
    ++stats.kv_segments;
    if (std::optional<SegmentRef> ref = DecodeRef(value)) {
      stats.kv_bytes += static_cast<int64_t>(ref->bytes);
    }
  }
  for (const auto& [key, value] : head->transcript) {
    ++stats.transcript_turns;
    stats.transcript_bytes += static_cast<int64_t>(value.size());
  }
  return stats;
}

absl::StatusOr<int64_t> RadosStore::CountSessions() const {
  int64_t count = 0;
  std::string after;
  for (bool more = true; more;) {
    KeyValues entries;
    ReadOp op;
    op.GetOmapPrefix("", 10000, &entries, &more, after);
    if (absl::Status read = op.Run(*pool_, kIndexObject); !read.ok()) {
      if (absl::IsNotFound(read)) return count;
      return read;
    }
    if (entries.empty()) break;
    count += static_cast<int64_t>(entries.size());
    after = entries.rbegin()->first;
  }
  return count;
}

absl::Status RadosStore::PutDocument(const DocumentRecord& record, std::string_view payload) {
  if (absl::Status ids = ValidateSessionIds(record.tenant(), record.document_id()); !ids.ok()) {
    return ids;
  }
  const std::string object = DocumentObject(record.tenant(), record.document_id());
  WriteOp op;
  op.CreateExclusive();
  op.WriteFull(EncodeDocumentValue(record, payload));
  if (absl::Status written = op.Run(*pool_, object); !written.ok()) {
    if (absl::IsAlreadyExists(written)) {
      return absl::AlreadyExistsError(absl::StrCat("document ", object, " exists"));
    }
    return written;
  }
  return absl::OkStatus();
}

absl::StatusOr<StoredDocument> RadosStore::GetDocument(std::string_view tenant,
                                                       std::string_view document_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, document_id); !ids.ok()) return ids;
  const std::string object = DocumentObject(tenant, document_id);
  absl::StatusOr<std::string> data = pool_->ReadAll(object);
  if (!data.ok()) {
    if (absl::IsNotFound(data.status())) {
      return absl::NotFoundError(absl::StrCat("no document \"", AbslView(document_id), "\""));
    }
    return data.status();
  }
  absl::StatusOr<DecodedDocument> decoded = DecodeDocumentValue(*data);
  if (!decoded.ok()) return At(decoded.status(), object);
  if (decoded->record.tenant() != tenant || decoded->record.document_id() != document_id) {
    return At(absl::DataLossError("the record names another document"), object);
  }
  return StoredDocument{std::move(decoded->record), std::string(decoded->payload)};
}

absl::StatusOr<uint64_t> RadosStore::SessionEpoch(std::string_view tenant,
                                                  std::string_view session_id) const {
  if (absl::Status ids = ValidateSessionIds(tenant, session_id); !ids.ok()) return ids;
  KeyValues xattrs;
  ReadOp op;
  op.GetXattrs(&xattrs);
  const std::string object = HeadObject(tenant, session_id);
  if (absl::Status read = op.Run(*pool_, object); !read.ok()) {
    if (absl::IsNotFound(read)) {
      return absl::NotFoundError(absl::StrCat("no session \"", AbslView(session_id), "\""));
    }
    return read;
  }
  auto it = xattrs.find(kEpochXattr);
  std::optional<uint64_t> epoch = it == xattrs.end() ? std::nullopt : ParseDecimal(it->second);
  if (!epoch) return At(absl::DataLossError("the epoch xattr is missing or damaged"), object);
  return *epoch;
}

absl::StatusOr<uint64_t> RadosStore::AcquireSession(std::string_view tenant,
                                                    std::string_view session_id) {
  const std::string object = HeadObject(tenant, session_id);
  for (int attempt = 0; attempt < kMaxEpochRaces; ++attempt) {
    absl::StatusOr<uint64_t> current = SessionEpoch(tenant, session_id);
    if (!current.ok()) return current.status();
    WriteOp op;
    op.CmpXattrEq(kEpochXattr, Decimal20(*current));
    op.SetXattr(kEpochXattr, Decimal20(*current + 1));
    absl::Status raised = op.Run(*pool_, object);
    if (raised.ok()) return *current + 1;
    if (!absl::IsAborted(raised)) return raised;  // ABORTED: another server raised it first
  }
  return absl::AbortedError(absl::StrCat("session ", AbslView(session_id), ": ", kMaxEpochRaces,
                                         " servers raced to take it over"));
}

absl::StatusOr<GarbageReport> RadosStore::CollectGarbage(absl::Duration min_age) {
  GarbageReport report;
  absl::StatusOr<std::vector<std::string>> names = pool_->List("seg/");
  if (!names.ok()) return names.status();
  // "seg/<tenant>/<session>/<rest>" grouped by session.
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> by_session;
  for (const std::string& name : *names) {
    std::vector<std::string> parts = absl::StrSplit(name, '/');
    if (parts.size() != 4) continue;
    by_session[{parts[1], parts[2]}].push_back(name);
  }
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  std::vector<std::string> doomed;
  for (const auto& [session, objects] : by_session) {
    report.segments_seen += static_cast<int64_t>(objects.size());
    std::set<std::string> named;
    absl::StatusOr<Head> head = ReadHead(session.first, session.second, false, true);
    if (head.ok()) {
      for (const auto& [key, value] : head->segments) {
        if (std::optional<SegmentRef> ref = DecodeRef(value)) named.insert(ref->object);
      }
    } else if (!absl::IsNotFound(head.status())) {
      continue;  // unreadable now: leave its segments alone
    }
    for (const std::string& object : objects) {
      if (named.count(object) != 0) continue;
      absl::StatusOr<std::pair<uint64_t, int64_t>> stat = pool_->Stat(object);
      if (stat.ok() && now - stat->second >= absl::ToInt64Seconds(min_age)) {
        doomed.push_back(object);
      }
    }
  }
  if (absl::Status removed = pool_->RemoveAll(doomed); !removed.ok()) return removed;
  report.segments_removed = static_cast<int64_t>(doomed.size());

  // Index entries whose head is gone (a delete that stopped half way).
  std::string after;
  for (bool more = true; more;) {
    KeyValues entries;
    ReadOp op;
    op.GetOmapPrefix("", 10000, &entries, &more, after);
    if (absl::Status read = op.Run(*pool_, kIndexObject); !read.ok()) {
      if (absl::IsNotFound(read)) break;
      return read;
    }
    if (entries.empty()) break;
    after = entries.rbegin()->first;
    for (const auto& [key, unused] : entries) {
      const size_t slash = key.find('/');
      if (slash == std::string::npos) continue;
      if (absl::IsNotFound(
              pool_->Stat(HeadObject(key.substr(0, slash), key.substr(slash + 1))).status())) {
        WriteOp unindex;
        unindex.OmapRemove(key);
        if (unindex.Run(*pool_, kIndexObject).ok()) ++report.index_entries_removed;
      }
    }
  }
  return report;
}

}  // namespace gistmem::store
