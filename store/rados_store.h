// Store on a Ceph RADOS pool, shared by every gistmem server of a cluster (one pool, replicated
// size 3 / min_size 2 in the test cluster). Objects:
//
//   head/<tenant>/<session>   the session's head: xattrs gistmem.epoch and gistmem.turns
//                             (20-digit decimals); omap "meta" -> SessionRecord,
//                             "t/<index:020>" -> TurnRecord, "k/<seq:020>" -> "<bytes> <object>"
//   seg/<tenant>/<session>/<seq:020>.<epoch:020>.<nonce>
//                             one immutable KV segment (KvSegmentHeader + K/V bytes)
//   doc/<tenant>/<document>   a shared document, content-addressed, written once
//   gistmem.index             omap "<tenant>/<session>" -> "": the sessions, for listing
//
// Every value is in the checksummed envelope of store/record_codec.h, as in RocksStore.
//
// A turn's commit: its new segment objects are written first (exclusive create, names no one
// else uses); then one atomic write operation on the head, guarded by cmpxattr on the epoch
// (the committer must own the session) and on the turn count (it must follow the stored
// session), sets the records and the segment list. That operation is the commit point; it
// returns when RADOS has it on every replica of the acting set. Segments no head names (a
// commit that died between the two steps, or was refused) are removed by CollectGarbage.
//
// Fencing: AcquireSession raises the head's epoch by compare-and-set; a server that loaded the
// session before holds the old epoch and every commit of it is refused with ABORTED, so none of
// what it computes after losing the session is ever served. No clock is used for safety.
//
// Thread-safety: all methods may be called from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/time/time.h"
#include "store/rados_io.h"
#include "store/store.h"

namespace gistmem::store {

struct RadosStoreOptions {
  std::string pool;
  std::string conf_file;  // e.g. /etc/ceph/ceph.conf; empty: librados' default search
  std::string client_id = "admin";
  // Each RADOS operation gives up after this (UNAVAILABLE): a cluster that lost too many OSDs
  // to serve a placement group fails calls rather than hanging them.
  absl::Duration op_timeout = absl::Seconds(30);
};

struct GarbageReport {
  int64_t segments_seen = 0;
  int64_t segments_removed = 0;
  int64_t index_entries_removed = 0;
};

class RadosStore final : public Store {
 public:
  // Connects and opens the pool: UNAVAILABLE when the cluster does not answer, NOT_FOUND when
  // the pool does not exist.
  static absl::StatusOr<std::unique_ptr<RadosStore>> Open(const RadosStoreOptions& options);

  absl::Status CreateSession(const SessionRecord& record) override;
  absl::StatusOr<SessionRecord> GetSession(std::string_view tenant,
                                           std::string_view session_id) const override;
  absl::StatusOr<SessionPage> ListSessions(std::string_view tenant, int page_size,
                                           std::string_view page_token) const override;
  absl::Status DeleteSession(std::string_view tenant, std::string_view session_id) override;
  absl::StatusOr<SessionRecord> ForkSession(std::string_view tenant,
                                            std::string_view source_session_id,
                                            std::string_view new_session_id) override;
  // ABORTED when commit.epoch is no longer the session's (another server took it over);
  // FAILED_PRECONDITION when the stored turn count moved. When RADOS fails in a way that
  // leaves the write's fate open (a timeout), the session is fenced (its epoch raised) and the
  // head read back: OK if the write landed, UNAVAILABLE if it did not and never will.
  absl::Status CommitTurn(const TurnCommit& commit) override;
  absl::StatusOr<std::vector<TurnRecord>> LoadTranscript(
      std::string_view tenant, std::string_view session_id) const override;
  absl::StatusOr<std::vector<KvSegment>> LoadKvSegments(std::string_view tenant,
                                                        std::string_view session_id) const override;
  absl::StatusOr<SessionStorageStats> Stats(std::string_view tenant,
                                            std::string_view session_id) const override;
  absl::StatusOr<int64_t> CountSessions() const override;
  absl::Status PutDocument(const DocumentRecord& record, std::string_view payload) override;
  absl::StatusOr<StoredDocument> GetDocument(std::string_view tenant,
                                             std::string_view document_id) const override;

  bool shared() const override { return true; }
  absl::StatusOr<uint64_t> AcquireSession(std::string_view tenant,
                                          std::string_view session_id) override;
  absl::StatusOr<uint64_t> SessionEpoch(std::string_view tenant,
                                        std::string_view session_id) const override;

  // Removes segment objects that no head names and that are older than `min_age` (younger
  // ones may belong to a commit in flight), and index entries of sessions without a head.
  // Safe to run on several servers at once.
  absl::StatusOr<GarbageReport> CollectGarbage(absl::Duration min_age);

  const RadosPool& pool() const { return *pool_; }

 private:
  explicit RadosStore(std::unique_ptr<RadosPool> pool) : pool_(std::move(pool)) {}

  struct Head;
  // One atomic read of the head: xattrs and "meta", plus the transcript and/or the segment
  // list when asked. NOT_FOUND when the session does not exist.
  absl::StatusOr<Head> ReadHead(std::string_view tenant, std::string_view session_id,
                                bool transcript, bool segments) const;
  absl::StatusOr<std::vector<KvSegment>> ReadSegments(const Head& head) const;
  // After a commit whose outcome is unknown: fence, then look.
  absl::Status ResolveUnknownCommit(const TurnCommit& commit, int64_t turns_after,
                                    const absl::Status& failure);
  absl::Status AddToIndex(std::string_view tenant, std::string_view session_id);

  std::unique_ptr<RadosPool> pool_;
};

}  // namespace gistmem::store
