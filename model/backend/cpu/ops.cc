#include "model/backend/cpu/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace gistmem::model {

void RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
             float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * dim;
    float* out_row = out + r * dim;
    float sum = 0.f;
    for (int64_t i = 0; i < dim; ++i)
      sum += row[i] * row[i];
    const float scale = 1.f / std::sqrt(sum / static_cast<float>(dim) + eps);
    for (int64_t i = 0; i < dim; ++i)
      out_row[i] = row[i] * scale * weight[i];
  }
}

void Linear(const float* x, const float* w, const float* bias, float* y, int64_t rows,
            int64_t in_dim, int64_t out_dim) {
  if (rows == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
              static_cast<int>(out_dim), static_cast<int>(in_dim), 1.f, x, static_cast<int>(in_dim),
              w, static_cast<int>(in_dim), 0.f, y, static_cast<int>(out_dim));
  if (bias == nullptr) return;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t o = 0; o < out_dim; ++o)
      y[r * out_dim + o] += bias[o];
  }
}

void ApplyRope(float* x, std::span<const int64_t> positions, int64_t num_heads, int64_t head_dim,
               std::span<const float> inv_freq) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_table(half), sin_table(half);
  for (size_t r = 0; r < positions.size(); ++r) {
    // fp32 angle, as transformers computes position * inv_freq.
    const float position = static_cast<float>(positions[r]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = position * inv_freq[i];
      cos_table[i] = std::cos(angle);
      sin_table[i] = std::sin(angle);
    }
    float* row = x + r * num_heads * head_dim;
    for (int64_t h = 0; h < num_heads; ++h) {
      float* head = row + h * head_dim;
      for (int64_t i = 0; i < half; ++i) {
        const float a = head[i], b = head[i + half];
        head[i] = a * cos_table[i] - b * sin_table[i];
        head[i + half] = b * cos_table[i] + a * sin_table[i];
      }
    }
  }
}

void SiluMul(float* gate, const float* up, int64_t count) {
  for (int64_t i = 0; i < count; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.f + std::exp(-g)) * up[i];
  }
}

void Softmax(float* values, int64_t count) {
  if (count == 0) return;
  const float max = *std::max_element(values, values + count);
  float sum = 0.f;
  for (int64_t i = 0; i < count; ++i) {
    values[i] = std::exp(values[i] - max);
    sum += values[i];
  }
  for (int64_t i = 0; i < count; ++i)
    values[i] /= sum;
}

}  // namespace gistmem::model
