// A session's memory <-> store segments. A segment holds some of the cache's entries, for
// every layer: the header (model, shape, dtype "float32", kind, the session's policy, and per
// entry its stream position, kind, serial and raw index) and the payload, layer by layer, the
// keys of its entries then their values, each entry a row of num_kv_heads * head_dim
// little-endian fp32 (keys as the cache holds them, RoPE applied). Floats are copied bit for
// bit and entries restored in serial order, so a resumed session computes exactly what it
// would have.
//
// Kinds: "pinned" segments hold entries that stay for good (sinks, gists, pooled entries, and
// every entry under policy full) and are written once; the one "window" segment holds the
// entries that will still leave and is rewritten at every turn.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "memory/session_memory.h"
#include "model/config.h"
#include "store/store.h"

namespace gistmem::service {

inline constexpr std::string_view kPinnedSegment = "pinned";
inline constexpr std::string_view kWindowSegment = "window";

// Entries `entries` of `memory` as segment `seq` (their rows copied out of the pages).
store::KvSegment EncodeKvSegment(const model::ModelConfig& config,
                                 const memory::SessionMemory& memory,
                                 const memory::EntryList& entries,
                                 const std::string& model_fingerprint, uint64_t seq,
                                 std::string_view kind);

// Fills an empty `memory` (made with the session's policy) from the session's segments and
// its stored state. DATA_LOSS naming the segment when a header does not match the model, its
// fingerprint, the policy, the payload size, or the state; RESOURCE_EXHAUSTED when the KV pool
// has no room for the entries.
absl::Status RestoreMemory(const model::ModelConfig& config,
                           std::span<const store::KvSegment> segments,
                           const std::string& model_fingerprint, const memory::MemoryState& state,
                           memory::SessionMemory& memory);

// A stored document's entries as read-only pages of `pool` (rows and positions; every entry
// is seen by whoever attaches it). FAILED_PRECONDITION for a document of another model,
// DATA_LOSS when the header does not match the model or the bytes, RESOURCE_EXHAUSTED when
// the pool has no room.
absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> DecodeDocumentEntries(
    const model::ModelConfig& config, const store::KvSegmentHeader& header,
    std::string_view payload, const std::string& model_fingerprint, memory::BlockPool& pool,
    int64_t stream_tokens);

}  // namespace gistmem::service
