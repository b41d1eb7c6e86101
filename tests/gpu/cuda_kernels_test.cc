// Each GPU building block against its CPU reference (model/backend/cpu/ops.h) or an exact
// host computation, with the tolerance each one's rounding allows:
//   - bf16 outputs: one bf16 rounding, 2^-8 relative (8 bits of mantissa);
//   - fp32 outputs of the same arithmetic in another order: ~1e-5 relative;
//   - GEMM: inputs rounded to bf16 on both sides, so products are exact in fp32 and only the
//     summation order differs: 1e-4 of sum |x_i w_i| (fp32) plus one bf16 rounding (bf16 out).
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "model/backend/cpu/ops.h"
#include "model/backend/cuda/bf16.h"
#include "model/backend/cuda/cuda_transformer.h"
#include "model/backend/cuda/gemm.h"
#include "model/backend/cuda/kernels.h"
#include "tests/gpu/gpu_test_util.h"

namespace gistmem::cuda {
namespace {

using testing::Allocate;
using testing::Download;
using testing::RandomNormal;
using testing::Upload;

constexpr float kBf16Relative = 1.f / 256;

std::vector<float> RoundedToBf16(const std::vector<float>& values) {
  std::vector<float> out(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    out[i] = Bf16ToFloat(FloatToBf16(values[i]));
  return out;
}

std::vector<float> Widen(const std::vector<uint16_t>& bits) {
  std::vector<float> out(bits.size());
  for (size_t i = 0; i < bits.size(); ++i)
    out[i] = Bf16ToFloat(bits[i]);
  return out;
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.f), 0x3f80);
  EXPECT_EQ(FloatToBf16(1.f + std::ldexp(1.f, -8)), 0x3f80);  // tie goes to even
  EXPECT_EQ(FloatToBf16(1.f + 3 * std::ldexp(1.f, -8)), 0x3f82);
  EXPECT_EQ(Bf16ToFloat(0xc040), -3.f);
  EXPECT_EQ(HalfToFloat(0x3c00), 1.f);
  EXPECT_EQ(HalfToFloat(0xc000), -2.f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.f, -24));
}

TEST(CudaEmbedding, GathersAndWidensRowsExactly) {
  std::mt19937 rng(1);
  const int64_t vocab = 300, hidden = 96;
  const std::vector<uint16_t> table = ToBf16(RandomNormal(vocab * hidden, rng));
  const std::vector<int32_t> tokens = {5, 0, 299, 5, 17};
  DeviceBuffer d_table = Upload(table), d_tokens = Upload(tokens);
  DeviceBuffer d_out = Allocate(tokens.size() * hidden * 4);
  ASSERT_OK(EmbeddingLookup(d_table.get(), d_tokens.as<int32_t>(), d_out.as<float>(),
                            static_cast<int64_t>(tokens.size()), hidden, nullptr));
  const std::vector<float> got = Download<float>(d_out, tokens.size() * hidden);
  for (size_t r = 0; r < tokens.size(); ++r)
    for (int64_t i = 0; i < hidden; ++i)
      ASSERT_EQ(got[r * hidden + i], Bf16ToFloat(table[tokens[r] * hidden + i]));
}

// RoPE in fp32: the same float angle on both sides; sincosf and std::cos/sin are each within
// about an ulp, so the rotated values agree to ~1e-6 relative even at position 100000.
TEST(CudaRope, MatchesCpuReferenceOnStridedRows) {
  std::mt19937 rng(2);
  const int64_t rows = 7, heads = 3, head_dim = 64, stride = heads * head_dim + 32;
  const std::vector<int32_t> positions = {0, 1, 2, 17, 4095, 65537, 100000};
  std::vector<float> inv_freq(head_dim / 2);
  for (int64_t i = 0; i < head_dim / 2; ++i)
    inv_freq[i] = static_cast<float>(std::pow(10000.0, -2.0 * i / head_dim));
  const std::vector<float> x = RandomNormal(rows * stride, rng);
  std::vector<float> expected = x;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t pos[] = {positions[r]};
    model::ApplyRope(&expected[r * stride], pos, heads, head_dim, inv_freq);
  }
  DeviceBuffer d_x = Upload(x), d_pos = Upload(positions), d_freq = Upload(inv_freq);
  ASSERT_OK(ApplyRope(d_x.as<float>(), stride, d_pos.as<int32_t>(), rows, heads, head_dim,
                      d_freq.as<float>(), nullptr));
  const std::vector<float> got = Download<float>(d_x, x.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], expected[i], 2e-5f * (1.f + std::fabs(expected[i]))) << i;
}

TEST(CudaElementwise, BiasSwigluResidualGatherConvert) {
  std::mt19937 rng(3);
  const int64_t rows = 5, dim = 40, stride = 64, inter = 77;
  // Bias on a strided slice.
  const std::vector<float> y = RandomNormal(rows * stride, rng), bias = RandomNormal(dim, rng);
  std::vector<float> y_expected = y;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < dim; ++i)
      y_expected[r * stride + i] += bias[i];
  DeviceBuffer d_y = Upload(y), d_bias = Upload(bias);
  ASSERT_OK(AddBias(d_y.as<float>(), d_bias.as<float>(), rows, dim, stride, nullptr));
  EXPECT_EQ(Download<float>(d_y, y.size()), y_expected);

  // SwiGLU from the fused gate|up rows, bf16 out.
  const std::vector<float> gate_up = RandomNormal(rows * 2 * inter, rng, 3.f);
  std::vector<float> gate(rows * inter), up(rows * inter);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < inter; ++i) {
      gate[r * inter + i] = gate_up[r * 2 * inter + i];
      up[r * inter + i] = gate_up[r * 2 * inter + inter + i];
    }
  model::SiluMul(gate.data(), up.data(), rows * inter);
  DeviceBuffer d_gu = Upload(gate_up), d_act = Allocate(rows * inter * 2);
  ASSERT_OK(SiluMul(d_gu.as<float>(), d_act.get(), rows, inter, nullptr));
  const std::vector<float> act = Widen(Download<uint16_t>(d_act, rows * inter));
  for (size_t i = 0; i < act.size(); ++i)
    ASSERT_NEAR(act[i], gate[i], kBf16Relative * std::fabs(gate[i]) + 1e-6f) << i;

  // Residual add is exact fp32.
  const std::vector<float> x = RandomNormal(1000, rng), delta = RandomNormal(1000, rng);
  DeviceBuffer d_x = Upload(x), d_delta = Upload(delta);
  ASSERT_OK(AddInPlace(d_x.as<float>(), d_delta.as<float>(), 1000, nullptr));
  const std::vector<float> sum = Download<float>(d_x, 1000);
  for (size_t i = 0; i < sum.size(); ++i)
    ASSERT_EQ(sum[i], x[i] + delta[i]);

  // Gather rows, then convert to bf16.
  const std::vector<int32_t> wanted = {3, 0, 3};
  DeviceBuffer d_rows = Upload(wanted), d_gathered = Allocate(wanted.size() * stride * 4);
  ASSERT_OK(GatherRows(d_y.as<float>(), d_rows.as<int32_t>(), d_gathered.as<float>(),
                       static_cast<int64_t>(wanted.size()), stride, nullptr));
  const std::vector<float> gathered = Download<float>(d_gathered, wanted.size() * stride);
  for (size_t r = 0; r < wanted.size(); ++r)
    for (int64_t i = 0; i < stride; ++i)
      ASSERT_EQ(gathered[r * stride + i], y_expected[wanted[r] * stride + i]);
  DeviceBuffer d_bits = Allocate(gathered.size() * 2);
  ASSERT_OK(
      ToBf16(d_gathered.as<float>(), d_bits.get(), static_cast<int64_t>(gathered.size()), nullptr));
  EXPECT_EQ(Download<uint16_t>(d_bits, gathered.size()), ToBf16(gathered));
}

class CudaGemm : public ::testing::TestWithParam<std::tuple<int64_t, int64_t, int64_t>> {};

TEST_P(CudaGemm, MatchesLinearOnBf16RoundedInputs) {
  const auto [rows, in, out] = GetParam();
  std::mt19937 rng(static_cast<unsigned>(rows + 31 * in + 977 * out));
  const std::vector<float> x = RoundedToBf16(RandomNormal(rows * in, rng));
  const std::vector<float> w = RoundedToBf16(RandomNormal(out * in, rng, 0.05f));
  const std::vector<float> bias = RandomNormal(out, rng);
  std::vector<float> expected(rows * out);
  model::Linear(x.data(), w.data(), bias.data(), expected.data(), rows, in, out);
  std::vector<float> magnitude(rows * out, 0.f);  // sum |x_i w_i| per output
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t o = 0; o < out; ++o)
      for (int64_t i = 0; i < in; ++i)
        magnitude[r * out + o] += std::fabs(x[r * in + i] * w[o * in + i]);

  absl::StatusOr<std::unique_ptr<Gemm>> gemm = Gemm::Create();
  ASSERT_OK(gemm.status());
  DeviceBuffer d_x = Upload(ToBf16(x)), d_w = Upload(ToBf16(w)), d_bias = Upload(bias);
  DeviceBuffer d_f32 = Allocate(rows * out * 4), d_bf16 = Allocate(rows * out * 2);
  ASSERT_OK((*gemm)->Run(d_x.get(), d_w.get(), d_bias.as<float>(), d_f32.get(),
                         OutputType::kFloat32, rows, in, out, nullptr));
  ASSERT_OK((*gemm)->Run(d_x.get(), d_w.get(), d_bias.as<float>(), d_bf16.get(),
                         OutputType::kBFloat16, rows, in, out, nullptr));
  const std::vector<float> f32 = Download<float>(d_f32, rows * out);
  const std::vector<float> bf16 = Widen(Download<uint16_t>(d_bf16, rows * out));
  for (int64_t i = 0; i < rows * out; ++i) {
    const float tolerance = 1e-4f * (magnitude[i] + std::fabs(bias[i % out])) + 1e-6f;
    ASSERT_NEAR(f32[i], expected[i], tolerance) << i;
    // bf16 out: the fp32 sum, one rounding before the bias (bf16) and one after.
    ASSERT_NEAR(bf16[i], expected[i],
                tolerance + 2 * kBf16Relative * (std::fabs(expected[i]) + std::fabs(bias[i % out])))
        << i;
  }
}

INSTANTIATE_TEST_SUITE_P(Shapes, CudaGemm,
                         ::testing::Values(std::make_tuple(1, 64, 512), std::make_tuple(7, 64, 96),
                                           std::make_tuple(33, 1024, 3072),
                                           std::make_tuple(300, 512, 300)));

memory::PageLayout SmallLayout() {
  return {.block_size = 4, .num_layers = 3, .kv_dim = 48, .element_bytes = 2};
}

TEST(CudaKvPages, WriteKvPutsRowsAtTheirPageAndSlot) {
  std::mt19937 rng(4);
  const memory::PageLayout layout = SmallLayout();
  const int64_t num_pages = 6, rows = 5, stride = 3 * layout.kv_dim;
  const std::vector<uint16_t> initial =
      ToBf16(RandomNormal(num_pages * layout.page_elements(), rng));
  const std::vector<float> kv = RandomNormal(rows * stride, rng);
  const std::vector<int32_t> pages = {5, 0, 5, 2, 3}, slots = {3, 0, 1, 2, 3};
  DeviceBuffer d_pool = Upload(initial), d_kv = Upload(kv), d_pages = Upload(pages),
               d_slots = Upload(slots);
  const int32_t layer = 2;
  ASSERT_OK(WriteKv(d_kv.as<float>() + layout.kv_dim, d_kv.as<float>() + 2 * layout.kv_dim, stride,
                    d_pages.as<int32_t>(), d_slots.as<int32_t>(), rows, d_pool.get(), layout, layer,
                    nullptr));
  std::vector<uint16_t> expected = initial;
  for (int64_t r = 0; r < rows; ++r)
    for (int32_t which = 0; which < 2; ++which)
      for (int32_t i = 0; i < layout.kv_dim; ++i)
        expected[pages[r] * layout.page_elements() + layout.RowOffset(layer, which, slots[r]) + i] =
            FloatToBf16(kv[r * stride + (1 + which) * layout.kv_dim + i]);
  EXPECT_EQ(Download<uint16_t>(d_pool, initial.size()), expected);
}

TEST(CudaKvPages, PooledMeanAveragesSourcesInEveryLayer) {
  std::mt19937 rng(5);
  const memory::PageLayout layout = SmallLayout();
  const int64_t num_pages = 5;
  const std::vector<uint16_t> initial =
      ToBf16(RandomNormal(num_pages * layout.page_elements(), rng));
  // Entry 0: four sources over two pages; entry 1: one source; entry 2: none (zeros).
  const std::vector<int32_t> offsets = {0, 4, 5, 5};
  const std::vector<int32_t> src_pages = {1, 1, 3, 3, 0}, src_slots = {2, 3, 0, 1, 1};
  const std::vector<int32_t> dst_pages = {4, 4, 2}, dst_slots = {0, 3, 1};
  DeviceBuffer d_pool = Upload(initial), d_off = Upload(offsets), d_sp = Upload(src_pages),
               d_ss = Upload(src_slots), d_dp = Upload(dst_pages), d_ds = Upload(dst_slots);
  ASSERT_OK(PooledMean(d_off.as<int32_t>(), d_sp.as<int32_t>(), d_ss.as<int32_t>(),
                       d_dp.as<int32_t>(), d_ds.as<int32_t>(), 3, d_pool.get(), layout, nullptr));
  const std::vector<uint16_t> got = Download<uint16_t>(d_pool, initial.size());
  auto at = [&](const std::vector<uint16_t>& pool, int32_t page, int32_t layer, int32_t kv,
                int32_t slot, int32_t i) {
    return Bf16ToFloat(pool[page * layout.page_elements() + layout.RowOffset(layer, kv, slot) + i]);
  };
  for (int32_t e = 0; e < 3; ++e)
    for (int32_t layer = 0; layer < layout.num_layers; ++layer)
      for (int32_t kv = 0; kv < 2; ++kv)
        for (int32_t i = 0; i < layout.kv_dim; ++i) {
          double mean = 0;
          for (int32_t j = offsets[e]; j < offsets[e + 1]; ++j)
            mean += at(initial, src_pages[j], layer, kv, src_slots[j], i);
          if (offsets[e + 1] > offsets[e]) mean /= offsets[e + 1] - offsets[e];
          // fp32 accumulation of a few bf16 values, then one bf16 rounding.
          ASSERT_NEAR(at(got, dst_pages[e], layer, kv, dst_slots[e], i), mean,
                      kBf16Relative * std::fabs(mean) + 1e-6)
              << "entry " << e << " layer " << layer;
        }
}

TEST(CudaMemory, OutOfMemoryIsResourceExhaustedNotACrash) {
  size_t free_bytes = 0, total_bytes = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total_bytes), cudaSuccess);
  const absl::StatusOr<DeviceBuffer> buffer = DeviceBuffer::Allocate(total_bytes * 2);
  ASSERT_FALSE(buffer.ok());
  EXPECT_EQ(buffer.status().code(), absl::StatusCode::kResourceExhausted) << buffer.status();
  EXPECT_NE(buffer.status().message().find(std::to_string(total_bytes * 2)), std::string::npos)
      << buffer.status();

  // A KV pool larger than the GPU: Llama-8B-like pages (32 layers, kv_dim 1024, 16 slots).
  const memory::PageLayout layout{
      .block_size = 16, .num_layers = 32, .kv_dim = 1024, .element_bytes = 2};
  const int64_t pages = static_cast<int64_t>(total_bytes / layout.page_bytes()) * 2;
  const absl::StatusOr<KvPagePool> pool = KvPagePool::Allocate(layout, pages);
  ASSERT_FALSE(pool.ok());
  EXPECT_EQ(pool.status().code(), absl::StatusCode::kResourceExhausted) << pool.status();
  // The failure is not sticky: the device still works.
  absl::StatusOr<KvPagePool> small = KvPagePool::Allocate(layout, 4);
  ASSERT_OK(small.status());
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
}

}  // namespace
}  // namespace gistmem::cuda
