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

size_t RowBytes(const model::ModelConfig& config) {
  return config.kv_dim() * sizeof(float);
}

// The payload's fp32 rows, copied out of the string so they are aligned for float access.
std::vector<float> PayloadRows(std::string_view payload) {
  std::vector<float> rows(payload.size() / sizeof(float));
  if (!rows.empty()) std::memcpy(rows.data(), payload.data(), rows.size() * sizeof(float));
  return rows;
}

absl::Status CheckHeader(const model::ModelConfig& config, const store::KvSegment& segment,
                         const std::string& model_fingerprint,
                         const memory::SessionMemory& memory) {
  const store::KvSegmentHeader& header = segment.header;
  if (header.model_fingerprint() != model_fingerprint) {
    return absl::DataLossError(absl::StrCat("segment of model ", header.model_fingerprint(),
                                            ", expected ", model_fingerprint));
  }
  if (header.num_layers() != config.num_layers || header.num_kv_heads() != config.num_kv_heads ||
      header.head_dim() != config.head_dim || header.dtype() != kDtype ||
      (header.kind() != kPinnedSegment && header.kind() != kWindowSegment)) {
    return absl::DataLossError(absl::StrCat(
        "segment shape ", header.num_layers(), " layers x ", header.num_kv_heads(), " heads x ",
        header.head_dim(), " ", header.dtype(), " (", header.kind(), "); the model has ",
        config.num_layers, " x ", config.num_kv_heads, " x ", config.head_dim, " ", kDtype));
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
  const size_t block = static_cast<size_t>(count) * RowBytes(config);
  if (segment.payload.size() != 2 * block * static_cast<size_t>(config.num_layers)) {
    return absl::DataLossError(absl::StrCat("segment payload has ", segment.payload.size(),
                                            " bytes, expected ", 2 * block * config.num_layers));
  }
  return absl::OkStatus();
}

}  // namespace

store::KvSegment EncodeKvSegment(const model::ModelConfig& config,
                                 const memory::SessionMemory& memory,
                                 const memory::EntryList& entries,
                                 const std::string& model_fingerprint, uint64_t seq,
                                 std::string_view kind) {
  store::KvSegment segment;
  segment.seq = seq;
  store::KvSegmentHeader& header = segment.header;
  header.set_model_fingerprint(model_fingerprint);
  header.set_num_layers(static_cast<int32_t>(config.num_layers));
  header.set_num_kv_heads(static_cast<int32_t>(config.num_kv_heads));
  header.set_head_dim(static_cast<int32_t>(config.head_dim));
  header.set_dtype(kDtype);
  header.set_entry_count(entries.size());
  header.set_kind(std::string(kind));
  header.set_policy(memory::Describe(memory.policy()));
  for (int64_t e = 0; e < entries.size(); ++e) {
    header.add_positions(entries.positions[e]);
    header.add_entry_kinds(static_cast<int32_t>(entries.infos[e].kind));
    header.add_serials(entries.infos[e].serial);
    header.add_raw_indices(entries.infos[e].raw_index);
  }
  // The pages' rows come out in the payload's own layout: [layer][K, V][entry][kv_dim].
  std::vector<float> rows(2 * entries.size() * config.num_layers * config.kv_dim());
  if (!rows.empty()) memory.kv().pool().storage().ExportRows(entries.slots, rows.data());
  segment.payload.assign(reinterpret_cast<const char*>(rows.data()), rows.size() * sizeof(float));
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
  // Where each stored entry went, per segment, so each payload is imported in one call.
  std::vector<std::vector<memory::SlotRef>> slots(segments.size());
  for (size_t s = 0; s < segments.size(); ++s)
    slots[s].resize(static_cast<size_t>(segments[s].header.entry_count()));
  for (const auto& [serial, s, e] : order) {
    const store::KvSegmentHeader& header = segments[s].header;
    const int i = static_cast<int>(e);
    const memory::EntryInfo info{.kind = static_cast<memory::EntryKind>(header.entry_kinds(i)),
                                 .serial = serial,
                                 .raw_index = header.raw_indices(i)};
    if (header.positions(i) < 0) return absl::DataLossError("kv segment: negative position");
    absl::StatusOr<memory::SlotRef> slot = memory.RestoreEntry(info, header.positions(i));
    if (!slot.ok()) return slot.status();
    slots[s][e] = *slot;
  }
  for (size_t s = 0; s < segments.size(); ++s) {
    if (slots[s].empty()) continue;
    const std::vector<float> rows = PayloadRows(segments[s].payload);
    memory.kv().pool().storage().ImportRows(slots[s], rows.data());
  }
  return memory.FinishRestore(state);
}

absl::StatusOr<std::shared_ptr<const memory::FrozenKv>> DecodeDocumentEntries(
    const model::ModelConfig& config, const store::KvSegmentHeader& header,
    std::string_view payload, const std::string& model_fingerprint, memory::BlockPool& pool,
    int64_t stream_tokens) {
  if (header.model_fingerprint() != model_fingerprint) {
    return absl::FailedPreconditionError(absl::StrCat("the document was made for model ",
                                                      header.model_fingerprint(),
                                                      "; this server runs ", model_fingerprint));
  }
  const int64_t count = header.entry_count();
  const size_t row = RowBytes(config);
  if (header.num_layers() != config.num_layers || header.num_kv_heads() != config.num_kv_heads ||
      header.head_dim() != config.head_dim || header.dtype() != kDtype || count < 0 ||
      header.positions_size() != count ||
      payload.size() != 2 * static_cast<size_t>(count) * row * config.num_layers) {
    return absl::DataLossError("document segment does not match the model or its bytes");
  }
  const std::vector<int64_t> positions(header.positions().begin(), header.positions().end());
  for (int64_t p : positions) {
    if (p < 0 || p >= stream_tokens || p >= memory::kVisibleForever) {
      return absl::DataLossError("document segment holds a position outside the document");
    }
  }
  const std::vector<float> rows = PayloadRows(payload);
  return memory::FrozenKv::FromRows(pool, positions, rows.data(), stream_tokens);
}

}  // namespace gistmem::service
