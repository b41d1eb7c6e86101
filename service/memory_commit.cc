#include "service/memory_commit.h"

#include "service/kv_segment.h"

namespace gistmem::service {

void AddMemoryToCommit(const model::ModelConfig& config, const memory::SessionMemory& memory,
                       const std::string& model_fingerprint, int64_t unread_tokens,
                       store::TurnCommit& commit) {
  store::SessionRecord& record = commit.session;
  store::v1::MemoryStateRecord& stored = *record.mutable_memory();
  uint64_t seq = record.next_kv_segment_seq();

  const memory::EntryList pinned = memory.NewPinnedEntries();
  if (pinned.size() > 0) {
    commit.new_kv_segments.push_back(
        EncodeKvSegment(config, memory, pinned, model_fingerprint, seq++, kPinnedSegment));
  }
  if (memory.policy().kind != memory::PolicyKind::kFull) {
    if (stored.has_window_segment_seq()) {
      commit.deleted_kv_segments.push_back(stored.window_segment_seq());
    }
    const memory::EntryList window = memory.TransientEntries();
    commit.new_kv_segments.push_back(
        EncodeKvSegment(config, memory, window, model_fingerprint, seq, kWindowSegment));
    stored.set_window_segment_seq(seq++);
  }
  record.set_next_kv_segment_seq(seq);

  const memory::MemoryState& state = memory.state();
  stored.set_stream_tokens(state.stream_tokens);
  stored.set_raw_tokens(state.raw_tokens);
  stored.set_pooled_spans(state.pooled_spans);
  stored.set_next_entry_serial(state.next_serial);
  stored.set_unread_tokens(unread_tokens);
  const memory::RetainedCounts counts = memory.Counts();
  stored.set_sink_entries(counts.sink);
  stored.set_raw_entries(counts.raw);
  stored.set_gist_entries(counts.gist);
  stored.set_pooled_entries(counts.pooled);
  stored.clear_documents();
  for (const memory::AttachedKv& attached : memory.kv().attached()) {
    store::v1::AttachedDocumentRecord& document = *stored.add_documents();
    document.set_document_id(attached.label);
    document.set_position_offset(attached.position_offset);
    document.set_stream_tokens(attached.kv->stream_tokens());
    document.set_entries(attached.kv->size());
  }
  record.set_stream_tokens(state.stream_tokens + unread_tokens);
}

memory::MemoryState StoredMemoryState(const store::SessionRecord& record) {
  const store::v1::MemoryStateRecord& stored = record.memory();
  return {.stream_tokens = stored.stream_tokens(),
          .raw_tokens = stored.raw_tokens(),
          .pooled_spans = stored.pooled_spans(),
          .next_serial = stored.next_entry_serial()};
}

}  // namespace gistmem::service
