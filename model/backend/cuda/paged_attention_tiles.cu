// The plan's per-tile bounds (paged_attention_plan.h, TileBounds): one warp per 64-slot tile of
// a segment, run once per step by PagedAttention::Plan, read by every layer's tensor-core
// kernel to skip tiles no query of a CTA can see without touching their slots.
#include <climits>

#include "model/backend/cuda/paged_attention_plan.h"

namespace gistmem::cuda::attention {
namespace {

constexpr int kBoundsWarps = 4;

__global__ void __launch_bounds__(kBoundsWarps * 32)
    TileBoundsKernel(const memory::KvSegmentView* segments, const int32_t* segment_tiles,
                     int32_t num_segments, int32_t num_tiles, TileBounds* out) {
  const int tile = blockIdx.x * kBoundsWarps + threadIdx.x / 32;
  if (tile >= num_tiles) return;  // whole warps leave together
  const int lane = threadIdx.x % 32;
  // The segment holding `tile`: the last i with segment_tiles[i] <= tile (segments without
  // tiles repeat their successor's start, so the last such i is the one that has it).
  int lo = 0, hi = num_segments;  // segment_tiles[lo] <= tile < segment_tiles[hi]
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (segment_tiles[mid] <= tile) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const memory::KvSegmentView seg = segments[lo];
  const int first = (tile - segment_tiles[lo]) * kTileSlots;
  int min_position = INT_MAX, max_position = INT_MIN, min_from = INT_MAX, max_until = INT_MIN;
  for (int j = first + lane; j < min(first + kTileSlots, seg.num_slots); j += 32) {
    min_position = min(min_position, seg.positions[j]);
    max_position = max(max_position, seg.positions[j]);
    min_from = min(min_from, seg.visible_from[j]);
    max_until = max(max_until, seg.visible_until[j]);
  }
  min_position = __reduce_min_sync(0xffffffffu, min_position);
  max_position = __reduce_max_sync(0xffffffffu, max_position);
  min_from = __reduce_min_sync(0xffffffffu, min_from);
  max_until = __reduce_max_sync(0xffffffffu, max_until);
  if (lane == 0) out[tile] = {min_position, max_position, min_from, max_until};
}

}  // namespace

cudaError_t LaunchTileBounds(const memory::KvSegmentView* segments, const int32_t* segment_tiles,
                             int32_t num_segments, int32_t num_tiles, TileBounds* out,
                             cudaStream_t stream) {
  if (num_tiles == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>((num_tiles + kBoundsWarps - 1) / kBoundsWarps);
  TileBoundsKernel<<<blocks, kBoundsWarps * 32, 0, stream>>>(segments, segment_tiles, num_segments,
                                                             num_tiles, out);
  return cudaGetLastError();
}

}  // namespace gistmem::cuda::attention
