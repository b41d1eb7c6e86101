// The forward step's fused kernels (kernels.h) against the separate launches they replace,
// bit for bit (the separate ones are checked against the CPU reference in cuda_kernels_test
// and cuda_rms_norm_test):
//   AddRmsNormToBf16        = AddInPlace, RmsNormToBf16
//   GatherAddRmsNormToBf16  = AddInPlace, GatherRows, RmsNormToBf16 (x left as it was)
//   EmbedRmsNormToBf16      = EmbeddingLookup, RmsNormToBf16
//   RopeWriteKv             = ApplyRope on q, ApplyRope on k, WriteKv
// on the shapes of the shipped model, Llama-3.2-1B and Llama-3.1-8B.
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <tuple>
#include <vector>

#include "model/backend/cuda/bf16.h"
#include "model/backend/cuda/kernels.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {
namespace {

using testing::Download;
using testing::RandomNormal;
using testing::Upload;

// (hidden, heads, kv heads, head_dim)
class FusedKernels
    : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t, int64_t>> {
 protected:
  void SetUp() override { GISTMEM_SKIP_WITHOUT_GPU(); }
};

TEST_P(FusedKernels, ResidualNormsEqualTheSeparateLaunches) {
  const auto [hidden, heads, kv_heads, head_dim] = GetParam();
  std::mt19937 rng(static_cast<unsigned>(hidden));
  const int64_t rows = 7, count = 3;
  const float eps = 1e-5f;
  const std::vector<float> x = RandomNormal(rows * hidden, rng, 3.f);
  const std::vector<float> delta = RandomNormal(rows * hidden, rng);
  const std::vector<float> weight = RandomNormal(hidden, rng);
  const std::vector<int32_t> gather = {6, 0, 3};
  DeviceBuffer d_weight = Upload(weight), d_delta = Upload(delta), d_rows = Upload(gather);

  // Add + norm.
  DeviceBuffer x_fused = Upload(x), x_separate = Upload(x);
  DeviceBuffer out_fused = testing::Allocate(rows * hidden * 2),
               out_separate = testing::Allocate(rows * hidden * 2);
  ASSERT_OK(AddRmsNormToBf16(x_fused.as<float>(), d_delta.as<float>(), d_weight.as<float>(),
                             out_fused.get(), rows, hidden, eps, nullptr));
  ASSERT_OK(AddInPlace(x_separate.as<float>(), d_delta.as<float>(), rows * hidden, nullptr));
  ASSERT_OK(RmsNormToBf16(x_separate.as<float>(), d_weight.as<float>(), out_separate.get(), rows,
                          hidden, eps, nullptr));
  EXPECT_EQ(Download<float>(x_fused, rows * hidden), Download<float>(x_separate, rows * hidden));
  EXPECT_EQ(Download<uint16_t>(out_fused, rows * hidden),
            Download<uint16_t>(out_separate, rows * hidden));

  // Gather + add + norm: x stays as it was.
  DeviceBuffer x_kept = Upload(x), x_added = Upload(x);
  DeviceBuffer gathered = testing::Allocate(count * hidden * 4);
  ASSERT_OK(GatherAddRmsNormToBf16(x_kept.as<float>(), d_delta.as<float>(), d_rows.as<int32_t>(),
                                   d_weight.as<float>(), out_fused.get(), count, hidden, eps,
                                   nullptr));
  ASSERT_OK(AddInPlace(x_added.as<float>(), d_delta.as<float>(), rows * hidden, nullptr));
  ASSERT_OK(GatherRows(x_added.as<float>(), d_rows.as<int32_t>(), gathered.as<float>(), count,
                       hidden, nullptr));
  ASSERT_OK(RmsNormToBf16(gathered.as<float>(), d_weight.as<float>(), out_separate.get(), count,
                          hidden, eps, nullptr));
  EXPECT_EQ(Download<uint16_t>(out_fused, count * hidden),
            Download<uint16_t>(out_separate, count * hidden));
  EXPECT_EQ(Download<float>(x_kept, rows * hidden), x);

  // Embedding + norm.
  const int64_t vocab = 50;
  const std::vector<uint16_t> table = ToBf16(RandomNormal(vocab * hidden, rng));
  const std::vector<int32_t> tokens = {3, 49, 0, 3, 17, 8, 22};
  DeviceBuffer d_table = Upload(table), d_tokens = Upload(tokens);
  ASSERT_OK(EmbedRmsNormToBf16(d_table.get(), d_tokens.as<int32_t>(), x_fused.as<float>(),
                               d_weight.as<float>(), out_fused.get(), rows, hidden, eps, nullptr));
  ASSERT_OK(EmbeddingLookup(d_table.get(), d_tokens.as<int32_t>(), x_separate.as<float>(), rows,
                            hidden, nullptr));
  ASSERT_OK(RmsNormToBf16(x_separate.as<float>(), d_weight.as<float>(), out_separate.get(), rows,
                          hidden, eps, nullptr));
  EXPECT_EQ(Download<float>(x_fused, rows * hidden), Download<float>(x_separate, rows * hidden));
  EXPECT_EQ(Download<uint16_t>(out_fused, rows * hidden),
            Download<uint16_t>(out_separate, rows * hidden));
}

TEST_P(FusedKernels, RopeAndKvWriteEqualTheSeparateLaunches) {
  const auto [hidden, heads, kv_heads, head_dim] = GetParam();
  std::mt19937 rng(static_cast<unsigned>(heads * 131 + head_dim));
  const int64_t rows = 5, q_dim = heads * head_dim, kv_dim = kv_heads * head_dim;
  const int64_t stride = q_dim + 2 * kv_dim;
  const memory::PageLayout layout{
      .block_size = 4, .num_layers = 2, .kv_dim = static_cast<int32_t>(kv_dim), .element_bytes = 2};
  const int64_t num_pages = 4;
  const std::vector<float> qkv = RandomNormal(rows * stride, rng);
  const std::vector<int32_t> positions = {0, 1, 77, 4095, 131071}, pages = {3, 0, 3, 1, 2},
                             slots = {1, 0, 2, 3, 0};
  std::vector<float> inv_freq(head_dim / 2);
  for (size_t i = 0; i < inv_freq.size(); ++i)
    inv_freq[i] = static_cast<float>(std::pow(500000.0, -2.0 * double(i) / double(head_dim)));
  const std::vector<uint16_t> pool = ToBf16(RandomNormal(num_pages * layout.page_elements(), rng));
  DeviceBuffer d_positions = Upload(positions), d_pages = Upload(pages), d_slots = Upload(slots),
               d_inv = Upload(inv_freq);
  DeviceBuffer qkv_fused = Upload(qkv), qkv_separate = Upload(qkv);
  DeviceBuffer pool_fused = Upload(pool), pool_separate = Upload(pool);
  const int32_t layer = 1;
  ASSERT_OK(RopeWriteKv(qkv_fused.as<float>(), stride, d_positions.as<int32_t>(), rows, heads,
                        kv_heads, head_dim, d_inv.as<float>(), d_pages.as<int32_t>(),
                        d_slots.as<int32_t>(), pool_fused.get(), layout, layer, nullptr));
  float* q = qkv_separate.as<float>();
  ASSERT_OK(ApplyRope(q, stride, d_positions.as<int32_t>(), rows, heads, head_dim,
                      d_inv.as<float>(), nullptr));
  ASSERT_OK(ApplyRope(q + q_dim, stride, d_positions.as<int32_t>(), rows, kv_heads, head_dim,
                      d_inv.as<float>(), nullptr));
  ASSERT_OK(WriteKv(q + q_dim, q + q_dim + kv_dim, stride, d_pages.as<int32_t>(),
                    d_slots.as<int32_t>(), rows, pool_separate.get(), layout, layer, nullptr));
  EXPECT_EQ(Download<uint16_t>(pool_fused, pool.size()),
            Download<uint16_t>(pool_separate, pool.size()));
  const std::vector<float> fused = Download<float>(qkv_fused, qkv.size());
  const std::vector<float> separate = Download<float>(qkv_separate, qkv.size());
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < q_dim; ++i)
      ASSERT_EQ(fused[r * stride + i], separate[r * stride + i]) << "row " << r << " q " << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, FusedKernels,
                         ::testing::Values(std::make_tuple(384, 6, 2, 64),       // gistmem-16k
                                           std::make_tuple(2048, 32, 8, 64),     // Llama-3.2-1B
                                           std::make_tuple(4096, 32, 8, 128)));  // Llama-3.1-8B

}  // namespace
}  // namespace gistmem::cuda
