#include "service/kv_segment.h"

#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"

namespace gistmem::service {
namespace {

// The payload is the cache's own memory copied out; the format says little-endian fp32.
static_assert(std::endian::native == std::endian::little, "KV segments are little-endian fp32");

constexpr char kDtype[] = "float32";
constexpr char kKind[] = "full";

size_t RowBytes(const model::KvCache& cache) {
  return cache.kv_dim() * sizeof(float);
}

}  // namespace

store::KvSegment EncodeKvSegment(const model::ModelConfig& config, const model::KvCache& cache,
                                 int64_t begin, int64_t end, const std::string& model_fingerprint,
                                 uint64_t seq) {
  store::KvSegment segment;
  segment.seq = seq;
  store::KvSegmentHeader& header = segment.header;
  header.set_model_fingerprint(model_fingerprint);
  header.set_num_layers(static_cast<int32_t>(cache.num_layers()));
  header.set_num_kv_heads(static_cast<int32_t>(config.num_kv_heads));
  header.set_head_dim(static_cast<int32_t>(config.head_dim));
  header.set_dtype(kDtype);
  header.set_entry_count(end - begin);
  header.set_kind(kKind);
  header.mutable_positions()->Add(cache.positions().begin() + begin,
                                  cache.positions().begin() + end);

  const size_t row = RowBytes(cache);
  const size_t block = static_cast<size_t>(end - begin) * row;
  segment.payload.resize(2 * block * static_cast<size_t>(cache.num_layers()));
  char* out = segment.payload.data();
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    std::memcpy(out, cache.keys(layer) + begin * cache.kv_dim(), block);
    out += block;
    std::memcpy(out, cache.values(layer) + begin * cache.kv_dim(), block);
    out += block;
  }
  return segment;
}

absl::Status AppendKvSegment(const model::ModelConfig& config, const store::KvSegment& segment,
                             const std::string& model_fingerprint, model::KvCache& cache) {
  const store::KvSegmentHeader& header = segment.header;
  if (header.model_fingerprint() != model_fingerprint) {
    return absl::DataLossError(absl::StrCat("segment of model ", header.model_fingerprint(),
                                            ", expected ", model_fingerprint));
  }
  if (header.num_layers() != cache.num_layers() || header.num_kv_heads() != config.num_kv_heads ||
      header.head_dim() != config.head_dim || header.dtype() != kDtype || header.kind() != kKind) {
    return absl::DataLossError(absl::StrCat(
        "segment shape ", header.num_layers(), " layers x ", header.num_kv_heads(), " heads x ",
        header.head_dim(), " ", header.dtype(), " (", header.kind(), "); the model has ",
        cache.num_layers(), " x ", config.num_kv_heads, " x ", config.head_dim, " ", kDtype));
  }
  const int64_t count = header.entry_count();
  if (count < 0 || header.positions_size() != count) {
    return absl::DataLossError(absl::StrCat("segment says ", count, " entries but lists ",
                                            header.positions_size(), " positions"));
  }
  const size_t row = RowBytes(cache);
  const size_t block = static_cast<size_t>(count) * row;
  if (segment.payload.size() != 2 * block * static_cast<size_t>(cache.num_layers())) {
    return absl::DataLossError(absl::StrCat("segment payload has ", segment.payload.size(),
                                            " bytes, expected ", 2 * block * cache.num_layers()));
  }
  int64_t previous = cache.size() == 0 ? -1 : cache.positions().back();
  for (int64_t position : header.positions()) {
    if (position <= previous) {
      return absl::DataLossError(
          absl::StrCat("segment position ", position, " does not follow ", previous));
    }
    previous = position;
  }

  const int64_t first = cache.size();
  cache.Extend(std::span<const int64_t>(header.positions().data(), header.positions_size()));
  const char* in = segment.payload.data();
  for (int64_t layer = 0; layer < cache.num_layers(); ++layer) {
    if (count > 0) {
      std::memcpy(cache.MutableKeys(layer, first), in, block);
      std::memcpy(cache.MutableValues(layer, first), in + block, block);
    }
    in += 2 * block;
  }
  return absl::OkStatus();
}

int64_t KvCacheBytes(const model::KvCache& cache) {
  return 2 * cache.num_layers() * cache.size() * static_cast<int64_t>(RowBytes(cache));
}

}  // namespace gistmem::service
