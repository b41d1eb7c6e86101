// Timings of the paged attention paths on Llama-3-8B-shaped heads (32 query heads, 8 KV heads,
// head_dim 128, 16-slot pages), each shape under both kernels (tensor cores, CUDA cores), for
// the record in tests/gpu/RESULTS.md; the only checks are that each run succeeds and gives
// finite outputs. One layer's K/V: bytes read per run are slots * 2 (K, V) * kv_dim * 2 bytes.
// FLOP: 4 * head_dim * heads per (row, slot) pair, counted over the pairs the rule lets through
// ("visible": rows are the sequence's last positions, causal) and over all pairs ("dense").
// Model figures (model/backend/cuda/README.md): K/V bytes / 4.2 TB/s for decode, visible FLOP /
// 790 TFLOP/s for prefill.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>
#include <random>
#include <string>
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
double TimeAttention(AttentionKernel kernel, int32_t sequences, int32_t slots, int32_t rows,
                     int32_t ctas_per_sm = 4, int iterations = 20) {
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
  options.kernel = kernel;
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
  for (int i = 0; i < std::min(3, iterations); ++i)
    EXPECT_TRUE((*attention)->Run(in, nullptr).ok());
  const int kIterations = iterations;
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
  const double per_pair = 4.0 * kHeads * kHeadDim;
  const double dense = per_pair * sequences * rows * double(slots);
  // Row r (position slots - rows + r) sees slots - rows + r + 1 slots.
  const double visible =
      per_pair * sequences * (double(rows) * (slots - rows + 1) + double(rows) * (rows - 1) / 2);
  std::printf(
      "%-12s %3d seq x %6d slots x %5d rows, split target %d CTAs/SM: %10.1f us/layer, KV %7.1f "
      "GB/s, %7.2f TFLOP/s visible, %7.2f TFLOP/s dense (%lld prefill CTAs, %lld decode CTAs, "
      "%lld combined)\n",
      std::string(AttentionKernelName(kernel)).c_str(), sequences, slots, rows, ctas_per_sm, us,
      bytes / us * 1e-3, visible / us * 1e-6, dense / us * 1e-6,
      (long long)(*attention)->prefill_ctas(), (long long)(*attention)->decode_ctas(),
      (long long)(*attention)->combined_outputs());
  return us;
}

constexpr AttentionKernel kBoth[] = {AttentionKernel::kTensorCores, AttentionKernel::kCudaCores};

class CudaAttentionSpeed : public ::testing::Test {
 protected:
  void SetUp() override { GISTMEM_SKIP_WITHOUT_GPU(); }
};

TEST_F(CudaAttentionSpeed, DecodeBatch32x4096) {
  for (AttentionKernel k : kBoth)
    for (int32_t ctas : {2, 4, 8})
      TimeAttention(k, 32, 4096, 1, ctas);
}
TEST_F(CudaAttentionSpeed, DecodeBatch64x4096) {
  for (AttentionKernel k : kBoth)
    for (int32_t ctas : {2, 4, 8})
      TimeAttention(k, 64, 4096, 1, ctas);
}
TEST_F(CudaAttentionSpeed, DecodeOneSequence16k) {
  for (AttentionKernel k : kBoth)
    for (int32_t ctas : {4, 8})
      TimeAttention(k, 1, 16384, 1, ctas);
}
TEST_F(CudaAttentionSpeed, DecodeOneSequence32k) {
  for (AttentionKernel k : kBoth)
    for (int32_t ctas : {4, 8})
      TimeAttention(k, 1, 32768, 1, ctas);
}
TEST_F(CudaAttentionSpeed, DecodeBatch8x1024) {
  for (AttentionKernel k : kBoth)
    TimeAttention(k, 8, 1024, 1);
}
TEST_F(CudaAttentionSpeed, PrefillOneSequence2048) {
  for (AttentionKernel k : kBoth)
    TimeAttention(k, 1, 2048, 2048);
}
TEST_F(CudaAttentionSpeed, PrefillOneSequence16384) {
  // The CUDA-core kernel takes ~0.5 s a run here: few iterations.
  for (AttentionKernel k : kBoth)
    TimeAttention(k, 1, 16384, 16384, 4, k == AttentionKernel::kTensorCores ? 5 : 2);
}

}  // namespace
}  // namespace gistmem::cuda
