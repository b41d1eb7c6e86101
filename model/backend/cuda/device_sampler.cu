#include "model/backend/cuda/device_sampler.h"

#include <math_constants.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>
#include <string>

#include "model/backend/cuda/cuda_status.h"

namespace gistmem::cuda {
namespace {

constexpr int kThreads = 512;
constexpr int32_t kBadLogit = -1;    // NaN or +inf in the row
constexpr int32_t kNoneFinite = -2;  // every logit -inf

// What the kernels need of one row (uploaded as an array).
struct RowDesc {
  double uniform;
  float temperature, top_p, penalty;
  int32_t top_k, penalty_begin, penalty_end, filtered;
};

struct ArgMax {
  float value;
  int32_t id;
};
// Larger value wins, the lower id on ties (torch.argmax, std::max_element).
struct ArgMaxOp {
  __device__ ArgMax operator()(const ArgMax& a, const ArgMax& b) const {
    if (a.value != b.value) return a.value > b.value ? a : b;
    return a.id < b.id ? a : b;
  }
};
struct SumOp {
  __device__ double operator()(double a, double b) const { return a + b; }
};
struct MaxOp {
  __device__ double operator()(double a, double b) const { return a > b ? a : b; }
};

using Reduce = cub::BlockReduce<double, kThreads>;
using ReduceArg = cub::BlockReduce<ArgMax, kThreads>;
using Scan = cub::BlockScan<double, kThreads>;

// Copies each row to `scores` (-0 made +0, so the radix sort sees the CPU's ties), checks it,
// applies the repetition penalty and writes `out`: the argmax for a greedy row, an error code
// for a bad row, 0 for a row SampleRows samples.
__global__ void PrepareRows(const float* logits, int64_t vocab, const RowDesc* rows,
                            const int32_t* penalized, float* scores, int32_t* ids, int32_t* out) {
  __shared__ ReduceArg::TempStorage arg_storage;
  const RowDesc r = rows[blockIdx.x];
  const float* in = logits + blockIdx.x * vocab;
  float* s = scores + blockIdx.x * vocab;
  int bad = 0, finite = 0;
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads) {
    const float v = in[i];
    bad |= isnan(v) || v == CUDART_INF_F;
    finite |= isfinite(v);
    s[i] = v + 0.f;
    // Only a filtered row's ids are sorted (the others' sort segments are empty): a greedy
    // step at batch 64 with Llama-3's vocabulary would otherwise write 33 MB of ids for nothing.
    if (r.filtered) ids[blockIdx.x * vocab + i] = static_cast<int32_t>(i);
  }
  bad = __syncthreads_or(bad);
  finite = __syncthreads_or(finite);
  if (bad || !finite) {
    if (threadIdx.x == 0) out[blockIdx.x] = bad ? kBadLogit : kNoneFinite;
    return;
  }
  // The host made the penalized ids distinct and in range: no two threads touch one score.
  for (int32_t j = r.penalty_begin + threadIdx.x; j < r.penalty_end; j += kThreads) {
    const float v = s[penalized[j]];
    s[penalized[j]] = (v < 0 ? v * r.penalty : v / r.penalty) + 0.f;
  }
  __syncthreads();
  if (r.temperature != 0.f) {
    if (threadIdx.x == 0) out[blockIdx.x] = 0;  // a good row: SampleRows picks its token
    return;
  }
  ArgMax best{-CUDART_INF_F, INT_MAX};
  for (int64_t i = threadIdx.x; i < vocab; i += kThreads)
    best = ArgMaxOp()(best, ArgMax{s[i], static_cast<int32_t>(i)});
  best = ReduceArg(arg_storage).Reduce(best, ArgMaxOp());
  if (threadIdx.x == 0) out[blockIdx.x] = best.id;
}

union SampleStorage {
  Reduce::TempStorage reduce;
  Scan::TempStorage scan;
};

// Sum over i < count of f(i), in double, by the whole block; every thread gets the result.
template <typename F>
__device__ double BlockSum(int64_t count, F f, SampleStorage& storage, double& shared) {
  double part = 0;
  for (int64_t i = threadIdx.x; i < count; i += kThreads)
    part += f(i);
  const double total = Reduce(storage.reduce).Reduce(part, SumOp());
  if (threadIdx.x == 0) shared = total;
  __syncthreads();
  const double result = shared;
  __syncthreads();
  return result;
}

// The first i < count whose inclusive prefix sum of f exceeds the bound `pass(sum)` says; count
// when none. The scan runs tile by tile with the running carry.
template <typename F, typename Pass>
__device__ int64_t FirstPrefixPassing(int64_t count, F f, Pass pass, SampleStorage& storage,
                                      int64_t& found) {
  if (threadIdx.x == 0) found = LLONG_MAX;
  __syncthreads();
  double carry = 0;
  for (int64_t tile = 0; tile < count; tile += kThreads) {
    const int64_t i = tile + threadIdx.x;
    const double x = i < count ? f(i) : 0.0;
    double inclusive, aggregate;
    Scan(storage.scan).InclusiveSum(x, inclusive, aggregate);
    if (i < count && pass(carry + inclusive))
      atomicMin(reinterpret_cast<unsigned long long*>(&found), static_cast<unsigned long long>(i));
    carry += aggregate;
    __syncthreads();
    if (found != LLONG_MAX) break;
  }
  const int64_t result = found == LLONG_MAX ? count : found;
  __syncthreads();
  return result;
}

// The CPU sampler's filtered softmax and inverse CDF (model/sampling.cc), one block per row.
// Filtered rows read the segmented sort's output (decreasing score, ties by increasing id);
// the others read the scores in id order.
__global__ void SampleRows(int64_t vocab, const RowDesc* rows, const float* scores,
                           const float* sorted_scores, const int32_t* sorted_ids, int32_t* out) {
  __shared__ SampleStorage storage;
  __shared__ double shared;
  __shared__ int64_t found;
  const RowDesc r = rows[blockIdx.x];
  if (r.temperature == 0.f || out[blockIdx.x] < 0) return;  // greedy, or a bad row
  const bool filtered = r.filtered != 0;
  const float* keys = (filtered ? sorted_scores : scores) + blockIdx.x * vocab;
  const int32_t* ids = filtered ? sorted_ids + blockIdx.x * vocab : nullptr;
  auto id_at = [&](int64_t i) { return ids ? ids[i] : static_cast<int32_t>(i); };

  float max = keys[0];
  if (!filtered) {
    double part = -CUDART_INF;
    for (int64_t i = threadIdx.x; i < vocab; i += kThreads)
      part = MaxOp()(part, keys[i]);
    const double m = Reduce(storage.reduce).Reduce(part, MaxOp());
    if (threadIdx.x == 0) shared = m;
    __syncthreads();
    max = static_cast<float>(shared);
    __syncthreads();
  }
  // Top-k: every token scoring at least the k-th best (the sorted prefix).
  int64_t keep = vocab;
  if (filtered && r.top_k > 0 && r.top_k < vocab) {
    const float threshold = keys[r.top_k - 1];
    keep = static_cast<int64_t>(BlockSum(
        vocab, [&](int64_t i) { return keys[i] >= threshold ? 1.0 : 0.0; }, storage, shared));
  }
  const double temperature = r.temperature;
  auto weight = [&](int64_t i) { return exp((static_cast<double>(keys[i]) - max) / temperature); };
  const double sum = BlockSum(keep, weight, storage, shared);
  auto prob = [&](int64_t i) { return weight(i) / sum; };
  if (r.top_p < 1.f) {
    const double top_p = r.top_p;
    const int64_t last = FirstPrefixPassing(
        keep, prob, [&](double mass) { return mass >= top_p; }, storage, found);
    keep = std::min(keep, last + 1);
  }
  const double target = r.uniform * BlockSum(keep, prob, storage, shared);
  const int64_t chosen = FirstPrefixPassing(
      keep, prob, [&](double cum) { return target < cum; }, storage, found);
  if (chosen < keep) {
    if (threadIdx.x == 0) out[blockIdx.x] = id_at(chosen);
    return;
  }
  // Rounding left the draw past the last sum: the last candidate with any mass.
  // `found` holds 1 + that index, 0 for none (atomicMax is unsigned).
  if (threadIdx.x == 0) found = 0;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < keep; i += kThreads) {
    if (prob(i) > 0) {
      atomicMax(reinterpret_cast<unsigned long long*>(&found),
                static_cast<unsigned long long>(i + 1));
    }
  }
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = id_at(found > 0 ? found - 1 : 0);
}

size_t AlignUp(size_t bytes) {
  return (bytes + 15) / 16 * 16;
}

}  // namespace

absl::StatusOr<std::vector<int32_t>> DeviceSampler::Sample(const float* logits, int64_t vocab,
                                                           std::span<const DeviceSampleRow> rows,
                                                           cudaStream_t stream) {
  if (rows.empty()) return std::vector<int32_t>();
  if (vocab < 1 || vocab > INT_MAX / 2 ||
      static_cast<int64_t>(rows.size()) * vocab > int64_t{INT_MAX}) {
    return absl::InvalidArgumentError("device sampling: " + std::to_string(rows.size()) +
                                      " rows of vocab " + std::to_string(vocab) +
                                      " are more than one int32-indexed batch");
  }
  const int64_t n = static_cast<int64_t>(rows.size());
  std::vector<RowDesc> descs(n);
  std::vector<int32_t> penalized;
  std::vector<int32_t> offsets(2 * n);  // segment begins, then ends (the sort's)
  if (static_cast<int64_t>(seen_.size()) != vocab) seen_.assign(vocab, 0);
  bool any_filtered = false, any_sampled = false;
  for (int64_t i = 0; i < n; ++i) {
    const model::SamplingParams& p = rows[i].params;
    if (const std::string error = p.Validate(); !error.empty()) {
      return absl::InvalidArgumentError(error);
    }
    if (p.temperature != 0.f && !(rows[i].uniform >= 0 && rows[i].uniform < 1)) {
      return absl::InvalidArgumentError("device sampling: the uniform draw must be in [0, 1)");
    }
    RowDesc& d = descs[i];
    d = {.uniform = rows[i].uniform,
         .temperature = p.temperature,
         .top_p = p.top_p,
         .penalty = p.repetition_penalty,
         .top_k = p.top_k,
         .penalty_begin = static_cast<int32_t>(penalized.size()),
         .penalty_end = 0,
         .filtered = p.temperature != 0.f && (p.top_k > 0 || p.top_p < 1.f)};
    if (p.repetition_penalty != 1.f) {
      // Each distinct id once; `seen_` is cleared again entry by entry (a long history costs
      // its length, not the vocabulary's).
      for (int32_t t : rows[i].previous_tokens) {
        if (t < 0 || t >= vocab || seen_[t]) continue;
        seen_[t] = 1;
        penalized.push_back(t);
      }
      for (int32_t j = d.penalty_begin; j < static_cast<int32_t>(penalized.size()); ++j)
        seen_[penalized[j]] = 0;
    }
    d.penalty_end = static_cast<int32_t>(penalized.size());
    offsets[i] = static_cast<int32_t>(i * vocab);
    offsets[n + i] = offsets[i] + (d.filtered ? static_cast<int32_t>(vocab) : 0);
    any_filtered = any_filtered || d.filtered;
    any_sampled = any_sampled || p.temperature != 0.f;
  }

  // One upload: row descriptors, sort offsets, penalized ids.
  const size_t descs_bytes = AlignUp(n * sizeof(RowDesc));
  const size_t offsets_bytes = AlignUp(offsets.size() * sizeof(int32_t));
  host_.resize(descs_bytes + offsets_bytes + penalized.size() * sizeof(int32_t));
  std::memcpy(host_.data(), descs.data(), n * sizeof(RowDesc));
  std::memcpy(host_.data() + descs_bytes, offsets.data(), offsets.size() * sizeof(int32_t));
  if (!penalized.empty()) {
    std::memcpy(host_.data() + descs_bytes + offsets_bytes, penalized.data(),
                penalized.size() * sizeof(int32_t));
  }
  const size_t items = static_cast<size_t>(n * vocab);
  GISTMEM_RETURN_IF_ERROR(scores_.Reserve(items * sizeof(float)));
  GISTMEM_RETURN_IF_ERROR(ids_.Reserve(items * sizeof(int32_t)));
  GISTMEM_RETURN_IF_ERROR(upload_.Reserve(host_.size()));
  GISTMEM_RETURN_IF_ERROR(out_.Reserve(n * sizeof(int32_t)));
  GISTMEM_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(upload_.get(), host_.data(), host_.size(), cudaMemcpyHostToDevice, stream));
  const auto* device_descs = upload_.as<const RowDesc>();
  const int32_t* begin_offsets =
      reinterpret_cast<const int32_t*>(upload_.as<const char>() + descs_bytes);
  const int32_t* end_offsets = begin_offsets + n;
  const int32_t* device_penalized =
      reinterpret_cast<const int32_t*>(upload_.as<const char>() + descs_bytes + offsets_bytes);
  PrepareRows<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
      logits, vocab, device_descs, device_penalized, scores_.as<float>(), ids_.as<int32_t>(),
      out_.as<int32_t>());
  GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  if (any_filtered) {
    GISTMEM_RETURN_IF_ERROR(sorted_scores_.Reserve(items * sizeof(float)));
    GISTMEM_RETURN_IF_ERROR(sorted_ids_.Reserve(items * sizeof(int32_t)));
    size_t temp_bytes = 0;
    // Radix sort is stable: equal scores keep the increasing ids they came in with.
    GISTMEM_CUDA_RETURN_IF_ERROR(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        nullptr, temp_bytes, scores_.as<float>(), sorted_scores_.as<float>(), ids_.as<int32_t>(),
        sorted_ids_.as<int32_t>(), static_cast<int>(items), static_cast<int>(n), begin_offsets,
        end_offsets, 0, 32, stream));
    GISTMEM_RETURN_IF_ERROR(temp_.Reserve(std::max<size_t>(temp_bytes, 1)));
    GISTMEM_CUDA_RETURN_IF_ERROR(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        temp_.get(), temp_bytes, scores_.as<float>(), sorted_scores_.as<float>(),
        ids_.as<int32_t>(), sorted_ids_.as<int32_t>(), static_cast<int>(items), static_cast<int>(n),
        begin_offsets, end_offsets, 0, 32, stream));
  }
  if (any_sampled) {
    SampleRows<<<static_cast<unsigned>(n), kThreads, 0, stream>>>(
        vocab, device_descs, scores_.as<float>(), sorted_scores_.as<float>(),
        sorted_ids_.as<int32_t>(), out_.as<int32_t>());
    GISTMEM_CUDA_RETURN_IF_LAUNCH_FAILED();
  }
  std::vector<int32_t> tokens(n);
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(tokens.data(), out_.get(), n * sizeof(int32_t),
                                               cudaMemcpyDeviceToHost, stream));
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream));
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] == kBadLogit) {
      return absl::InvalidArgumentError("sampling: logits contain NaN or +inf (row " +
                                        std::to_string(i) + ")");
    }
    if (tokens[i] == kNoneFinite) {
      return absl::InvalidArgumentError("sampling: no finite logit (row " + std::to_string(i) +
                                        ")");
    }
  }
  return tokens;
}

}  // namespace gistmem::cuda
