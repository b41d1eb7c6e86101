// KV cache entries <-> store segments. A segment holds the entries one turn added, for every
// layer: the header (model, shape, dtype "float32", kind "full", stream positions) and the
// payload, layer by layer, the keys of all entries then their values, each entry a row of
// num_kv_heads * head_dim little-endian fp32 (keys as the cache holds them, RoPE applied).
// The floats are copied bit for bit, so a resumed session computes exactly what it would have.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "store/store.h"

namespace gistmem::service {

// Entries [begin, end) of `cache` as segment `seq`.
store::KvSegment EncodeKvSegment(const model::ModelConfig& config, const model::KvCache& cache,
                                 int64_t begin, int64_t end, const std::string& model_fingerprint,
                                 uint64_t seq);

// Appends the segment's entries to `cache`. DATA_LOSS when its header does not match the
// model's shape, `model_fingerprint`, the payload size, or the positions that must come next.
absl::Status AppendKvSegment(const model::ModelConfig& config, const store::KvSegment& segment,
                             const std::string& model_fingerprint, model::KvCache& cache);

// Bytes the cache's entries take in memory.
int64_t KvCacheBytes(const model::KvCache& cache);

}  // namespace gistmem::service
