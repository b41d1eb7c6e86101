// The CPU reference kernels (fp32). Each GPU kernel is tested against its function here.
#pragma once

#include <cstdint>
#include <span>

namespace gistmem::model {

// out = x * rsqrt(mean(x^2) + eps) * weight, per row of `dim` values. out may alias x.
void RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim, float eps);

// y[rows, out_dim] = x[rows, in_dim] * w[out_dim, in_dim]^T (+ bias), through BLAS.
// `bias` may be null. y must not alias x or w.
void Linear(const float* x, const float* w, const float* bias, float* y, int64_t rows,
            int64_t in_dim, int64_t out_dim);

// Rotates each head of each row in place by its position, in the "rotate half" layout
// transformers uses: pairs are (i, i + head_dim / 2) with angle position * inv_freq[i],
// computed in fp32 as torch does. Row r (num_heads * head_dim floats) uses positions[r].
void ApplyRope(float* x, std::span<const int64_t> positions, int64_t num_heads, int64_t head_dim,
               std::span<const float> inv_freq);

// gate[i] = silu(gate[i]) * up[i].
void SiluMul(float* gate, const float* up, int64_t count);

// In-place softmax of `count` values; -inf entries get probability 0.
void Softmax(float* values, int64_t count);

float Dot(const float* a, const float* b, int64_t count);

// out = sum_j weights[j] * rows[j][0..dim), added in j order; no rows gives zeros. With
// weights = Softmax(query . key_j * scale) this is one query head's attention over rows that
// may lie anywhere (KV pages). out may alias a row.
void WeightedSum(std::span<const float> weights, std::span<const float* const> rows, int64_t dim,
                 float* out);

// WeightedSum for several heads over the same rows (the query heads of one KV head):
// outs[g] = sum_j weights[g][j] * rows[j], each bit for bit what WeightedSum gives that head
// alone, with each row read once for all of them. weights[g] has rows.size() entries.
void WeightedSums(std::span<const float* const> weights, std::span<const float* const> rows,
                  int64_t dim, std::span<float* const> outs);

}  // namespace gistmem::model
