#include "model/backend/cuda/paged_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include "model/backend/cuda/cuda_status.h"
#include "model/backend/cuda/paged_attention_plan.h"

namespace gistmem::cuda {
namespace {

using attention::CombineEntry;
using attention::SequenceDesc;
using attention::WorkItem;

constexpr int32_t kMinChunk = 256;  // slots: below this a split costs more than it gains

size_t AlignUp(size_t n) {
  return (n + 15) / 16 * 16;
}

template <typename T>
size_t Append(std::vector<char>& bytes, const std::vector<T>& values) {
  const size_t offset = AlignUp(bytes.size());
  bytes.resize(offset + values.size() * sizeof(T));
  if (!values.empty()) std::memcpy(bytes.data() + offset, values.data(), values.size() * sizeof(T));
  return offset;
}

absl::Status CheckSegment(const memory::KvSegmentView& seg, int32_t s, int32_t i) {
  const std::string where =
      "attention: sequence " + std::to_string(s) + " segment " + std::to_string(i);
  if (seg.num_slots < 0) return absl::InvalidArgumentError(where + " has negative num_slots");
  if (seg.num_slots == 0) return absl::OkStatus();
  if (seg.page_ids == nullptr) return absl::InvalidArgumentError(where + " has no page table");
  if (!seg.shared &&
      (seg.positions == nullptr || seg.visible_from == nullptr || seg.visible_until == nullptr)) {
    return absl::InvalidArgumentError(where + " lacks per-slot positions or visibility");
  }
  return absl::OkStatus();
}

// A rough cost of a prefill work item, to start the costliest first (the causal tail of a long
// prefill otherwise runs last, on a few multiprocessors): the slots of its range up to the
// position of its last row, if the rows are the sequence's last positions (as in a prefill).
int64_t PrefillCost(const WorkItem& item, int64_t length, int32_t rows, int32_t group,
                    int32_t per_cta) {
  const int64_t last_row = std::min<int64_t>(rows - 1, (item.qvec_begin + per_cta - 1) / group);
  const int64_t seen_end = std::min<int64_t>(item.kv_end, length - rows + last_row + 1);
  return std::max<int64_t>(0, seen_end - item.kv_begin);
}

}  // namespace

std::string_view AttentionKernelName(AttentionKernel kernel) {
  switch (kernel) {
    case AttentionKernel::kTensorCores:
      return "tensor_cores";
    case AttentionKernel::kCudaCores:
      return "cuda_cores";
    case AttentionKernel::kAuto:
      break;
  }
  return "auto";
}

absl::StatusOr<AttentionKernel> ParseAttentionKernel(std::string_view name) {
  for (AttentionKernel k :
       {AttentionKernel::kAuto, AttentionKernel::kTensorCores, AttentionKernel::kCudaCores}) {
    if (name == AttentionKernelName(k)) return k;
  }
  return absl::InvalidArgumentError("attention kernel '" + std::string(name) +
                                    "' is none of auto, tensor_cores, cuda_cores");
}

absl::StatusOr<std::unique_ptr<PagedAttention>> PagedAttention::Create(AttentionOptions options) {
  // The process-wide override wins over the caller's choice: A/B runs of a whole engine or
  // service without a rebuild or a flag in every tool.
  if (const char* forced = std::getenv("GISTMEM_ATTENTION_KERNEL")) {
    absl::StatusOr<AttentionKernel> kernel = ParseAttentionKernel(forced);
    if (!kernel.ok()) return kernel.status();
    options.kernel = *kernel;
  }
  int device = 0, multiprocessors = 0;
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaGetDevice(&device));
  GISTMEM_CUDA_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&multiprocessors, cudaDevAttrMultiProcessorCount, device));
  if (options.kernel != AttentionKernel::kCudaCores) {
    GISTMEM_CUDA_RETURN_IF_ERROR(attention::PrepareMmaAttention());
  }
  return std::unique_ptr<PagedAttention>(new PagedAttention(options, multiprocessors));
}

absl::Status PagedAttention::Plan(std::span<const memory::SequenceKvView> sequences,
                                  std::span<const int32_t> row_offsets, const AttentionShape& shape,
                                  cudaStream_t stream) {
  if (shape.num_heads <= 0 || shape.num_kv_heads <= 0 || shape.num_heads % shape.num_kv_heads) {
    return absl::InvalidArgumentError("attention: num_kv_heads must divide num_heads");
  }
  if (shape.head_dim <= 0 || shape.head_dim % 8 || shape.head_dim > 128) {
    return absl::UnimplementedError(
        "attention: head_dim must be a multiple of 8, at most 128, not " +
        std::to_string(shape.head_dim));
  }
  const bool mma_fits = shape.head_dim % 16 == 0 && shape.head_dim <= attention::kMmaMaxHeadDim;
  if (options_.kernel == AttentionKernel::kTensorCores && !mma_fits) {
    return absl::UnimplementedError(
        "attention: tensor cores need head_dim a multiple of 16, at most 128, not " +
        std::to_string(shape.head_dim));
  }
  tensor_cores_ = options_.kernel != AttentionKernel::kCudaCores && mma_fits;
  const int32_t prefill_per_cta =
      tensor_cores_ ? attention::kMmaPrefillQueries : attention::kPrefillQueries;
  const int32_t decode_per_cta =
      tensor_cores_ ? attention::kMmaDecodeQueries : attention::kDecodeQueries;
  if (row_offsets.size() != sequences.size() + 1 || row_offsets[0] != 0) {
    return absl::InvalidArgumentError(
        "attention: row_offsets needs num_sequences + 1 entries "
        "starting at 0");
  }
  shape_ = shape;
  const int32_t group = shape.num_heads / shape.num_kv_heads;

  std::vector<memory::KvSegmentView> segments;
  std::vector<SequenceDesc> descs;
  std::vector<int64_t> lengths;
  int64_t base_ctas = 0, total_work = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const memory::SequenceKvView& view = sequences[s];
    const int32_t rows = row_offsets[s + 1] - row_offsets[s];
    if (rows < 0) return absl::InvalidArgumentError("attention: row_offsets decrease");
    if (view.num_segments > 0 && view.segments == nullptr) {
      return absl::InvalidArgumentError("attention: sequence " + std::to_string(s) +
                                        " has num_segments but no segments");
    }
    int64_t length = 0;
    descs.push_back(
        {static_cast<int32_t>(segments.size()), view.num_segments, row_offsets[s], rows});
    for (int32_t i = 0; i < view.num_segments; ++i) {
      GISTMEM_RETURN_IF_ERROR(CheckSegment(view.segments[i], static_cast<int32_t>(s), i));
      segments.push_back(view.segments[i]);
      length += view.segments[i].num_slots;
    }
    if (length > INT32_MAX) return absl::InvalidArgumentError("attention: sequence too long");
    lengths.push_back(length);
    const bool decode = rows <= options_.decode_max_rows;
    const int32_t per_cta = decode ? decode_per_cta : prefill_per_cta;
    const int64_t ctas = (int64_t{rows} * group + per_cta - 1) / per_cta * shape.num_kv_heads;
    base_ctas += ctas;
    total_work += ctas * length;
  }
  num_rows_ = row_offsets.back();

  // Split the KV length when the batch alone would leave multiprocessors idle: aim at
  // ctas_per_multiprocessor CTAs on each (enough loads in flight to keep HBM busy), each over
  // at least kMinChunk slots.
  int64_t chunk = options_.kv_chunk;
  if (chunk <= 0) {
    const int64_t target = int64_t{options_.ctas_per_multiprocessor} * multiprocessors_;
    chunk = base_ctas >= target ? INT32_MAX
                                : std::max<int64_t>(kMinChunk, (total_work + target - 1) / target);
    chunk = (chunk + attention::kTileSlots - 1) / attention::kTileSlots * attention::kTileSlots;
  }

  std::vector<WorkItem> prefill, decode;
  std::vector<CombineEntry> combine;
  int32_t partials = 0;
  for (size_t s = 0; s < sequences.size(); ++s) {
    const SequenceDesc& d = descs[s];
    if (d.num_rows == 0) continue;
    const bool is_decode = d.num_rows <= options_.decode_max_rows;
    const int32_t per_cta = is_decode ? decode_per_cta : prefill_per_cta;
    const int32_t qvecs = d.num_rows * group;
    int64_t seq_chunk = chunk;
    int32_t splits = static_cast<int32_t>(std::max<int64_t>(1, (lengths[s] + chunk - 1) / chunk));
    if (options_.kv_chunk <= 0 && splits > 1) {
      // Balanced: the same number of splits, each about length / splits slots (rounded up to
      // the tile), not full chunks and a short tail that leaves its CTAs' peers waiting.
      seq_chunk = (lengths[s] + splits - 1) / splits;
      seq_chunk =
          (seq_chunk + attention::kTileSlots - 1) / attention::kTileSlots * attention::kTileSlots;
      splits = static_cast<int32_t>((lengths[s] + seq_chunk - 1) / seq_chunk);
    }
    for (int32_t h = 0; h < shape.num_kv_heads; ++h) {
      for (int32_t q0 = 0; q0 < qvecs; q0 += per_cta) {
        const int32_t partial_base = splits > 1 ? partials : -1;
        if (splits > 1) {
          const int32_t used = std::min(per_cta, qvecs - q0);
          for (int32_t v = 0; v < used; ++v) {
            combine.push_back({d.first_row + (q0 + v) / group, h * group + (q0 + v) % group,
                               partials + v * splits, splits});
          }
          partials += per_cta * splits;
        }
        for (int32_t split = 0; split < splits; ++split) {
          const int64_t begin = std::min<int64_t>(lengths[s], split * seq_chunk);
          const int64_t end = std::min<int64_t>(lengths[s], begin + seq_chunk);
          (is_decode ? decode : prefill)
              .push_back({static_cast<int32_t>(s), h, q0, split, splits,
                          static_cast<int32_t>(begin), static_cast<int32_t>(end), partial_base});
        }
      }
    }
  }
  // Costliest prefill items first (longest-processing-time order): the order changes no
  // result, each item writes its own outputs or partials.
  std::vector<int64_t> cost(prefill.size());
  for (size_t i = 0; i < prefill.size(); ++i) {
    const WorkItem& item = prefill[i];
    cost[i] = PrefillCost(item, lengths[item.sequence], descs[item.sequence].num_rows, group,
                          prefill_per_cta);
  }
  std::vector<size_t> order(prefill.size());
  for (size_t i = 0; i < order.size(); ++i)
    order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return cost[a] > cost[b]; });
  std::vector<WorkItem> sorted;
  sorted.reserve(prefill.size());
  for (size_t i : order)
    sorted.push_back(prefill[i]);
  prefill = std::move(sorted);

  num_prefill_items_ = static_cast<int64_t>(prefill.size());
  num_decode_items_ = static_cast<int64_t>(decode.size());
  num_combine_ = static_cast<int64_t>(combine.size());

  host_plan_.clear();
  Append(host_plan_, segments);
  seqs_offset_ = Append(host_plan_, descs);
  std::vector<WorkItem> items = std::move(prefill);
  items.insert(items.end(), decode.begin(), decode.end());
  items_offset_ = Append(host_plan_, items);
  combine_offset_ = Append(host_plan_, combine);
  // Tensor cores: where each segment's 64-slot tiles start in tile_bounds_ (shared and empty
  // segments have none), num_segments + 1 entries.
  std::vector<int32_t> segment_tiles;
  int64_t num_tiles = 0;
  if (tensor_cores_) {
    for (const memory::KvSegmentView& seg : segments) {
      segment_tiles.push_back(static_cast<int32_t>(num_tiles));
      if (!seg.shared)
        num_tiles += (seg.num_slots + attention::kTileSlots - 1) / attention::kTileSlots;
    }
    segment_tiles.push_back(static_cast<int32_t>(num_tiles));
    if (num_tiles > INT32_MAX) return absl::InvalidArgumentError("attention: too many tiles");
  }
  segment_tiles_offset_ = Append(host_plan_, segment_tiles);
  GISTMEM_RETURN_IF_ERROR(plan_.Reserve(host_plan_.size()));
  if (!host_plan_.empty()) {
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(plan_.get(), host_plan_.data(), host_plan_.size(),
                                                 cudaMemcpyHostToDevice, stream));
  }
  GISTMEM_RETURN_IF_ERROR(
      partial_o_.Reserve(sizeof(float) * std::max<int64_t>(1, partials) * shape.head_dim));
  GISTMEM_RETURN_IF_ERROR(partial_ml_.Reserve(sizeof(float) * 2 * std::max<int64_t>(1, partials)));
  if (tensor_cores_ && num_tiles > 0) {
    GISTMEM_RETURN_IF_ERROR(tile_bounds_.Reserve(sizeof(attention::TileBounds) * num_tiles));
    const char* base = static_cast<const char*>(plan_.get());
    GISTMEM_CUDA_RETURN_IF_ERROR(attention::LaunchTileBounds(
        reinterpret_cast<const memory::KvSegmentView*>(base),
        reinterpret_cast<const int32_t*>(base + segment_tiles_offset_),
        static_cast<int32_t>(segments.size()), static_cast<int32_t>(num_tiles),
        tile_bounds_.as<attention::TileBounds>(), stream));
  }
  return absl::OkStatus();
}

absl::Status PagedAttention::Run(const AttentionInputs& in, cudaStream_t stream) {
  if (in.layout.element_bytes != 2 || in.layout.kv_dim != shape_.num_kv_heads * shape_.head_dim ||
      in.layer < 0 || in.layer >= in.layout.num_layers || in.layout.block_size < 1) {
    return absl::InvalidArgumentError("attention: the pool layout does not fit the plan's shape");
  }
  if (num_prefill_items_ + num_decode_items_ == 0) return absl::OkStatus();
  // Both kernels read K/V 16 bytes at a time; the tensor-core one also stores outputs so.
  if (reinterpret_cast<uintptr_t>(in.pool) % 16 ||
      (tensor_cores_ && reinterpret_cast<uintptr_t>(in.out) % 16)) {
    return absl::InvalidArgumentError(
        "attention: pool (and out, for tensor cores) must be 16-byte aligned");
  }
  attention::KernelParams p{};
  p.pool = in.pool;
  p.layout = in.layout;
  p.layer = in.layer;
  p.num_heads = shape_.num_heads;
  p.num_kv_heads = shape_.num_kv_heads;
  p.head_dim = shape_.head_dim;
  p.sliding_window = shape_.sliding_window;
  p.scale = static_cast<float>(1.0 / std::sqrt(static_cast<double>(shape_.head_dim)));
  p.q = in.q;
  p.q_stride = in.q_stride;
  p.positions = in.positions;
  p.clocks = in.clocks;
  p.inv_freq = in.inv_freq;
  p.out = in.out;
  p.partial_o = partial_o_.as<float>();
  p.partial_ml = partial_ml_.as<float>();
  const char* base = static_cast<const char*>(plan_.get());
  p.segments = reinterpret_cast<const memory::KvSegmentView*>(base);
  p.sequences = reinterpret_cast<const SequenceDesc*>(base + seqs_offset_);
  p.segment_tiles = reinterpret_cast<const int32_t*>(base + segment_tiles_offset_);
  p.tile_bounds = tile_bounds_.as<const attention::TileBounds>();
  p.block = attention::FastDiv::Make(in.layout.block_size);
  const auto* items = reinterpret_cast<const WorkItem*>(base + items_offset_);
  const auto launch = tensor_cores_ ? attention::LaunchMmaAttention : attention::LaunchAttention;
  GISTMEM_CUDA_RETURN_IF_ERROR(launch(p, items, num_prefill_items_, /*decode=*/false, stream));
  GISTMEM_CUDA_RETURN_IF_ERROR(
      launch(p, items + num_prefill_items_, num_decode_items_, /*decode=*/true, stream));
  GISTMEM_CUDA_RETURN_IF_ERROR(attention::LaunchCombine(
      p, reinterpret_cast<const CombineEntry*>(base + combine_offset_), num_combine_, stream));
  return absl::OkStatus();
}

}  // namespace gistmem::cuda
