// What a turn writes of a session's memory: the entries it pinned (a new "pinned" segment),
// the window as it now stands (a new "window" segment replacing the previous one), and the
// memory's state in the session record. Only what the policy retains is ever stored.
#pragma once

#include <cstdint>
#include <string>

#include "memory/session_memory.h"
#include "model/config.h"
#include "store/store.h"

namespace gistmem::service {

// Adds the memory of an open turn to `commit`, whose `session` is the record before the turn
// (its next_kv_segment_seq and window segment are updated). `unread_tokens` is 1 when the
// reply ends with a token not yet read (cut by max_tokens).
void AddMemoryToCommit(const model::ModelConfig& config, const memory::SessionMemory& memory,
                       const std::string& model_fingerprint, int64_t unread_tokens,
                       store::TurnCommit& commit);

// The memory state stored in `record`.
memory::MemoryState StoredMemoryState(const store::SessionRecord& record);

}  // namespace gistmem::service
