#include "service/kv_segment.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"

namespace gistmem::service {
namespace {

// The payload is the cache's own memory copied out; the format says little-endian fp32.
static_assert(std::endian::native == std::endian::little, "KV segments are little-endian fp32");

constexpr char kDtype[] = "float32";

size_t RowBytes(const model::KvCache& cache) {
  return cache.kv_dim() * sizeof(float);
}

absl::Status CheckHeader(const model::ModelConfig& config, const store::KvSegment& segment,
                         const std::string& model_fingerprint,
                         const memory::SessionMemory& memory) {
  const store::KvSegmentHeader& header = segment.header;
  const model::KvCache& cache = memory.cache();
  if (header.model_fingerprint() != model_fingerprint) {
    return absl::DataLossError(absl::StrCat("segment of model ", header.model_fingerprint(),
                                            ", expected ", model_fingerprint));
  }
  if (header.num_layers() != cache.num_layers() || header.num_kv_heads() != config.num_kv_heads ||
      header.head_dim() != config.head_dim || header.dtype() != kDtype ||
      (header.kind() != kPinnedSegment && header.kind() != kWindowSegment)) {
    return absl::DataLossError(absl::StrCat(
        "segment shape ", header.num_layers(), " layers x ", header.num_kv_heads(), " heads x ",
        header.head_dim(), " ", header.dtype(), " (", header.kind(), "); the model has ",
        cache.num_layers(), " x ", config.num_kv_heads, " x ", config.head_dim, " ", kDtype));
  }
  if (header.policy() != memory::Describe(memory.policy())) {
    return absl::DataLossError(absl::StrCat("segment made under policy ", header.policy(),
                                            ", the session runs ",
                                            memory::Describe(memory.policy())));
  }
  const int64_t count = header.entry_count();
  if (count < 0 || header.positions_size() != count || header.entry_kinds_size() != count ||
      header.serials_size() != count || header.raw_indices_size() != count) {
    return absl::DataLossError(absl::StrCat(
        "segment says ", count, " entries but lists ", header.positions_size(), " positions, ",
        header.entry_kinds_size(), " kinds, ", header.serials_size(), " serials"));
  }
  const memory::Policy& policy = memory.policy();
  for (int32_t kind : header.entry_kinds()) {
    if (kind < static_cast<int32_t>(memory::EntryKind::kRaw) ||
        kind > static_cast<int32_t>(memory::EntryKind::kPooled)) {
      return absl::DataLossError(absl::StrCat("segment entry of unknown kind ", kind));
    }
    // Only kinds the session's policy makes (a pooled entry under full would divide by r = 0).
    const auto entry_kind = static_cast<memory::EntryKind>(kind);
    const bool possible =
        (entry_kind == memory::EntryKind::kRaw) ||
        (entry_kind == memory::EntryKind::kSink && policy.kind != memory::PolicyKind::kFull &&
         policy.sink_tokens > 0) ||
        (entry_kind == memory::EntryKind::kGist && policy.kind == memory::PolicyKind::kGist) ||
        (entry_kind == memory::EntryKind::kPooled && policy.kind == memory::PolicyKind::kPool);
    if (!possible) {
      return absl::DataLossError(absl::StrCat("segment entry of kind ",
                                              std::string(memory::EntryKindName(entry_kind)),
                                              " under policy ", memory::Describe(policy)));
    }
  }
  const size_t block = static_cast<size_t>(count) * RowBytes(cache);
  if (segment.payload.size() != 2 * block * static_cast<size_t>(cache.num_layers())) {
    return absl::DataLossError(absl::StrCat("segment payload has ", segment.payload.size(),
                                            " bytes, expected ", 2 * block * cache.num_layers()));
  }
  return absl::OkStatus();
}

}  // namespace

store::KvSegment EncodeKvSegment(const model::ModelConfig& config,
                                 const memory::SessionMemory& memory,
                                 std::span<const int64_t> entries,
                                 const std::string& model_fingerprint, uint64_t seq,
                                 std::string_view kind) {
  const model::KvCache& cache = memory.cache();
  store::KvSegment segment;
  segment.seq = seq;
  store::KvSegmentHeader& header = segment.header;
  header.set_model_fingerprint(model_fingerprint);
  header.set_num_layers(static_cast<int32_t>(cache.num_layers()));
  header.set_num_kv_heads(static_cast<int32_t>(config.num_kv_heads));
  header.set_head_dim(static_cast<int32_t>(config.head_dim));
  header.set_dtype(kDtype);
  header.set_entry_count(static_cast<int64_t>(entries.size()));
  header.set_kind(std::string(kind));
  header.set_policy(memory::Describe(memory.policy()));
  for (int64_t e : entries) {
    const memory::EntryInfo& info = memory.entries()[e];
    header.add_positions(cache.positions()[e]);
    header.add_entry_kinds(static_cast<int32_t>(info.kind));
    header.add_serials(info.serial);
    header.add_raw_indices(info.raw_index);
  }

  const size_t row = RowBytes(cache);
  segment.payload.resize(2 * entries.size() * row * static_cast<size_t>(cache.num_layers()));
  char* out = segment.payload.data();
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    for (const float* rows : {cache.keys(layer), cache.values(layer)}) {
      for (int64_t e : entries) {
        std::memcpy(out, rows + e * cache.kv_dim(), row);
        out += row;
      }
    }
  }
  return segment;
}

absl::Status RestoreMemory(const model::ModelConfig& config,
                           std::span<const store::KvSegment> segments,
                           const std::string& model_fingerprint, const memory::MemoryState& state,
                           memory::SessionMemory& memory) {
  // (serial, segment, entry) of every stored entry, restored in serial order.
  std::vector<std::tuple<int64_t, size_t, int64_t>> order;
  for (size_t s = 0; s < segments.size(); ++s) {
    if (absl::Status ok = CheckHeader(config, segments[s], model_fingerprint, memory); !ok.ok()) {
      return absl::DataLossError(absl::StrCat("kv segment ", segments[s].seq, ": ", ok.message()));
    }
    for (int64_t e = 0; e < segments[s].header.entry_count(); ++e)
      order.emplace_back(segments[s].header.serials(static_cast<int>(e)), s, e);
  }
  std::sort(order.begin(), order.end());
  model::KvCache& cache = memory.cache();
  const size_t row = RowBytes(cache);
  for (const auto& [serial, s, e] : order) {
    const store::KvSegmentHeader& header = segments[s].header;
    const int i = static_cast<int>(e);
    const memory::EntryInfo info{.kind = static_cast<memory::EntryKind>(header.entry_kinds(i)),
                                 .serial = serial,
                                 .raw_index = header.raw_indices(i)};
    if (header.positions(i) < 0) return absl::DataLossError("kv segment: negative position");
    const int64_t entry = memory.RestoreEntry(info, header.positions(i));
    const size_t count = static_cast<size_t>(header.entry_count());
    const char* payload = segments[s].payload.data();
    for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
      const char* keys = payload + (2 * layer) * count * row;
      const char* values = keys + count * row;
      std::memcpy(cache.MutableKeys(layer, entry), keys + e * row, row);
      std::memcpy(cache.MutableValues(layer, entry), values + e * row, row);
    }
  }
  return memory.FinishRestore(state);
}

absl::StatusOr<std::shared_ptr<model::KvCache>> DecodeDocumentEntries(
    const model::ModelConfig& config, const store::KvSegmentHeader& header,
    std::string_view payload, const std::string& model_fingerprint) {
  auto cache = std::make_shared<model::KvCache>(config);
  if (header.model_fingerprint() != model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat("the document was made for model ",
                                                      header.model_fingerprint(),
                                                      "; this server runs ", model_fingerprint));
  }
  const int64_t count = header.entry_count();
  const size_t row = RowBytes(*cache);
  if (header.num_layers() != cache->num_layers() || header.num_kv_heads() != config.num_kv_heads ||
      header.head_dim() != config.head_dim || header.dtype() != kDtype || count < 0 ||
      header.positions_size() != count ||
      payload.size() != 2 * static_cast<size_t>(count) * row * cache->num_layers()) {
    return absl::DataLossError("document segment does not match the model or its bytes");
  }
  for (int64_t e = 0; e < count; ++e)
    cache->AppendUnordered(header.positions(static_cast<int>(e)), {});
  for (int64_t layer = 0; layer < cache->num_layers(); ++layer) {
    const char* keys = payload.data() + (2 * layer) * count * row;
    if (count == 0) continue;
    std::memcpy(cache->MutableKeys(layer, 0), keys, count * row);
    std::memcpy(cache->MutableValues(layer, 0), keys + count * row, count * row);
  }
  return cache;
}

}  // namespace gistmem::service
