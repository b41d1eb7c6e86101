// How KV pages are laid out, and the plain view of one sequence's KV that attention reads.
//
// Every backend (the CPU reference, the CUDA kernels) reaches a session's entries through
// these structs and nothing else, so a kernel needs no C++ beyond them: a page table, flat
// per-slot arrays, and the pool's memory. On the device tier a page is whole, one arena:
//
//   page p, layer l, K (kv = 0) or V (kv = 1), slot s:
//     pool_base + p * layout.page_elements() + layout.RowOffset(l, kv, s)   -> kv_dim elements
//
// The host tier keeps a chunk's pages layer-major instead (memory/block_pool.h, RowsBase), so
// the CPU attention finds a page's rows of one layer through the storage, not this formula.
//
// A segment's slot i lives in page page_ids[i / block_size] at slot i % block_size. Slots whose
// visibility has ended stay in place (masked) until their whole page is released: eviction
// frees pages, it never moves rows.
#pragma once

#include <cstdint>
#include <limits>

namespace gistmem::memory {

// The shape of a page: `block_size` entries of every layer, keys and values, kv_dim elements
// each ([layer][kv][slot][kv_dim]). element_bytes is 4 for fp32 (CPU) and 2 for bf16 (GPU).
struct PageLayout {
  int32_t block_size = 16;
  int32_t num_layers = 0;
  int32_t kv_dim = 0;  // num_kv_heads * head_dim
  int32_t element_bytes = 4;

  int64_t page_elements() const { return int64_t{num_layers} * 2 * block_size * kv_dim; }
  int64_t page_bytes() const { return page_elements() * element_bytes; }
  // Offset, in elements from the page's start, of one slot's key (kv = 0) or value (kv = 1)
  // row in one layer.
  int64_t RowOffset(int32_t layer, int32_t kv, int32_t slot) const {
    return ((int64_t{layer} * 2 + kv) * block_size + slot) * kv_dim;
  }
  bool operator==(const PageLayout&) const = default;
};

// The last raw clock of an entry that stays visible for good.
inline constexpr int32_t kVisibleForever = std::numeric_limits<int32_t>::max();

// One segment of a sequence's KV as attention reads it. A query with raw clock c at stream
// position p sees slot i when positions[i] <= p (causality; the model's sliding window, if
// any, on top) and visible_from[i] <= c <= visible_until[i] (the memory policy's rule,
// memory/policy.h). A shared segment (an attached document: `shared` true) has no per-slot
// arrays: every query after it sees all of its slots, with the query rotated back by
// rope_offset (RoPE is relative, gist-method.md section 5).
struct KvSegmentView {
  const int32_t* page_ids = nullptr;       // [ceil(num_slots / block_size)]
  const int32_t* positions = nullptr;      // [num_slots] stream positions
  const int32_t* visible_from = nullptr;   // [num_slots] first raw clock that sees the slot
  const int32_t* visible_until = nullptr;  // [num_slots] last raw clock (kVisibleForever)
  int32_t num_slots = 0;
  int32_t rope_offset = 0;  // shared segments: the position they were attached at
  bool shared = false;
};

// A sequence's whole KV: its segments in the order attention sums them (pinned, window, then
// attached documents in attach order). Summing in a fixed order keeps a restored session's
// logits bit for bit those of the live one.
struct SequenceKvView {
  const KvSegmentView* segments = nullptr;
  int32_t num_segments = 0;
};

}  // namespace gistmem::memory
