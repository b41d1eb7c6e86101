// Persistence of sessions: metadata, transcripts and KV segments, behind an interface so that
// the service can be tested without a database.
//
// Every fallible call returns absl::Status codes the service passes on as gRPC codes:
// INVALID_ARGUMENT (bad id or page token), NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION (a
// commit that does not follow the stored session, a database of a newer format), DATA_LOSS (a
// damaged record; the message names column family and key), RESOURCE_EXHAUSTED (disk full),
// UNAVAILABLE, INTERNAL. Implementations are safe to call from many threads.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gistmem/store/v1/records.pb.h"

namespace gistmem::store {

using SessionRecord = gistmem::store::v1::SessionRecord;
using TurnRecord = gistmem::store::v1::TurnRecord;
using KvSegmentHeader = gistmem::store::v1::KvSegmentHeader;
using DocumentRecord = gistmem::store::v1::DocumentRecord;

// A shared document as stored: its record and the K/V bytes its segment header describes.
struct StoredDocument {
  DocumentRecord record;
  std::string payload;
};

struct KvSegment {
  uint64_t seq = 0;
  KvSegmentHeader header;
  std::string payload;  // raw K/V bytes as the header describes them
};

// Everything one turn changes, written atomically and durably (synced) by CommitTurn.
struct TurnCommit {
  // The session as it stands after the turn; its tenant and session_id say which one.
  // turn_count must equal the stored count plus turns.size(), and next_kv_segment_seq must be
  // past every new segment.
  SessionRecord session;
  // Appended to the transcript; their turn_index values continue the stored turn_count.
  std::vector<TurnRecord> turns;
  // New segments, with seqs from the stored next_kv_segment_seq on and headers of the
  // session's model.
  std::vector<KvSegment> new_kv_segments;
  // Earlier segments this turn replaces (an old window, gists merged into a pool).
  std::vector<uint64_t> deleted_kv_segments;
  // The committer's ownership epoch (AcquireSession). A shared store refuses the commit with
  // ABORTED when the session's epoch has moved on; a single-process store ignores it.
  uint64_t epoch = 0;
};

struct UnreadableSession {
  std::string session_id;
  absl::Status status;  // DATA_LOSS naming the key
};

struct SessionPage {
  std::vector<SessionRecord> sessions;  // ordered by session id
  // Sessions on this page whose record is damaged; listed so the page still shows the rest.
  std::vector<UnreadableSession> unreadable;
  std::string next_page_token;  // empty on the last page
};

// What a session occupies on disk (values only, before RocksDB's compression).
struct SessionStorageStats {
  int64_t kv_segments = 0;
  int64_t kv_bytes = 0;
  int64_t transcript_turns = 0;
  int64_t transcript_bytes = 0;
};

inline constexpr int kDefaultPageSize = 100;
inline constexpr int kMaxPageSize = 1000;

class Store {
 public:
  virtual ~Store() = default;

  // ALREADY_EXISTS when the tenant already has a session of that id.
  virtual absl::Status CreateSession(const SessionRecord& record) = 0;
  virtual absl::StatusOr<SessionRecord> GetSession(std::string_view tenant,
                                                   std::string_view session_id) const = 0;
  // page_size <= 0 means kDefaultPageSize; larger than kMaxPageSize is clamped.
  virtual absl::StatusOr<SessionPage> ListSessions(std::string_view tenant, int page_size,
                                                   std::string_view page_token) const = 0;
  // Removes metadata, transcript and KV segments in one write; works on damaged sessions too.
  virtual absl::Status DeleteSession(std::string_view tenant, std::string_view session_id) = 0;
  // A copy of the session's metadata, transcript and KV segments under `new_session_id`, with
  // create and update time set to now; the two evolve independently afterwards.
  virtual absl::StatusOr<SessionRecord> ForkSession(std::string_view tenant,
                                                    std::string_view source_session_id,
                                                    std::string_view new_session_id) = 0;
  // The turn is durable once this returns OK; on any error nothing of it was written.
  virtual absl::Status CommitTurn(const TurnCommit& commit) = 0;
  // Turns in turn_index order.
  virtual absl::StatusOr<std::vector<TurnRecord>> LoadTranscript(
      std::string_view tenant, std::string_view session_id) const = 0;
  // Segments in seq order, each checked against its checksum.
  virtual absl::StatusOr<std::vector<KvSegment>> LoadKvSegments(
      std::string_view tenant, std::string_view session_id) const = 0;
  virtual absl::StatusOr<SessionStorageStats> Stats(std::string_view tenant,
                                                    std::string_view session_id) const = 0;

  // Sessions of every tenant (for a server-wide limit).
  virtual absl::StatusOr<int64_t> CountSessions() const = 0;

  // Documents are content-addressed: putting one whose id exists already changes nothing
  // and returns ALREADY_EXISTS (the caller may treat it as success). Synced.
  virtual absl::Status PutDocument(const DocumentRecord& record, std::string_view payload) = 0;
  // NOT_FOUND when absent; DATA_LOSS when damaged or filed under another key.
  virtual absl::StatusOr<StoredDocument> GetDocument(std::string_view tenant,
                                                     std::string_view document_id) const = 0;

  // Bytes the store takes on disk now (an estimate, for metrics); 0 when unknown.
  virtual int64_t ApproximateDiskBytes() const { return 0; }

  // Ownership of sessions by one server among several that share the store (fencing).
  // A shared store keeps an epoch per session: AcquireSession raises it by compare-and-set
  // and returns the new value, which the new owner puts in every TurnCommit; commits with an
  // older epoch are refused (ABORTED), so a server that lost a session (paused, partitioned,
  // taken over) cannot append to it. A store used by one process has no epochs: shared() is
  // false, both calls return 0 and commits are not fenced. NOT_FOUND for a missing session.
  virtual bool shared() const { return false; }
  virtual absl::StatusOr<uint64_t> AcquireSession(std::string_view /*tenant*/,
                                                  std::string_view /*session_id*/) {
    return uint64_t{0};
  }
  virtual absl::StatusOr<uint64_t> SessionEpoch(std::string_view /*tenant*/,
                                                std::string_view /*session_id*/) const {
    return uint64_t{0};
  }
};

}  // namespace gistmem::store
