#include "model/backend/cpu/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace gistmem::model {

void RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
             float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * dim;
    float* out_row = out + r * dim;
    // A double sum keeps long rows as accurate as torch's blocked fp32 reduction.
    double sum = 0;
    for (int64_t i = 0; i < dim; ++i)
      sum += static_cast<double>(row[i]) * row[i];
    const float mean = static_cast<float>(sum / static_cast<double>(dim));
    const float scale = 1.f / std::sqrt(mean + eps);
    for (int64_t i = 0; i < dim; ++i)
      out_row[i] = row[i] * scale * weight[i];
  }
}

void Linear(const float* x, const float* w, const float* bias, float* y, int64_t rows,
            int64_t in_dim, int64_t out_dim) {
  if (rows == 0 || out_dim == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
              static_cast<int>(out_dim), static_cast<int>(in_dim), 1.f, x, static_cast<int>(in_dim),
              w, static_cast<int>(in_dim), 0.f, y, static_cast<int>(out_dim));
  if (bias == nullptr) return;
  for (int64_t r = 0; r < rows; ++r) {
    float* y_row = y + r * out_dim;
    for (int64_t o = 0; o < out_dim; ++o)
      y_row[o] += bias[o];
  }
}

void ApplyRope(float* x, std::span<const int64_t> positions, int64_t num_heads, int64_t head_dim,
               std::span<const float> inv_freq) {
  const int64_t half = head_dim / 2;
  std::vector<float> cos_table(half), sin_table(half);
  for (size_t r = 0; r < positions.size(); ++r) {
    // torch multiplies the fp32 position by the fp32 frequency and rounds to fp32.
    const float position = static_cast<float>(positions[r]);
    for (int64_t i = 0; i < half; ++i) {
      const float angle = position * inv_freq[i];
      cos_table[i] = std::cos(angle);
      sin_table[i] = std::sin(angle);
    }
    float* row = x + static_cast<int64_t>(r) * num_heads * head_dim;
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
  if (max == -std::numeric_limits<float>::infinity()) {
    std::fill_n(values, count, 0.f);  // nothing visible: no weight anywhere
    return;
  }
  float sum = 0.f;
  for (int64_t i = 0; i < count; ++i) {
    values[i] = std::exp(values[i] - max);
    sum += values[i];
  }
  const float inverse = 1.f / sum;
  for (int64_t i = 0; i < count; ++i)
    values[i] *= inverse;
}

float Dot(const float* a, const float* b, int64_t count) {
  // Eight independent partial sums let the compiler use vector registers without
  // reassociating a single floating-point chain.
  constexpr int64_t kLanes = 8;
  float partial[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= count; i += kLanes) {
    for (int64_t lane = 0; lane < kLanes; ++lane)
      partial[lane] += a[i + lane] * b[i + lane];
  }
  float sum = 0.f;
  for (; i < count; ++i)
    sum += a[i] * b[i];
  for (float p : partial)
    sum += p;
  return sum;
}

void WeightedSum(std::span<const float> weights, std::span<const float* const> rows, int64_t dim,
                 float* out) {
  const float* const weight_rows[] = {weights.data()};
  float* const outs[] = {out};
  WeightedSums(weight_rows, rows, dim, outs);
}

void WeightedSums(std::span<const float* const> weights, std::span<const float* const> rows,
                  int64_t dim, std::span<float* const> outs) {
  // Accumulate in a local buffer the compiler may keep vectorised (an out could alias a row).
  thread_local std::vector<float> sum;
  const int64_t heads = static_cast<int64_t>(weights.size());
  sum.assign(static_cast<size_t>(heads * dim), 0.f);
  constexpr size_t kAhead = 16;  // rows are scattered over pages: fetch a few ahead
  const int64_t lines = (dim * static_cast<int64_t>(sizeof(float)) + 63) / 64;
  for (size_t j = 0; j < rows.size(); ++j) {
    if (j + kAhead < rows.size()) {
      for (int64_t line = 0; line < lines; ++line)
        __builtin_prefetch(rows[j + kAhead] + line * 16);
    }
    const float* __restrict row = rows[j];
    for (int64_t g = 0; g < heads; ++g) {
      const float weight = weights[g][j];
      float* __restrict acc = sum.data() + g * dim;
      for (int64_t d = 0; d < dim; ++d)
        acc[d] += weight * row[d];
    }
  }
  for (int64_t g = 0; g < heads; ++g)
    std::copy_n(sum.data() + g * dim, dim, outs[g]);
}

}  // namespace gistmem::model
