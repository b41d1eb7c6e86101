// The transformer's elementwise and row kernels on the GPU (launchers; the kernels live in
// kernels.cu, rms_norm.cu and kv_pages.cu). Each matches its CPU reference in
// model/backend/cpu/ops.h up to the stated rounding (bf16 where an output is bf16).
//
// Shapes are written [rows, width]; `stride` is the distance in elements between rows when a
// kernel reads a slice of a wider row (the fused q|k|v and gate|up products).
// Every launcher: all pointers are device memory, work is queued on `stream` (asynchronous),
// and the Status reports a launch error (INTERNAL) or a bad argument (INVALID_ARGUMENT);
// errors inside a kernel surface at the next synchronizing call. Zero rows do nothing.
// Thread-safety: launchers keep no state.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "absl/status/status.h"
#include "memory/kv_layout.h"
#include "model/backend/cuda/int32_runs.h"

namespace gistmem::cuda {

// bf16 buffers are passed as void* (host code needs no cuda_bf16.h); their element type is
// __nv_bfloat16 / the uint16_t bits of model/backend/cuda/bf16.h.

// out[r] = embedding[tokens[r]] widened to fp32.  embedding: bf16 [vocab, hidden].
// Token ids must be in [0, vocab) (the caller validates them on the host).
absl::Status EmbeddingLookup(const void* embedding, const int32_t* tokens, float* out, int64_t rows,
                             int64_t hidden, cudaStream_t stream);

// RMSNorm with fp32 input and weight: fp32 out (may alias x), or bf16 out (the next GEMM's
// input). Sum of squares in fp32 per thread, tree reduction, like rms_norm.h.
absl::Status RmsNorm(const float* x, const float* weight, float* out, int64_t rows, int64_t dim,
                     float eps, cudaStream_t stream);
absl::Status RmsNormToBf16(const float* x, const float* weight, void* out, int64_t rows,
                           int64_t dim, float eps, cudaStream_t stream);

// Fused for the forward step; each gives the same bits as the separate launches it replaces.
// x[r] += delta[r], then out[r] = RmsNormToBf16(x[r]) (the residual add and the next norm).
absl::Status AddRmsNormToBf16(float* x, const float* delta, const float* weight, void* out,
                              int64_t rows, int64_t dim, float eps, cudaStream_t stream);
// out[i] = RmsNormToBf16(x[rows[i]] + delta[rows[i]]) for i < count, x unchanged: the last
// layer's residual add, GatherRows and the final norm, for the rows whose logits are wanted.
absl::Status GatherAddRmsNormToBf16(const float* x, const float* delta, const int32_t* rows,
                                    const float* weight, void* out, int64_t count, int64_t dim,
                                    float eps, cudaStream_t stream);
// EmbeddingLookup into x, then out = RmsNormToBf16(x).
absl::Status EmbedRmsNormToBf16(const void* embedding, const int32_t* tokens, float* x,
                                const float* weight, void* out, int64_t rows, int64_t dim,
                                float eps, cudaStream_t stream);

// In place, rotate-half RoPE on `num_heads` heads of each row (starting at element 0 of the
// row; rows `stride` floats apart): angle = float(positions[r]) * inv_freq[i] in fp32, as
// ops.h ApplyRope. inv_freq: fp32 [head_dim / 2] from RopeInverseFrequencies.
absl::Status ApplyRope(float* x, int64_t stride, const int32_t* positions, int64_t rows,
                       int64_t num_heads, int64_t head_dim, const float* inv_freq,
                       cudaStream_t stream);

// y[r, i] += bias[i] for i < dim (rows `stride` apart).
absl::Status AddBias(float* y, const float* bias, int64_t rows, int64_t dim, int64_t stride,
                     cudaStream_t stream);
absl::Status AddBiasBf16(void* y, const float* bias, int64_t rows, int64_t dim,
                         cudaStream_t stream);

// out[r, i] = silu(gate_up[r, i]) * gate_up[r, inter + i], gate_up fp32 [rows, 2 * inter],
// out bf16 [rows, inter]: the fused gate|up product's SwiGLU.
absl::Status SiluMul(const float* gate_up, void* out, int64_t rows, int64_t inter,
                     cudaStream_t stream);

// x[i] += delta[i] (the residual stream).
absl::Status AddInPlace(float* x, const float* delta, int64_t count, cudaStream_t stream);

// out[i] = bf16(in[i]).
absl::Status ToBf16(const float* in, void* out, int64_t count, cudaStream_t stream);

// out[i] = x[rows[i]] for i < count: the rows whose logits come back.
absl::Status GatherRows(const float* x, const int32_t* rows, float* out, int64_t count, int64_t dim,
                        cudaStream_t stream);

// Copies every run (int32_runs.h; one block per run, destinations must not overlap) from
// `source`, the device copy of the staged values: how scattered small uploads (device KV
// mirrors) reach their places from one staged copy.
absl::Status CopyInt32Runs(const Int32Run* runs, int64_t num_runs, const int32_t* source,
                           cudaStream_t stream);

// ---- KV pages (kv_pages.cu). The pool is bf16, memory/kv_layout.h's PageLayout with
// element_bytes == 2.

// Writes row r of k and v (fp32, rows `stride` floats apart, kv_dim each) into layer `layer`
// of the pool at (pages[r], slots[r]), rounded to bf16. Distinct rows must name distinct
// (page, slot) pairs.
absl::Status WriteKv(const float* k, const float* v, int64_t stride, const int32_t* pages,
                     const int32_t* slots, int64_t rows, void* pool,
                     const memory::PageLayout& layout, int32_t layer, cudaStream_t stream);

// The fused q|k|v product's rows (qkv, `stride` floats apart: num_heads q heads, then
// num_kv_heads k heads, then v): ApplyRope on q (in place) and on k, and WriteKv of the
// rotated k and of v, in one launch with the same bits. k in qkv is left unrotated (only its
// page copy is read later).
absl::Status RopeWriteKv(float* qkv, int64_t stride, const int32_t* positions, int64_t rows,
                         int64_t num_heads, int64_t num_kv_heads, int64_t head_dim,
                         const float* inv_freq, const int32_t* pages, const int32_t* slots,
                         void* pool, const memory::PageLayout& layout, int32_t layer,
                         cudaStream_t stream);

// Pooled entries (the `pool` policy): entry e's K and V rows, in every layer, become the fp32
// mean of its sources, rounded to bf16. Sources of entry e are
// (source_pages[j], source_slots[j]) for j in [source_offsets[e], source_offsets[e + 1]);
// a destination must not be one of any entry's sources. Entries with no sources are zeroed.
absl::Status PooledMean(const int32_t* source_offsets, const int32_t* source_pages,
                        const int32_t* source_slots, const int32_t* dest_pages,
                        const int32_t* dest_slots, int64_t num_entries, void* pool,
                        const memory::PageLayout& layout, cudaStream_t stream);

}  // namespace gistmem::cuda
