#include "store/turn_commit_check.h"

#include <cstdint>
#include <unordered_set>

#include "absl/strings/str_cat.h"

namespace gistmem::store {
namespace {

absl::Status CheckTurns(const SessionRecord& stored, const TurnCommit& commit) {
  for (size_t i = 0; i < commit.turns.size(); ++i) {
    const int64_t expected = stored.turn_count() + static_cast<int64_t>(i);
    if (commit.turns[i].turn_index() != expected) {
      return absl::FailedPreconditionError(absl::StrCat(
          "turn ", i, " of the commit has index ", commit.turns[i].turn_index(),
          "; the session has ", stored.turn_count(), " turns, so it must be ", expected));
    }
  }
  const int64_t expected_count = stored.turn_count() + static_cast<int64_t>(commit.turns.size());
  if (commit.session.turn_count() != expected_count) {
    return absl::InvalidArgumentError(
        absl::StrCat("commit says turn_count ", commit.session.turn_count(), " but appends ",
                     commit.turns.size(), " turns to ", stored.turn_count()));
  }
  return absl::OkStatus();
}

absl::Status CheckKvSegments(const SessionRecord& stored, const TurnCommit& commit) {
  const uint64_t first_new = stored.next_kv_segment_seq();
  const uint64_t next = commit.session.next_kv_segment_seq();
  if (next < first_new) {
    return absl::InvalidArgumentError(
        absl::StrCat("commit lowers next_kv_segment_seq from ", first_new, " to ", next));
  }
  std::unordered_set<uint64_t> new_seqs;
  for (const KvSegment& segment : commit.new_kv_segments) {
    if (segment.seq < first_new) {
      return absl::FailedPreconditionError(
          absl::StrCat("new kv segment ", segment.seq, " is below the session's next seq ",
                       first_new, " (segments are never overwritten)"));
    }
    if (segment.seq >= next) {
      return absl::InvalidArgumentError(absl::StrCat(
          "new kv segment ", segment.seq, " is not below the commit's next_kv_segment_seq ", next));
    }
    if (!new_seqs.insert(segment.seq).second) {
      return absl::InvalidArgumentError(absl::StrCat("kv segment ", segment.seq, " added twice"));
    }
    if (segment.header.model_fingerprint() != commit.session.model_fingerprint()) {
      return absl::FailedPreconditionError(
          absl::StrCat("kv segment ", segment.seq, " was computed with model \"",
                       segment.header.model_fingerprint(), "\", the session uses \"",
                       commit.session.model_fingerprint(), "\""));
    }
  }
  for (uint64_t seq : commit.deleted_kv_segments) {
    if (seq >= first_new) {
      return absl::InvalidArgumentError(absl::StrCat(
          "deleted kv segment ", seq, " is not an earlier segment (next seq is ", first_new, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckTurnCommit(const SessionRecord& stored, const TurnCommit& commit) {
  if (absl::Status turns = CheckTurns(stored, commit); !turns.ok()) return turns;
  return CheckKvSegments(stored, commit);
}

}  // namespace gistmem::store
