// Stored record decoding (store/record_codec.h, store/records.h, store/kv_segment_codec.h) and,
// past it, restoring a session's memory from its KV segments (service/kv_segment.h), as the
// server does with whatever it finds in its store. Errors must be DATA_LOSS (a foreign model's
// document: FAILED_PRECONDITION), never a crash, and what decodes must encode back the same.
//
// Input: a mode byte, then
//   0-4  a raw value for DecodeSessionValue / DecodeTurnValue / DecodeKvSegmentValue /
//        DecodeDocumentValue / DecodeStoreFormatValue
//   5-9  the same decoders, on the rest wrapped in a valid envelope of the matching record type
//        (so the fuzzer gets past the checksum to the payload's parsing)
//   10   DecodeRecord with any expected type (the next byte) and PeekRecordFormatVersion
//   11   restore: policy kind, ratio, window, sink_tokens (one byte each), a flags byte, the
//        memory state (4 x int64 LE), then kv values as (u32 LE length, bytes)...; each value
//        is decoded (flag 1: the bytes are a payload to wrap first) and the segments that
//        decode are restored into an empty SessionMemory. Flags 2/4/8 overwrite the header's
//        fingerprint and policy, shape, and payload size with what the check expects, so the
//        fuzzer can reach the entries themselves.
//   12   document: a document value decoded, then DecodeDocumentEntries (same fix-up flags).
// Restored entries live in pages of a bounded host pool, so RESOURCE_EXHAUSTED is an answer
// too (the pool is full, as on a server); every page must be back once the memory is gone.
// A memory that restores is also parked (memory/session_kv.h) and unparked: rows unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "memory/block_pool.h"
#include "memory/session_memory.h"
#include "service/kv_segment.h"
#include "service/policy_resolver.h"
#include "store/kv_segment_codec.h"
#include "store/record_codec.h"
#include "store/records.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using gistmem::fuzz::Fail;
namespace store = gistmem::store;
namespace service = gistmem::service;
namespace memory = gistmem::memory;
namespace v1 = gistmem::v1;

class Reader {
 public:
  Reader(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  size_t left() const { return size_ - at_; }
  uint8_t Byte() { return at_ < size_ ? data_[at_++] : 0; }
  template <typename T>
  T Int() {
    T value{};
    const size_t n = std::min(sizeof(T), left());
    std::memcpy(&value, data_ + at_, n);
    at_ += n;
    return value;
  }
  std::string_view Bytes(size_t n) {
    n = std::min(n, left());
    std::string_view out(reinterpret_cast<const char*>(data_ + at_), n);
    at_ += n;
    return out;
  }
  std::string_view Rest() { return Bytes(left()); }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t at_ = 0;
};

void ExpectDataLoss(const absl::Status& status, std::string_view what) {
  if (!status.ok() && status.code() != absl::StatusCode::kDataLoss) {
    Fail(std::string(what) + " failed with " + status.ToString() + " (expected DATA_LOSS)");
  }
}

// DATA_LOSS, or RESOURCE_EXHAUSTED when the entries do not fit the pool.
void ExpectDataLossOrFull(const absl::Status& status, std::string_view what) {
  if (status.code() == absl::StatusCode::kResourceExhausted) return;
  ExpectDataLoss(status, what);
}

// Host pools of the model's pages (fp32, as the CPU engine's): 64 MiB each, about 10k entries
// of the shipped model. `which` 1 is for a second restore of what fitted in pool 0.
memory::BlockPool& Pool(int which = 0) {
  static memory::BlockPool* pools[2] = {};
  if (pools[which] == nullptr) {
    const auto& config = gistmem::fuzz::Config();
    const memory::PageLayout layout{.block_size = 16,
                                    .num_layers = static_cast<int32_t>(config.num_layers),
                                    .kv_dim = static_cast<int32_t>(config.kv_dim()),
                                    .element_bytes = 4};
    pools[which] = new memory::BlockPool(memory::MakeHostPageStorage(layout, int64_t{64} << 20));
  }
  return *pools[which];
}

void ExpectPoolsEmpty(std::string_view after) {
  for (int which : {0, 1}) {
    if (Pool(which).pages_in_use() != 0)
      Fail(std::string("KV pages leaked after ") + std::string(after));
  }
}

// Every entry of a memory's KV (pinned, then window) with its slot.
memory::EntryList AllEntries(const memory::SessionMemory& memory) {
  memory::EntryList all;
  for (const memory::KvSegment* segment : {&memory.kv().pinned(), &memory.kv().window()}) {
    for (int32_t i = 0; i < segment->num_slots(); ++i) {
      all.slots.push_back(segment->slot(i));
      all.positions.push_back(segment->position(i));
      all.infos.push_back(segment->info(i));
    }
  }
  return all;
}

std::vector<float> RowsOf(const memory::SessionMemory& memory, const memory::EntryList& entries) {
  const memory::PageLayout& layout = memory.kv().pool().layout();
  std::vector<float> rows(2 * static_cast<size_t>(entries.size()) * layout.num_layers *
                          layout.kv_dim);
  if (!rows.empty()) memory.kv().pool().storage().ExportRows(entries.slots, rows.data());
  return rows;
}

// Rows are arbitrary stored bytes, NaNs included: compared bit for bit.
bool SameBits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() &&
         (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

constexpr store::RecordType kTypes[] = {store::RecordType::kSession, store::RecordType::kTurn,
                                        store::RecordType::kKvSegment, store::RecordType::kDocument,
                                        store::RecordType::kStoreFormat};

// Decodes `value` with decoder `which` (an index into kTypes) and checks the round trip.
void Decode(int which, std::string_view value) {
  switch (which) {
    case 0: {
      auto record = store::DecodeSessionValue(value);
      ExpectDataLoss(record.status(), "DecodeSessionValue");
      if (record.ok()) {
        auto again = store::DecodeSessionValue(store::EncodeSessionValue(*record));
        if (!again.ok() || gistmem::fuzz::Canonical(*again) != gistmem::fuzz::Canonical(*record)) {
          Fail("SessionRecord does not survive encode/decode");
        }
      }
      break;
    }
    case 1: {
      auto record = store::DecodeTurnValue(value);
      ExpectDataLoss(record.status(), "DecodeTurnValue");
      if (record.ok()) {
        auto again = store::DecodeTurnValue(store::EncodeTurnValue(*record));
        if (!again.ok() || gistmem::fuzz::Canonical(*again) != gistmem::fuzz::Canonical(*record)) {
          Fail("TurnRecord does not survive encode/decode");
        }
      }
      break;
    }
    case 2: {
      auto segment = store::DecodeKvSegmentValue(value);
      ExpectDataLoss(segment.status(), "DecodeKvSegmentValue");
      if (segment.ok()) {
        if (segment->payload.data() < value.data() ||
            segment->payload.data() + segment->payload.size() > value.data() + value.size()) {
          Fail("KV payload view outside the value");
        }
        const std::string encoded = store::EncodeKvSegmentValue(segment->header, segment->payload);
        auto again = store::DecodeKvSegmentValue(encoded);
        if (!again.ok() || again->payload != segment->payload ||
            gistmem::fuzz::Canonical(again->header) != gistmem::fuzz::Canonical(segment->header)) {
          Fail("KV segment does not survive encode/decode");
        }
      }
      break;
    }
    case 3: {
      auto document = store::DecodeDocumentValue(value);
      ExpectDataLoss(document.status(), "DecodeDocumentValue");
      if (document.ok()) {
        const std::string encoded = store::EncodeDocumentValue(document->record, document->payload);
        auto again = store::DecodeDocumentValue(encoded);
        if (!again.ok() || again->payload != document->payload ||
            gistmem::fuzz::Canonical(again->record) != gistmem::fuzz::Canonical(document->record)) {
          Fail("document does not survive encode/decode");
        }
      }
      break;
    }
    default: {
      auto format = store::DecodeStoreFormatValue(value);
      ExpectDataLoss(format.status(), "DecodeStoreFormatValue");
      if (format.ok()) {
        auto again =
            store::DecodeStoreFormatValue(store::EncodeStoreFormatValue(format->version()));
        if (!again.ok() || again->version() != format->version()) Fail("StoreFormat round trip");
      }
      break;
    }
  }
}

// The header's fields the checks compare, set to what they expect (per `flags`).
void FixUp(store::KvSegmentHeader& header, std::string& payload, const memory::Policy& policy,
           uint8_t flags) {
  const auto& config = gistmem::fuzz::Config();
  if (flags & 2) {
    header.set_model_fingerprint(gistmem::fuzz::Fingerprint());
    header.set_policy(memory::Describe(policy));
  }
  if (flags & 4) {
    header.set_num_layers(static_cast<int32_t>(config.num_layers));
    header.set_num_kv_heads(static_cast<int32_t>(config.num_kv_heads));
    header.set_head_dim(static_cast<int32_t>(config.head_dim));
    header.set_dtype("float32");
    if (header.kind() != "pinned" && header.kind() != "window") header.set_kind("pinned");
  }
  if ((flags & 8) && header.entry_count() >= 0 && header.entry_count() <= 4096) {
    payload.resize(2 * static_cast<size_t>(header.entry_count()) * config.kv_dim() * 4 *
                   config.num_layers);
  }
}

std::string MaybeWrap(store::RecordType type, std::string_view bytes, bool wrap) {
  return wrap ? store::EncodeRecord(type, bytes) : std::string(bytes);
}

void RestoreSegments(Reader& in);

void Restore(Reader& in) {
  RestoreSegments(in);
  ExpectPoolsEmpty("a restore");
}

void RestoreSegments(Reader& in) {
  const auto& config = gistmem::fuzz::Config();
  static const service::PolicyResolver resolver({}, gistmem::fuzz::Gist());
  v1::MemoryPolicy stored;
  stored.set_kind(static_cast<v1::MemoryPolicy::Kind>(in.Byte() % 5));
  stored.set_ratio(in.Byte());
  stored.set_window(in.Byte());
  stored.set_sink_tokens(in.Byte());
  const uint8_t flags = in.Byte();
  absl::StatusOr<memory::Policy> policy = resolver.FromStored(stored);
  if (!policy.ok()) return;
  memory::MemoryState state;
  state.stream_tokens = in.Int<int64_t>();
  state.raw_tokens = in.Int<int64_t>();
  state.pooled_spans = in.Int<int64_t>();
  state.next_serial = in.Int<int64_t>();

  std::vector<store::KvSegment> segments;
  while (in.left() > 0 && segments.size() < 16) {
    const std::string value =
        MaybeWrap(store::RecordType::kKvSegment, in.Bytes(in.Int<uint32_t>()), flags & 1);
    absl::StatusOr<store::DecodedKvSegment> decoded = store::DecodeKvSegmentValue(value);
    ExpectDataLoss(decoded.status(), "DecodeKvSegmentValue");
    if (!decoded.ok()) continue;
    store::KvSegment segment;
    segment.seq = segments.size();
    segment.header = decoded->header;
    segment.payload = std::string(decoded->payload);
    FixUp(segment.header, segment.payload, *policy, flags);
    segments.push_back(std::move(segment));
  }
  memory::SessionMemory restored(Pool(0), *policy);
  const absl::Status status =
      service::RestoreMemory(config, segments, gistmem::fuzz::Fingerprint(), state, restored);
  ExpectDataLossOrFull(status, "RestoreMemory");
  if (!status.ok()) return;
  // A memory that restored is one the server goes on with: parked in the host tier and back,
  // plan the next rows, open and roll back a turn, and store it again.
  const std::vector<float> before_parking = RowsOf(restored, AllEntries(restored));
  if (absl::Status parked = restored.Park(); !parked.ok()) Fail("park: " + parked.ToString());
  if (absl::Status back = restored.Unpark(); !back.ok()) Fail("unpark: " + back.ToString());
  const memory::EntryList all = AllEntries(restored);
  if (!SameBits(RowsOf(restored, all), before_parking)) Fail("parking changed rows");
  const memory::RetainedCounts counts = restored.Counts();
  if (counts.total() > all.size()) Fail("more entries counted than cached");
  const int32_t tokens[] = {5, 6, 7, 8, 9, 10, 11, 12, 13};
  // The server plans a turn only when the stream has room for it (max_position_embeddings).
  const bool room =
      state.stream_tokens >= 0 && state.stream_tokens < config.max_position_embeddings;
  if (room) (void)restored.Plan(tokens);
  restored.BeginTurn();
  restored.Rollback();
  if (!(restored.state() == state)) Fail("rollback of an empty turn changed the state");
  if (all.size() != AllEntries(restored).size()) Fail("rollback of an empty turn lost entries");
  const store::KvSegment again =
      service::EncodeKvSegment(config, restored, all, gistmem::fuzz::Fingerprint(), 0, "pinned");
  // The same entries in a pool of their own: they fit there as they fitted in the first.
  memory::SessionMemory twice(Pool(1), *policy);
  const absl::Status second =
      service::RestoreMemory(config, std::span<const store::KvSegment>(&again, 1),
                             gistmem::fuzz::Fingerprint(), state, twice);
  if (!second.ok()) Fail("a restored memory, stored again, does not restore: " + second.ToString());
  const memory::EntryList restored_twice = AllEntries(twice);
  if (restored_twice.size() != all.size()) Fail("restore round trip lost entries");
  if (restored_twice.positions != all.positions) Fail("restore round trip moved entries");
  if (!SameBits(RowsOf(twice, restored_twice), RowsOf(restored, all))) {
    Fail("restore round trip changed rows");
  }
}

void Document(Reader& in) {
  const uint8_t flags = in.Byte();
  const std::string value = MaybeWrap(store::RecordType::kDocument, in.Rest(), flags & 1);
  absl::StatusOr<store::DecodedDocument> decoded = store::DecodeDocumentValue(value);
  ExpectDataLoss(decoded.status(), "DecodeDocumentValue");
  if (!decoded.ok()) return;
  store::KvSegmentHeader header = decoded->record.segment();
  std::string payload(decoded->payload);
  FixUp(header, payload, memory::Policy{}, flags);
  {
    auto entries = service::DecodeDocumentEntries(gistmem::fuzz::Config(), header, payload,
                                                  gistmem::fuzz::Fingerprint(), Pool(),
                                                  decoded->record.stream_tokens());
    if (!entries.ok() && entries.status().code() != absl::StatusCode::kDataLoss &&
        entries.status().code() != absl::StatusCode::kFailedPrecondition &&
        entries.status().code() != absl::StatusCode::kResourceExhausted) {
      Fail("DecodeDocumentEntries: " + entries.status().ToString());
    }
    if (entries.ok() && (*entries)->size() != header.entry_count()) Fail("document entry count");
  }
  ExpectPoolsEmpty("a document");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Reader in(data, size);
  const uint8_t mode = in.Byte() % 13;
  if (mode < 5) {
    Decode(mode, in.Rest());
  } else if (mode < 10) {
    Decode(mode - 5, store::EncodeRecord(kTypes[mode - 5], in.Rest()));
  } else if (mode == 10) {
    const auto type = static_cast<store::RecordType>(in.Byte() % 7);
    const std::string_view value = in.Rest();
    auto payload = store::DecodeRecord(value, type);
    ExpectDataLoss(payload.status(), "DecodeRecord");
    if (payload.ok() && store::PeekRecordFormatVersion(value) != store::kRecordFormatVersion) {
      Fail("a record that decodes has another format version");
    }
  } else if (mode == 11) {
    Restore(in);
  } else {
    Document(in);
  }
  return 0;
}
