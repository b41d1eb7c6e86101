#include "model/backend/cuda/bf16.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace gistmem::cuda {

uint16_t FloatToBf16(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  if (std::isnan(value)) return static_cast<uint16_t>((bits >> 16) | 0x40);  // quiet NaN
  const uint32_t rounding = 0x7fff + ((bits >> 16) & 1);
  return static_cast<uint16_t>((bits + rounding) >> 16);
}

float Bf16ToFloat(uint16_t bits) {
  return std::bit_cast<float>(static_cast<uint32_t>(bits) << 16);
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // subnormal
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), static_cast<int>(exponent) - 25);
  }
  return sign ? -magnitude : magnitude;
}

void AppendAsBf16(const model::TensorView& tensor, std::vector<uint16_t>& out) {
  const int64_t count = tensor.numel();
  const std::byte* bytes = tensor.bytes.data();
  out.reserve(out.size() + count);
  for (int64_t i = 0; i < count; ++i) {
    uint16_t half_bits;
    float value;
    switch (tensor.dtype) {
      case model::DType::kBF16:
        std::memcpy(&half_bits, bytes + 2 * i, 2);
        out.push_back(half_bits);
        continue;
      case model::DType::kF16:
        std::memcpy(&half_bits, bytes + 2 * i, 2);
        value = HalfToFloat(half_bits);
        break;
      case model::DType::kF32:
      default:
        std::memcpy(&value, bytes + 4 * i, 4);
        break;
    }
    out.push_back(FloatToBf16(value));
  }
}

std::vector<uint16_t> ToBf16(std::span<const float> values) {
  std::vector<uint16_t> out(values.size());
  for (size_t i = 0; i < values.size(); ++i)
    out[i] = FloatToBf16(values[i]);
  return out;
}

absl::StatusOr<DeviceBuffer> UploadAsBf16(std::span<const model::TensorView* const> tensors) {
  std::vector<uint16_t> host;
  for (const model::TensorView* tensor : tensors)
    AppendAsBf16(*tensor, host);
  return DeviceBuffer::FromHost(std::span<const uint16_t>(host));
}

absl::StatusOr<DeviceBuffer> UploadAsBf16(std::span<const float> values) {
  const std::vector<uint16_t> host = ToBf16(values);
  return DeviceBuffer::FromHost(std::span<const uint16_t>(host));
}

}  // namespace gistmem::cuda
