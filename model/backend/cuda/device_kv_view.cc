#include "model/backend/cuda/device_kv_view.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "model/backend/cuda/cuda_status.h"

namespace gistmem::cuda {

absl::StatusOr<DeviceKvViews> DeviceKvViews::Upload(
    std::span<const std::vector<HostKvSegment>> sequences, int32_t block_size) {
  // All arrays go into one host staging vector, then one allocation and one copy.
  std::vector<int32_t> staging;
  struct Offsets {
    size_t pages, positions, from, until;
  };
  std::vector<std::vector<Offsets>> offsets(sequences.size());
  for (size_t s = 0; s < sequences.size(); ++s) {
    for (const HostKvSegment& seg : sequences[s]) {
      const size_t slots = static_cast<size_t>(seg.num_slots);
      const size_t pages = (slots + block_size - 1) / block_size;
      const size_t per_slot = seg.shared ? 0 : slots;
      if (seg.page_ids.size() < pages || seg.positions.size() != per_slot ||
          seg.visible_from.size() != per_slot || seg.visible_until.size() != per_slot) {
        return absl::InvalidArgumentError("DeviceKvViews: sequence " + std::to_string(s) +
                                          ": array lengths do not match num_slots " +
                                          std::to_string(seg.num_slots));
      }
      Offsets o;
      o.pages = staging.size();
      staging.insert(staging.end(), seg.page_ids.begin(), seg.page_ids.end());
      o.positions = staging.size();
      staging.insert(staging.end(), seg.positions.begin(), seg.positions.end());
      o.from = staging.size();
      staging.insert(staging.end(), seg.visible_from.begin(), seg.visible_from.end());
      o.until = staging.size();
      staging.insert(staging.end(), seg.visible_until.begin(), seg.visible_until.end());
      offsets[s].push_back(o);
    }
  }
  DeviceKvViews result;
  absl::StatusOr<DeviceBuffer> arrays = DeviceBuffer::FromHost(std::span<const int32_t>(staging));
  if (!arrays.ok()) return arrays.status();
  result.arrays_ = std::move(*arrays);
  const int32_t* base = result.arrays_.as<const int32_t>();
  result.segments_.resize(sequences.size());
  for (size_t s = 0; s < sequences.size(); ++s) {
    for (size_t i = 0; i < sequences[s].size(); ++i) {
      const HostKvSegment& seg = sequences[s][i];
      const Offsets& o = offsets[s][i];
      memory::KvSegmentView view;
      view.page_ids = base + o.pages;
      view.positions = seg.shared ? nullptr : base + o.positions;
      view.visible_from = seg.shared ? nullptr : base + o.from;
      view.visible_until = seg.shared ? nullptr : base + o.until;
      view.num_slots = seg.num_slots;
      view.rope_offset = seg.rope_offset;
      view.shared = seg.shared;
      result.segments_[s].push_back(view);
    }
  }
  for (const auto& segs : result.segments_) {
    result.views_.push_back({segs.data(), static_cast<int32_t>(segs.size())});
  }
  return result;
}

}  // namespace gistmem::cuda

namespace gistmem::cuda {

DeviceKvMirrors::DeviceKvMirrors(int32_t block_size, int64_t idle_rounds)
    : block_size_(block_size), idle_rounds_(idle_rounds) {}

DeviceKvMirrors::~DeviceKvMirrors() {
  if (copied_ != nullptr) {
    cudaEventSynchronize(copied_);
    cudaEventDestroy(copied_);
  }
  if (pinned_ != nullptr) cudaFreeHost(pinned_);
}

int64_t DeviceKvMirrors::device_bytes() const {
  int64_t bytes = static_cast<int64_t>(device_staging_.bytes());
  for (const auto& [id, m] : sessions_)
    bytes += static_cast<int64_t>(m.pinned.arrays.bytes() + m.window.arrays.bytes());
  for (const auto& [id, d] : documents_)
    bytes += static_cast<int64_t>(d.pages.bytes());
  return bytes;
}

absl::Status DeviceKvMirrors::Sync(Segment& mirror, const memory::KvSegment& segment,
                                   memory::KvSegmentView& view) {
  const MirrorCopy copy = PlanMirrorCopy(mirror.state, segment, block_size_);
  touched_.push_back(&mirror);
  if (copy.reallocate) {
    mirror.state.valid = false;
    absl::StatusOr<DeviceBuffer> arrays =
        DeviceBuffer::Allocate(MirrorInts(copy.state.capacity, block_size_) * sizeof(int32_t));
    if (!arrays.ok()) return arrays.status();
    mirror.arrays = *std::move(arrays);
  }
  view = StageMirrorCopy(copy, segment, mirror.arrays.as<int32_t>(), staged_);
  mirror.state = copy.state;
  return absl::OkStatus();
}

absl::Status DeviceKvMirrors::Add(const memory::SessionKv& kv,
                                  std::vector<memory::KvSegmentView>& views) {
  if (kv.parked() || kv.id() == 0) {
    return absl::FailedPreconditionError("a parked KV has no device views: unpark it first");
  }
  SessionMirror& m = sessions_[kv.id()];
  if (m.last_round == 0) m.residency = kv.residency();
  m.last_round = round_;
  memory::KvSegmentView view;
  GISTMEM_RETURN_IF_ERROR(Sync(m.pinned, kv.pinned(), view));
  views.push_back(view);
  GISTMEM_RETURN_IF_ERROR(Sync(m.window, kv.window(), view));
  views.push_back(view);
  for (const memory::AttachedKv& attached : kv.attached()) {
    const memory::KvSegment& entries = attached.kv->entries();
    DocumentMirror& d = documents_[attached.kv->id()];
    d.last_round = round_;
    if (d.document.expired()) {  // new (documents never change: one upload)
      const std::vector<int32_t>& pages = entries.pages();
      absl::StatusOr<DeviceBuffer> buffer =
          DeviceBuffer::Allocate(std::max<size_t>(pages.size(), 1) * sizeof(int32_t));
      if (!buffer.ok()) {
        documents_.erase(attached.kv->id());
        return buffer.status();
      }
      d.pages = *std::move(buffer);
      d.document = attached.kv;
      new_documents_.push_back(attached.kv->id());
      staged_.Stage(d.pages.as<int32_t>(), pages.data(), static_cast<int64_t>(pages.size()));
    }
    memory::KvSegmentView doc;
    doc.page_ids = d.pages.as<const int32_t>();
    doc.num_slots = entries.num_slots();
    doc.shared = true;
    doc.rope_offset = static_cast<int32_t>(attached.position_offset);
    views.push_back(doc);
  }
  return absl::OkStatus();
}

absl::Status DeviceKvMirrors::Flush(cudaStream_t stream) {
  const std::vector<int32_t>& values = staged_.values;
  const std::vector<Int32Run>& runs = staged_.runs;
  values_flushed_ = static_cast<int64_t>(values.size());
  if (!runs.empty()) {
    // [runs][values] (runs first: 8-byte aligned), one copy through pinned memory.
    const size_t runs_bytes = runs.size() * sizeof(Int32Run);
    const size_t bytes = runs_bytes + values.size() * sizeof(int32_t);
    if (copied_ == nullptr) {
      GISTMEM_CUDA_RETURN_IF_ERROR(cudaEventCreateWithFlags(&copied_, cudaEventDisableTiming));
    }
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(copied_));  // pinned_ is free again
    if (pinned_bytes_ < bytes) {
      if (pinned_ != nullptr) cudaFreeHost(pinned_);
      pinned_ = nullptr;
      pinned_bytes_ = 0;
      const size_t want = std::max<size_t>(bytes * 2, 64 << 10);
      GISTMEM_CUDA_RETURN_IF_ERROR(cudaMallocHost(&pinned_, want));
      pinned_bytes_ = want;
    }
    GISTMEM_RETURN_IF_ERROR(device_staging_.Reserve(pinned_bytes_));
    std::memcpy(pinned_, runs.data(), runs_bytes);
    std::memcpy(static_cast<char*>(pinned_) + runs_bytes, values.data(),
                values.size() * sizeof(int32_t));
    GISTMEM_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(device_staging_.get(), pinned_, bytes, cudaMemcpyHostToDevice, stream));
    GISTMEM_CUDA_RETURN_IF_ERROR(cudaEventRecord(copied_, stream));
    const char* staged = device_staging_.as<const char>();
    GISTMEM_RETURN_IF_ERROR(
        CopyInt32Runs(reinterpret_cast<const Int32Run*>(staged), static_cast<int64_t>(runs.size()),
                      reinterpret_cast<const int32_t*>(staged + runs_bytes), stream));
  }
  staged_.Clear();
  touched_.clear();
  new_documents_.clear();
  ++round_;
  return absl::OkStatus();
}

void DeviceKvMirrors::Abandon() {
  for (Segment* segment : touched_)
    segment->state.valid = false;
  for (uint64_t id : new_documents_)
    documents_.erase(id);
  staged_.Clear();
  touched_.clear();
  new_documents_.clear();
  ++round_;
}

void DeviceKvMirrors::Collect() {
  std::erase_if(sessions_, [&](const auto& entry) {
    return entry.second.residency.expired() || round_ - entry.second.last_round > idle_rounds_;
  });
  std::erase_if(documents_, [&](const auto& entry) {
    return entry.second.document.expired() || round_ - entry.second.last_round > idle_rounds_;
  });
}

}  // namespace gistmem::cuda
