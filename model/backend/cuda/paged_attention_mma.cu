// The tensor-core paged attention kernel: FlashAttention-2's loop on mma.sync m16n8k16 (bf16
// in, fp32 accumulate) over the plan's work items (paged_attention_plan.h).
//
// One CTA = 4 warps = one work item. Its tiles (64 slots of one segment, the segment's slots
// [64 t, 64 t + 64) cut to the item's KV range) stream through a three-stage shared-memory ring
// filled by 16-byte cp.async copies: while the warps compute tile i, tiles i + 1 and i + 2 are
// in flight. One barrier per tile. Warp 0 walks the tile sequence (the cursor) and writes each
// tile's descriptor two tiles ahead; tiles that the plan's per-tile bounds show no query of the
// CTA can see are passed over without a load.
//
//   prefill CTA: 64 query vectors, warp w owns vectors [16 w, 16 w + 16) (one mma M tile)
//     against all 64 slots of each tile: S = Q K^T (16 x 64), masks, online softmax, O += P V.
//   decode CTA: 16 query vectors (a decode sequence has group x 1..2 rows; unused rows are
//     padding), shared by the 4 warps; warp w takes slots [16 w, 16 w + 16) of each tile and
//     keeps its own (m, l, O); the four are merged through shared memory at the end.
//
// Numerics: Q (fp32, rotated in fp32 for a shared segment) and P are rounded to bf16 for the
// products; scores, max, sums and O are fp32; exp2 with the scale folded in (scale * log2 e).
// Rows that see nothing get zeros; split partials carry (max * scale, sum) like the CUDA-core
// kernel's, so one combine kernel serves both.
#include <cuda_bf16.h>

#include <climits>
#include <cmath>

#include "model/backend/cuda/paged_attention_device.cuh"
#include "model/backend/cuda/paged_attention_plan.h"

namespace gistmem::cuda::attention {
namespace {

constexpr int kStages = 3;              // K/V tiles in the ring
constexpr int kDescRing = kStages + 1;  // descriptors: tiles i .. i + kStages live at once
constexpr int kThreads = kWarps * 32;
constexpr int kM = 16;  // query vectors per mma M tile
constexpr float kLog2e = 1.4426950408889634f;
constexpr int kUnrotated = INT_MIN;    // query key of non-shared segments
constexpr int kNoQuery = INT_MIN + 1;  // no query fragments made yet
constexpr double kTwoPi = 6.283185307179586;

// One tile of the ring, as warp 0's cursor found it. n == 0: the item has no more tiles.
struct TileDesc {
  const int32_t* page_ids;
  const int32_t* positions;
  const int32_t* visible_from;
  const int32_t* visible_until;
  int32_t local;  // the tile's first slot, counted from its segment's start
  int32_t n;      // slots, 1..64
  int32_t shared;
  int32_t rope_offset;
};

// Warp 0's walk over the item's tiles: segment `segment` (of the sequence) starts at sequence
// slot segment_start; `tile` is the next of its tiles to consider (-1: entering the segment);
// bit b of `mask` says whether tile mask_base + b may be visible to the CTA.
struct Cursor {
  int32_t segment;
  int32_t segment_start;
  int32_t tile;
  int32_t mask_base;
  uint32_t mask;
  int32_t unused[3];
};

// Positions and clocks of a set of query vectors (INT_MAX / INT_MIN when empty).
struct QueryBounds {
  int32_t min_pos, max_pos, min_clock, max_clock;
};

template <int kMaxDim>
struct Smem {
  static constexpr int kRow = kMaxDim + 8;     // bf16 per K/V row: the 16-byte pad puts the 8 rows
                                               // of an ldmatrix 8x8 on 8 different bank groups
  static constexpr int kChunks = kMaxDim / 8;  // 16-byte chunks of a row
  static constexpr int kTileBytes = kTileSlots * kRow * 2;
  static constexpr int kMetaBytes = 3 * kTileSlots * 4;  // positions, from, until
  static constexpr int kK = 0;
  static constexpr int kV = kK + kStages * kTileBytes;
  static constexpr int kMeta = kV + kStages * kTileBytes;
  static constexpr int kDesc = kMeta + kStages * kMetaBytes;
  static constexpr int kCursor = kDesc + kDescRing * static_cast<int>(sizeof(TileDesc));
  static constexpr int kBounds = kCursor + static_cast<int>(sizeof(Cursor));
  static constexpr int kBytes = kBounds + kWarps * static_cast<int>(sizeof(QueryBounds));
  // The decode merge, after the loop, overlays the K/V stages: per warp (m, l) and O rows of
  // kMaxDim + 8 floats (the pad spreads the fragment stores over the banks).
  static constexpr int kMergeRow = kMaxDim + 8;
  static constexpr int kMergeO = 0;
  static constexpr int kMergeM = kMergeO + kWarps * kM * kMergeRow * 4;
  static constexpr int kMergeL = kMergeM + kWarps * kM * 4;
  static_assert(kMergeL + kWarps * kM * 4 <= kMeta, "the decode merge fits in the K/V stages");
  static_assert(kDesc % 16 == 0 && kCursor % 16 == 0 && kBounds % 16 == 0);
};

__device__ __forceinline__ QueryBounds Merge(QueryBounds a, const QueryBounds& b) {
  a.min_pos = min(a.min_pos, b.min_pos);
  a.max_pos = max(a.max_pos, b.max_pos);
  a.min_clock = min(a.min_clock, b.min_clock);
  a.max_clock = max(a.max_clock, b.max_clock);
  return a;
}

// Some query within `q` may see some slot within `b` (conservative: per-bound tests).
__device__ __forceinline__ bool TileMaybeVisible(const TileBounds& b, const QueryBounds& q,
                                                 int window) {
  return b.min_position <= q.max_pos &&
         (window == 0 || int64_t{q.min_pos} - b.max_position < window) &&
         b.min_visible_from <= q.max_clock && b.max_visible_until >= q.min_clock;
}
// Some query within `q` may see the slot.
__device__ __forceinline__ bool SlotMaybeVisible(int kp, int from, int until, const QueryBounds& q,
                                                 int window) {
  return kp <= q.max_pos && (window == 0 || int64_t{q.min_pos} - kp < window) &&
         from <= q.max_clock && until >= q.min_clock;
}
// Every query within `q` sees the slot (Visible() holds for each).
__device__ __forceinline__ bool SlotAlwaysVisible(int kp, int from, int until, const QueryBounds& q,
                                                  int window) {
  return kp <= q.min_pos && (window == 0 || int64_t{q.max_pos} - kp < window) &&
         from <= q.min_clock && until >= q.max_clock;
}

// Warp 0 (all lanes, same values): moves the cursor to the item's next tile that may be visible
// and writes its descriptor to *out (n = 0 past the last). The per-tile bounds are read 32 tiles
// at a time (lane b: tile mask_base + b), so a causal prefill's long run of tiles past its rows
// costs one read per 32 tiles.
__device__ void Advance(const KernelParams& p, const WorkItem& item, const SequenceDesc& seq,
                        const QueryBounds& cta, Cursor* cursor, TileDesc* out, int lane) {
  Cursor c = *cursor;
  TileDesc d{};
  while (c.segment < seq.num_segments) {
    const int index = seq.segment_begin + c.segment;
    const memory::KvSegmentView seg = p.segments[index];
    const int lo = max(item.kv_begin - c.segment_start, 0);
    const int hi = min(item.kv_end - c.segment_start, seg.num_slots);
    bool found = false;
    if (lo < hi) {
      if (c.tile < 0) {
        c.tile = lo / kTileSlots;
        c.mask_base = c.tile - 32;  // forces a read of the bounds
      }
      const int last = (hi - 1) / kTileSlots;
      while (!found && c.tile <= last) {
        if (seg.shared) {
          found = true;  // every slot of a shared segment is visible
          break;
        }
        if (c.tile - c.mask_base >= 32) {
          c.mask_base = c.tile;
          const int tile = c.tile + lane;
          const bool maybe =
              tile <= last &&
              TileMaybeVisible(p.tile_bounds[p.segment_tiles[index] + tile], cta, p.sliding_window);
          c.mask = __ballot_sync(0xffffffffu, maybe);
        }
        const uint32_t ahead = c.mask >> (c.tile - c.mask_base);
        if (ahead != 0) {
          c.tile += __ffs(static_cast<int>(ahead)) - 1;
          found = true;
        } else {
          c.tile = c.mask_base + 32;
        }
      }
    }
    if (found) {
      d.page_ids = seg.page_ids;
      d.positions = seg.positions;
      d.visible_from = seg.visible_from;
      d.visible_until = seg.visible_until;
      d.local = max(c.tile * kTileSlots, lo);
      d.n = min(c.tile * kTileSlots + kTileSlots, hi) - d.local;
      d.shared = seg.shared;
      d.rope_offset = seg.rope_offset;
      ++c.tile;
      break;
    }
    c.segment_start += seg.num_slots;
    ++c.segment;
    c.tile = -1;
  }
  __syncwarp();  // every lane has read *cursor
  if (lane == 0) {
    *cursor = c;
    *out = d;
  }
  __syncwarp();
}

// All threads: cp.async copies of the described tile into ring stage `stage` (K and V rows of
// head kv_head, zeros for rows n..63 so that P.V never multiplies stale data, and the slots'
// positions / visibility unless the segment is shared). Only the first head_dim / 8 chunks of
// a row are written; the kernel never reads the others.
template <int kMaxDim>
__device__ __forceinline__ void IssueTile(const KernelParams& p, const TileDesc* desc, char* smem,
                                          int stage, int kv_head) {
  using S = Smem<kMaxDim>;
  const int n = desc->n;
  if (n == 0) return;
  const int local = desc->local;
  const __nv_bfloat16* pool = static_cast<const __nv_bfloat16*>(p.pool);
  const int c = threadIdx.x % S::kChunks;
  if (c < p.head_dim / 8) {
    const int32_t* page_ids = desc->page_ids;
    const int bs = p.layout.block_size, kv_dim = p.layout.kv_dim;
    const int64_t page_elements = int64_t{p.layout.num_layers} * 2 * bs * kv_dim;
    const int64_t k_offset = int64_t{p.layer} * 2 * bs * kv_dim + kv_head * p.head_dim + c * 8;
    const int64_t v_delta = int64_t{bs} * kv_dim;  // V rows follow the layer's K rows
    const uint32_t k_dst = SharedAddress(smem + S::kK + stage * S::kTileBytes) + c * 16;
    const uint32_t v_dst = SharedAddress(smem + S::kV + stage * S::kTileBytes) + c * 16;
    // Consecutive threads take consecutive chunks of a row: each warp copies whole rows.
    constexpr int kRowsPerPass = kThreads / S::kChunks;
#pragma unroll
    for (int pass = 0; pass < kTileSlots / kRowsPerPass; ++pass) {
      const int j = threadIdx.x / S::kChunks + pass * kRowsPerPass;
      const uint32_t row = j * S::kRow * 2;
      if (j < n) {
        const int slot = local + j;
        const int page = p.block.Div(slot);
        const int in_page = slot - page * bs;
        const __nv_bfloat16* k =
            pool + page_ids[page] * page_elements + k_offset + int64_t{in_page} * kv_dim;
        CpAsync16(k_dst + row, k);
        CpAsync16(v_dst + row, k + v_delta);
      } else {
        CpAsyncZero16(k_dst + row, pool);
        CpAsyncZero16(v_dst + row, pool);
      }
    }
  }
  if (!desc->shared) {
    const uint32_t meta = SharedAddress(smem + S::kMeta + stage * S::kMetaBytes);
    for (int e = threadIdx.x; e < 3 * kTileSlots; e += kThreads) {
      const int array = e / kTileSlots, j = e % kTileSlots;
      if (j >= n) continue;
      const int32_t* src = array == 0   ? desc->positions
                           : array == 1 ? desc->visible_from
                                        : desc->visible_until;
      CpAsync4(meta + e * 4, src + local + j);
    }
  }
}

// The A fragments of this thread's two rows of the warp's M tile (local query vectors
// `local_row` and local_row + 8) for every 16-dimension step: fp32 query, rotated by RoPE at
// -rope_offset for a shared segment (in fp32, the angle reduced to [-pi, pi] in fp64 first so
// that the fast sine and cosine are accurate), rounded to bf16. Rows past the sequence's query
// vectors are zeros.
template <int kMaxDim>
__device__ __forceinline__ void MakeQueryFragments(uint32_t (&qa)[kMaxDim / 16][4],
                                                   const KernelParams& p, const WorkItem& item,
                                                   const SequenceDesc& seq, int local_row,
                                                   bool shared, int rope_offset) {
  const int hd = p.head_dim, half = hd / 2, t = threadIdx.x % 4;
  const int group = p.num_heads / p.num_kv_heads, total = seq.num_rows * group;
  const float* q[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int v = item.qvec_begin + local_row + 8 * r;
    q[r] = v < total ? p.q + int64_t{seq.first_row + v / group} * p.q_stride +
                           (item.kv_head * group + v % group) * hd
                     : nullptr;
  }
#pragma unroll
  for (int kk = 0; kk < kMaxDim / 16; ++kk) {
    if (kk >= hd / 16) break;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float x[2][2];  // [row][column]
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int dim = kk * 16 + 8 * h + 2 * t + e;
        float cs = 1.f, sn = 0.f;
        if (shared) {
          // The angle as the CUDA-core kernel forms it, then reduced exactly enough in fp64.
          const float angle = static_cast<float>(-rope_offset) * p.inv_freq[dim % half];
          const double turns = rint(static_cast<double>(angle) * (1.0 / kTwoPi));
          __sincosf(static_cast<float>(fma(-turns, kTwoPi, static_cast<double>(angle))), &sn, &cs);
        }
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          float value = 0.f;
          if (q[r] != nullptr) {
            value = q[r][dim];
            if (shared) {
              value = dim < half ? value * cs - q[r][dim + half] * sn
                                 : value * cs + q[r][dim - half] * sn;
            }
          }
          x[r][e] = value;
        }
      }
      // a0 / a2: row g, columns 2t, 2t + 1 (+ 8); a1 / a3: row g + 8.
      qa[kk][2 * h] = PackBf16(x[0][0], x[0][1]);
      qa[kk][2 * h + 1] = PackBf16(x[1][0], x[1][1]);
    }
  }
}

// Where the output of local query vector `local` goes: the output row, or (split items) its
// partial, whose (max * scale, sum) `write_ml` stores.
__device__ __forceinline__ float* Destination(const KernelParams& p, const WorkItem& item,
                                              const SequenceDesc& seq, int local, float max_raw,
                                              float sum, bool write_ml) {
  const int group = p.num_heads / p.num_kv_heads, v = item.qvec_begin + local;
  if (item.num_splits == 1) {
    return p.out + int64_t{seq.first_row + v / group} * p.num_heads * p.head_dim +
           (item.kv_head * group + v % group) * p.head_dim;
  }
  const int64_t partial = item.partial_base + int64_t{local} * item.num_splits + item.split;
  if (write_ml) {
    p.partial_ml[2 * partial] = max_raw * p.scale;
    p.partial_ml[2 * partial + 1] = sum;
  }
  return p.partial_o + partial * p.head_dim;
}

template <int kMaxDim, bool kDecode>
__global__ void __launch_bounds__(kThreads, 2)
    MmaAttentionKernel(const KernelParams p, const WorkItem* items) {
  using S = Smem<kMaxDim>;
  constexpr int kKSteps = kMaxDim / 16;     // Q.K^T steps over dims = P.V pairs of output tiles
  constexpr int kOTiles = kMaxDim / 8;      // n8 tiles of O
  constexpr int kSTiles = kDecode ? 2 : 8;  // n8 tiles of S per warp per K/V tile
  constexpr int kWarpSlots = kSTiles * 8;

  extern __shared__ __align__(16) char smem[];
  TileDesc* descs = reinterpret_cast<TileDesc*>(smem + S::kDesc);
  Cursor* cursor = reinterpret_cast<Cursor*>(smem + S::kCursor);
  QueryBounds* warp_bounds = reinterpret_cast<QueryBounds*>(smem + S::kBounds);

  const WorkItem item = items[blockIdx.x];
  const SequenceDesc seq = p.sequences[item.sequence];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;  // fragment row (and row + 8), column pair
  const int group = p.num_heads / p.num_kv_heads;
  const int total_qvecs = seq.num_rows * group;
  const int ksteps = p.head_dim / 16;
  const int warp_first = kDecode ? 0 : warp * kM;          // the warp's first local query vector
  const int slot_first = kDecode ? warp * kWarpSlots : 0;  // the warp's first slot of a tile

  // Lanes l and l + 16 hold query vector warp_first + l % 16: position, clock; the warp's bounds.
  int my_pos = 0, my_clock = 0;
  const bool my_valid = item.qvec_begin + warp_first + lane % kM < total_qvecs;
  if (my_valid) {
    const int row = seq.first_row + (item.qvec_begin + warp_first + lane % kM) / group;
    my_pos = p.positions[row];
    my_clock = p.clocks[row];
  }
  const bool warp_has_queries = __any_sync(0xffffffffu, my_valid);
  {
    const QueryBounds b{__reduce_min_sync(0xffffffffu, my_valid ? my_pos : INT_MAX),
                        __reduce_max_sync(0xffffffffu, my_valid ? my_pos : INT_MIN),
                        __reduce_min_sync(0xffffffffu, my_valid ? my_clock : INT_MAX),
                        __reduce_max_sync(0xffffffffu, my_valid ? my_clock : INT_MIN)};
    if (lane == 0) warp_bounds[warp] = b;
  }
  int qpos[2], qclock[2];  // of fragment rows g and g + 8
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    qpos[r] = __shfl_sync(0xffffffffu, my_pos, g + 8 * r);
    qclock[r] = __shfl_sync(0xffffffffu, my_clock, g + 8 * r);
  }
  __syncthreads();  // warp bounds
  if (warp == 0) {
    const QueryBounds cta =
        Merge(Merge(warp_bounds[0], warp_bounds[1]), Merge(warp_bounds[2], warp_bounds[3]));
    if (lane == 0) *cursor = Cursor{0, 0, -1, 0, 0, {}};
    __syncwarp();
    for (int i = 0; i < kStages; ++i)
      Advance(p, item, seq, cta, cursor, &descs[i], lane);
  }
  __syncthreads();  // descriptors of tiles 0 .. kStages - 1
#pragma unroll
  for (int i = 0; i < kStages - 1; ++i) {
    IssueTile<kMaxDim>(p, &descs[i], smem, i, item.kv_head);
    CpAsyncCommit();
  }

  float o[kOTiles][4];
#pragma unroll
  for (int i = 0; i < kOTiles; ++i)
    o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};  // raw-score max, this lane's sums
  uint32_t qa[kKSteps][4];
  int q_key = kNoQuery;
  const float c = p.scale * kLog2e;

  for (int i = 0;; ++i) {
    // Tile i has landed (only tiles i + 1 .. i + kStages - 2 may still be in flight) and every
    // warp is done with tile i - 1, whose stage the next copies overwrite.
    CpAsyncWait<kStages - 2>();
    __syncthreads();
    IssueTile<kMaxDim>(p, &descs[(i + kStages - 1) % kDescRing], smem, (i + kStages - 1) % kStages,
                       item.kv_head);
    CpAsyncCommit();  // possibly empty: keeps one group per tile
    if (warp == 0) {
      const QueryBounds cta =
          Merge(Merge(warp_bounds[0], warp_bounds[1]), Merge(warp_bounds[2], warp_bounds[3]));
      Advance(p, item, seq, cta, cursor, &descs[(i + kStages) % kDescRing], lane);
    }
    const TileDesc& desc = descs[i % kDescRing];
    const int n = desc.n;
    if (n == 0) break;  // CTA-uniform
    if (!warp_has_queries) continue;
    const bool shared = desc.shared != 0;
    const int stage = i % kStages;
    const int32_t* slot_pos =
        reinterpret_cast<const int32_t*>(smem + S::kMeta + stage * S::kMetaBytes);
    const int32_t* slot_from = slot_pos + kTileSlots;
    const int32_t* slot_until = slot_from + kTileSlots;

    // Whether this warp's queries may see any of its slots of the tile, and whether they all
    // see all of them (then no per-score mask).
    bool maybe, always;
    if (shared) {
      maybe = n > slot_first;
      always = n >= slot_first + kWarpSlots;
    } else {
      const QueryBounds wb = warp_bounds[warp];
      bool lane_maybe = false, lane_always = true;
#pragma unroll
      for (int h = 0; h < (kDecode ? 1 : 2); ++h) {
        const int j = slot_first + (kDecode ? lane % 16 : lane + 32 * h);
        bool slot_maybe = false, slot_always = false;
        if (j < n) {
          slot_maybe =
              SlotMaybeVisible(slot_pos[j], slot_from[j], slot_until[j], wb, p.sliding_window);
          slot_always =
              SlotAlwaysVisible(slot_pos[j], slot_from[j], slot_until[j], wb, p.sliding_window);
        }
        lane_maybe = lane_maybe || slot_maybe;
        lane_always = lane_always && slot_always;
      }
      maybe = __any_sync(0xffffffffu, lane_maybe);
      always = __all_sync(0xffffffffu, lane_always);
    }
    if (!maybe) continue;  // warp-uniform; leaves m, l, O exactly as they are

    const int key = shared ? desc.rope_offset : kUnrotated;
    if (key != q_key) {
      MakeQueryFragments<kMaxDim>(qa, p, item, seq, warp_first + g, shared, desc.rope_offset);
      q_key = key;
    }

    // S = Q K^T over this warp's slots: K rows are the B operand as stored (non-transposed
    // ldmatrix): matrices (slots +0..7, dims +0..7), (+0..7, +8..15), (+8..15, +0..7),
    // (+8..15, +8..15) give b0, b1 of n-tile 2 np and b0, b1 of n-tile 2 np + 1.
    const uint32_t k_tile = SharedAddress(smem + S::kK + stage * S::kTileBytes);
    const uint32_t v_tile = SharedAddress(smem + S::kV + stage * S::kTileBytes);
    float s[kSTiles][4];
#pragma unroll
    for (int nt = 0; nt < kSTiles; ++nt)
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      if (kk >= ksteps) break;
#pragma unroll
      for (int np = 0; np < kSTiles / 2; ++np) {
        const int row = slot_first + np * 16 + (lane / 16) * 8 + lane % 8;
        const int col = kk * 16 + (lane / 8) % 2 * 8;
        uint32_t b[4];
        LdMatrixX4(b, k_tile + (row * S::kRow + col) * 2);
        MmaBf16(s[2 * np], qa[kk], b[0], b[1]);
        MmaBf16(s[2 * np + 1], qa[kk], b[2], b[3]);
      }
    }

    // Per-score visibility: s[nt][e] is row g + 8 (e / 2), slot slot_first + 8 nt + 2 t + e % 2.
    if (!always) {
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt) {
        const int j = slot_first + nt * 8 + 2 * t;
        int2 kp = {0, 0}, from = {0, 0}, until = {0, 0};
        if (!shared) {  // j is even: 8-byte aligned pairs
          kp = *reinterpret_cast<const int2*>(slot_pos + j);
          from = *reinterpret_cast<const int2*>(slot_from + j);
          until = *reinterpret_cast<const int2*>(slot_until + j);
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int jj = j + e % 2;
          const bool visible =
              jj < n && (shared || Visible(false, e % 2 ? kp.y : kp.x, e % 2 ? from.y : from.x,
                                           e % 2 ? until.y : until.x, qpos[e / 2], qclock[e / 2],
                                           p.sliding_window));
          if (!visible) s[nt][e] = -INFINITY;
        }
      }
    }

    // Online softmax per row (the 4 lanes of a quad hold a row's columns).
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt)
        mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(m[r], mx);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // nothing visible yet: p = 0
      const float alpha = exp2f((m[r] - m_use) * c);         // 0 when m was -inf, 1 if same
      m[r] = m_new;
      l[r] *= alpha;
#pragma unroll
      for (int ot = 0; ot < kOTiles; ++ot) {
        o[ot][2 * r] *= alpha;
        o[ot][2 * r + 1] *= alpha;
      }
      const float offset = m_use * c;
#pragma unroll
      for (int nt = 0; nt < kSTiles; ++nt) {
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          s[nt][e] = exp2f(fmaf(s[nt][e], c, -offset));  // -inf -> 0
          l[r] += s[nt][e];
        }
      }
    }

    // O += P V: the S accumulators of n-tiles 2 kj, 2 kj + 1 are the A fragment of k-step kj
    // (rounded to bf16); V rows are the B operand transposed (ldmatrix .trans): matrices
    // (slots +0..7, dims +0..7), (+8..15, +0..7), (+0..7, +8..15), (+8..15, +8..15) give b0, b1
    // of output tile 2 dp and b0, b1 of output tile 2 dp + 1.
#pragma unroll
    for (int kj = 0; kj < kSTiles / 2; ++kj) {
      const uint32_t a[4] = {PackBf16(s[2 * kj][0], s[2 * kj][1]),
                             PackBf16(s[2 * kj][2], s[2 * kj][3]),
                             PackBf16(s[2 * kj + 1][0], s[2 * kj + 1][1]),
                             PackBf16(s[2 * kj + 1][2], s[2 * kj + 1][3])};
      const int row = slot_first + kj * 16 + (lane / 8) % 2 * 8 + lane % 8;
#pragma unroll
      for (int dp = 0; dp < kKSteps; ++dp) {
        if (dp >= ksteps) break;
        const int col = dp * 16 + (lane / 16) * 8;
        uint32_t b[4];
        LdMatrixX4Trans(b, v_tile + (row * S::kRow + col) * 2);
        MmaBf16(o[2 * dp], a, b[0], b[1]);
        MmaBf16(o[2 * dp + 1], a, b[2], b[3]);
      }
    }
  }
  CpAsyncWait<0>();  // nothing is in flight past the last tile; made sure before any reuse

  // Row sums over the quad.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
    l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
  }
  const int hd = p.head_dim;

  if constexpr (!kDecode) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int local = warp_first + g + 8 * r;
      if (item.qvec_begin + local >= total_qvecs) continue;
      const float inverse = l[r] > 0.f ? 1.f / l[r] : 0.f;
      float* dst = Destination(p, item, seq, local, m[r], l[r], t == 0);
#pragma unroll
      for (int ot = 0; ot < kOTiles; ++ot) {
        if (ot >= hd / 8) break;
        *reinterpret_cast<float2*>(dst + ot * 8 + 2 * t) =
            make_float2(o[ot][2 * r] * inverse, o[ot][2 * r + 1] * inverse);
      }
    }
  } else {
    // Merge the four warps' (m, l, O) of the same 16 rows: out = sum_w e^(m_w - M) O_w / L.
    __syncthreads();  // every warp is done with the K/V stages the merge overlays
    float* merge_o = reinterpret_cast<float*>(smem + S::kMergeO);
    float* merge_m = reinterpret_cast<float*>(smem + S::kMergeM);
    float* merge_l = reinterpret_cast<float*>(smem + S::kMergeL);
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int row = warp * kM + g + 8 * r;
      if (t == 0) {
        merge_m[row] = m[r];
        merge_l[row] = l[r];
      }
#pragma unroll
      for (int ot = 0; ot < kOTiles; ++ot) {
        if (ot >= hd / 8) break;
        *reinterpret_cast<float2*>(merge_o + row * S::kMergeRow + ot * 8 + 2 * t) =
            make_float2(o[ot][2 * r], o[ot][2 * r + 1]);
      }
    }
    __syncthreads();
    // Thread: row threadIdx.x / 8, float4 columns part, part + 8, ...
    const int row = threadIdx.x / 8, part = threadIdx.x % 8;
    if (item.qvec_begin + row < total_qvecs) {
      float mw[kWarps], weight[kWarps];
      float max_m = -INFINITY;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        mw[w] = merge_m[w * kM + row];
        max_m = fmaxf(max_m, mw[w]);
      }
      const float m_use = max_m == -INFINITY ? 0.f : max_m;
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        weight[w] = exp2f((mw[w] - m_use) * c);  // 0 for a warp that saw nothing
        sum += weight[w] * merge_l[w * kM + row];
      }
      const float inverse = sum > 0.f ? 1.f / sum : 0.f;
      float* dst = Destination(p, item, seq, row, max_m, sum, part == 0);
      for (int q4 = part; q4 < hd / 4; q4 += 8) {
        float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
        for (int w = 0; w < kWarps; ++w) {
          const float4 x =
              *reinterpret_cast<const float4*>(merge_o + (w * kM + row) * S::kMergeRow + 4 * q4);
          acc.x += weight[w] * x.x;
          acc.y += weight[w] * x.y;
          acc.z += weight[w] * x.z;
          acc.w += weight[w] * x.w;
        }
        *reinterpret_cast<float4*>(dst + 4 * q4) =
            make_float4(acc.x * inverse, acc.y * inverse, acc.z * inverse, acc.w * inverse);
      }
    }
  }
}

template <int kMaxDim, bool kDecode>
cudaError_t Launch(const KernelParams& p, const WorkItem* items, int64_t num_items,
                   cudaStream_t stream) {
  MmaAttentionKernel<kMaxDim, kDecode>
      <<<static_cast<unsigned>(num_items), kThreads, Smem<kMaxDim>::kBytes, stream>>>(p, items);
  return cudaGetLastError();
}

template <int kMaxDim, bool kDecode>
cudaError_t Prepare() {
  cudaError_t e =
      cudaFuncSetAttribute(MmaAttentionKernel<kMaxDim, kDecode>,
                           cudaFuncAttributeMaxDynamicSharedMemorySize, Smem<kMaxDim>::kBytes);
  if (e != cudaSuccess) return e;
  // All of the unified L1 / shared memory as shared memory, so two CTAs fit per multiprocessor.
  return cudaFuncSetAttribute(MmaAttentionKernel<kMaxDim, kDecode>,
                              cudaFuncAttributePreferredSharedMemoryCarveout,
                              cudaSharedmemCarveoutMaxShared);
}

}  // namespace

cudaError_t PrepareMmaAttention() {
  // Four instantiations in all: head_dim <= 64 or <= 128, prefill or decode.
  for (cudaError_t e :
       {Prepare<64, false>(), Prepare<64, true>(), Prepare<128, false>(), Prepare<128, true>()}) {
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

cudaError_t LaunchMmaAttention(const KernelParams& params, const WorkItem* items, int64_t num_items,
                               bool decode, cudaStream_t stream) {
  if (num_items == 0) return cudaSuccess;
  if (params.head_dim <= 64) {
    return decode ? Launch<64, true>(params, items, num_items, stream)
                  : Launch<64, false>(params, items, num_items, stream);
  }
  return decode ? Launch<128, true>(params, items, num_items, stream)
                : Launch<128, false>(params, items, num_items, stream);
}

}  // namespace gistmem::cuda::attention
