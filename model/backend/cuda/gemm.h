// y[rows, out] = x[rows, in] * W[out, in]^T (+ bias[out]) through cuBLASLt: bf16 inputs,
// fp32 accumulation, bf16 or fp32 output. W is in the checkpoint's [out, in] layout.
//
// One Gemm owns a cuBLASLt handle, a workspace and a cache of chosen algorithms per shape;
// create it once (per stream or thread) and reuse it. Thread-safety: not thread-safe; give
// each thread its own Gemm. Run() is asynchronous on `stream` and returns INTERNAL (naming the
// cuBLASLt status) when cuBLASLt refuses the shape, INVALID_ARGUMENT for negative sizes.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "model/backend/cuda/device_buffer.h"

struct cublasLtContext;

namespace gistmem::cuda {

enum class OutputType { kFloat32, kBFloat16 };

class Gemm {
 public:
  static constexpr size_t kDefaultWorkspaceBytes = 32 << 20;  // what cuBLASLt asks on Hopper
  static absl::StatusOr<std::unique_ptr<Gemm>> Create(
      size_t workspace_bytes = kDefaultWorkspaceBytes);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // x: bf16 [rows, in] row-major; w: bf16 [out, in]; bias: fp32 [out] or null; y: [rows, out]
  // of `output` type. All device pointers; y must not alias x or w. rows == 0 does nothing.
  absl::Status Run(const void* x, const void* w, const float* bias, void* y, OutputType output,
                   int64_t rows, int64_t in, int64_t out, cudaStream_t stream);

 private:
  struct Plan;
  Gemm() = default;
  absl::StatusOr<const Plan*> PlanFor(int64_t rows, int64_t in, int64_t out, OutputType output);

  static constexpr size_t kMaxPlans = 4096;
  cublasLtContext* handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<std::tuple<int64_t, int64_t, int64_t, int>, std::unique_ptr<Plan>> plans_;
};

}  // namespace gistmem::cuda
