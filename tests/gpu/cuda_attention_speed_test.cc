// Timings of the paged attention paths on Llama-3-8B-shaped heads (32 query heads, 8 KV heads,
// head_dim 128, 16-slot pages), for the record in tests/gpu/RESULTS.md; the only checks are
// that each run succeeds and gives finite outputs. One layer's K/V: bytes read per run are
// slots * 2 (K, V) * kv_dim * 2 bytes.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

#include "model/backend/cuda/device_kv_view.h"
#include "model/backend/cuda/paged_attention.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {
namespace {

using testing::Allocate;
using testing::Download;
using testing::Upload;

constexpr int32_t kHeads = 32, kKvHeads = 8, kHeadDim = 128, kBlock = 16;

// `sequences` sequences of `slots` slots each (pages shuffled), `rows` query rows each at the
// last positions; returns microseconds per Run.
double TimeAttention(int32_t sequences, int32_t slots, int32_t rows, int32_t ctas_per_sm = 4) {
  const memory::PageLayout layout{
      .block_size = kBlock, .num_layers = 1, .kv_dim = kKvHeads * kHeadDim, .element_bytes = 2};
  const int32_t pages_per_seq = (slots + kBlock - 1) / kBlock;
  std::vector<int32_t> free(static_cast<size_t>(sequences) * pages_per_seq);
  std::iota(free.begin(), free.end(), 0);
  std::shuffle(free.begin(), free.end(), std::mt19937(1));
  std::vector<std::vector<HostKvSegment>> host(sequences);
  std::vector<int32_t> row_offsets{0}, positions, clocks;
  for (int32_t s = 0; s < sequences; ++s) {
    HostKvSegment seg;
    seg.num_slots = slots;
    seg.page_ids.assign(free.begin() + s * pages_per_seq, free.begin() + (s + 1) * pages_per_seq);
    seg.positions.resize(slots);
    std::iota(seg.positions.begin(), seg.positions.end(), 0);
    seg.visible_from.assign(slots, 0);
    seg.visible_until.assign(slots, memory::kVisibleForever);
    host[s].push_back(std::move(seg));
    for (int32_t r = 0; r < rows; ++r) {
      positions.push_back(slots - rows + r);
      clocks.push_back(0);
    }
    row_offsets.push_back(static_cast<int32_t>(positions.size()));
  }
  absl::StatusOr<DeviceKvViews> views = DeviceKvViews::Upload(host, kBlock);
  EXPECT_TRUE(views.ok()) << views.status();
  if (!views.ok()) return 0;
  DeviceBuffer pool = Allocate(free.size() * layout.page_bytes());
  EXPECT_EQ(cudaMemset(pool.get(), 0x3c, pool.bytes()), cudaSuccess);  // bf16 0x3c3c ~ 0.0115
  std::mt19937 rng(2);
  DeviceBuffer q = Upload(testing::RandomNormal(positions.size() * kHeads * kHeadDim, rng));
  DeviceBuffer pos = Upload(positions), clk = Upload(clocks);
  DeviceBuffer freq = Upload(std::vector<float>(kHeadDim / 2, 1e-3f));
  DeviceBuffer out = Allocate(positions.size() * kHeads * kHeadDim * 4);
  AttentionOptions options;
  options.ctas_per_multiprocessor = ctas_per_sm;
  absl::StatusOr<std::unique_ptr<PagedAttention>> attention = PagedAttention::Create(options);
  EXPECT_TRUE(attention.ok());
  EXPECT_TRUE((*attention)
                  ->Plan(views->views(), row_offsets, {kHeads, kKvHeads, kHeadDim, 0}, nullptr)
                  .ok());
  AttentionInputs in{pool.get(),
                     layout,
                     0,
                     q.as<float>(),
                     kHeads * kHeadDim,
                     pos.as<int32_t>(),
                     clk.as<int32_t>(),
                     freq.as<float>(),
                     out.as<float>()};
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE((*attention)->Run(in, nullptr).ok());
  constexpr int kIterations = 20;
  cudaEventRecord(start);
  for (int i = 0; i < kIterations; ++i)
    (void)(*attention)->Run(in, nullptr);
  cudaEventRecord(stop);
  cudaEventSynchronize(stop);
  float ms = 0;
  cudaEventElapsedTime(&ms, start, stop);
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  const std::vector<float> got = Download<float>(out, positions.size() * kHeads * kHeadDim);
  for (float v : got)
    EXPECT_TRUE(std::isfinite(v));
  const double us = 1000.0 * ms / kIterations;
  const double bytes = double(sequences) * slots * 2 * layout.kv_dim * 2;
  const double flops = 4.0 * sequences * rows * kHeads * kHeadDim * double(slots);  // upper bound
  std::printf(
      "%3d seq x %6d slots x %4d rows, split target %d CTAs/SM: %9.1f us/layer, KV %7.1f GB/s, "
      "%6.2f TFLOP/s "
      "(%lld prefill CTAs, %lld decode CTAs, %lld combined)\n",
      sequences, slots, rows, ctas_per_sm, us, bytes / us * 1e-3, flops / us * 1e-6,
      (long long)(*attention)->prefill_ctas(), (long long)(*attention)->decode_ctas(),
      (long long)(*attention)->combined_outputs());
  return us;
}

TEST(CudaAttentionSpeed, DecodeBatch64x4096) {
  for (int32_t ctas : {4, 8})
    TimeAttention(64, 4096, 1, ctas);
}
TEST(CudaAttentionSpeed, DecodeOneSequence32k) {
  for (int32_t ctas : {4, 8})
    TimeAttention(1, 32768, 1, ctas);
}
TEST(CudaAttentionSpeed, DecodeBatch8x1024) {
  TimeAttention(8, 1024, 1);
}
TEST(CudaAttentionSpeed, PrefillOneSequence2048) {
  TimeAttention(1, 2048, 2048);
}

}  // namespace
}  // namespace gistmem::cuda
