#include "model/backend/cuda/gemm.h"

#include <cublasLt.h>

#include <string>

#include "model/backend/cuda/kernels.h"

namespace gistmem::cuda {
namespace {

absl::Status LtStatus(cublasStatus_t status, const char* what) {
  if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
  const std::string message = std::string(what) + " failed: " + cublasLtGetStatusName(status) +
                              " (" + cublasLtGetStatusString(status) + ")";
  if (status == CUBLAS_STATUS_ALLOC_FAILED) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

#define GISTMEM_LT_RETURN_IF_ERROR(expr)                 \
  do {                                                   \
    ::absl::Status lt_status_ = LtStatus((expr), #expr); \
    if (!lt_status_.ok()) return lt_status_;             \
  } while (false)

}  // namespace

// The descriptors and the algorithm cuBLASLt chose for one shape. cuBLASLt is column-major:
// row-major y[rows, out] is column-major y'[out, rows] = W'[out, in] * x'[in, rows], where the
// row-major W[out, in] read column-major is W^T (so transpose A) and row-major x is x' as is.
struct Gemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

absl::StatusOr<std::unique_ptr<Gemm>> Gemm::Create(size_t workspace_bytes) {
  std::unique_ptr<Gemm> gemm(new Gemm());
  GISTMEM_LT_RETURN_IF_ERROR(cublasLtCreate(&gemm->handle_));
  absl::StatusOr<DeviceBuffer> workspace = DeviceBuffer::Allocate(workspace_bytes);
  if (!workspace.ok()) return workspace.status();
  gemm->workspace_ = std::move(*workspace);
  return gemm;
}

Gemm::~Gemm() {
  plans_.clear();
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

absl::StatusOr<const Gemm::Plan*> Gemm::PlanFor(int64_t rows, int64_t in, int64_t out,
                                                OutputType output) {
  const auto key = std::make_tuple(rows, in, out, static_cast<int>(output));
  if (auto it = plans_.find(key); it != plans_.end()) return it->second.get();
  // Row counts vary step by step; a bounded cache keeps a long-running server's memory flat
  // (a heuristic query costs tens of microseconds when a shape comes back).
  if (plans_.size() >= kMaxPlans) plans_.clear();
  auto plan = std::make_unique<Plan>();
  GISTMEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
  GISTMEM_LT_RETURN_IF_ERROR(cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA,
                                                            &transpose, sizeof(transpose)));
  GISTMEM_LT_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof(none)));
  const cudaDataType_t out_type = output == OutputType::kFloat32 ? CUDA_R_32F : CUDA_R_16BF;
  // A = W as stored: column-major [in, out] with ld in; B = x: column-major [in, rows].
  GISTMEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, in, out, in));
  GISTMEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, in, rows, in));
  GISTMEM_LT_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->c, out_type, out, rows, out));

  cublasLtMatmulPreference_t preference = nullptr;
  GISTMEM_LT_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&preference));
  const size_t workspace_bytes = workspace_.bytes();
  cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                       &workspace_bytes, sizeof(workspace_bytes));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t heuristic = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan->op, plan->a, plan->b, plan->c, plan->c, preference, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  GISTMEM_LT_RETURN_IF_ERROR(heuristic);
  if (found == 0) {
    return absl::InternalError("cuBLASLt has no algorithm for rows=" + std::to_string(rows) +
                               " in=" + std::to_string(in) + " out=" + std::to_string(out));
  }
  plan->algo = result.algo;
  const Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

absl::Status Gemm::Run(const void* x, const void* w, const float* bias, void* y, OutputType output,
                       int64_t rows, int64_t in, int64_t out, cudaStream_t stream) {
  if (rows < 0 || in <= 0 || out <= 0) {
    return absl::InvalidArgumentError("gemm: bad shape rows=" + std::to_string(rows) +
                                      " in=" + std::to_string(in) + " out=" + std::to_string(out));
  }
  if (rows == 0) return absl::OkStatus();
  absl::StatusOr<const Plan*> plan = PlanFor(rows, in, out, output);
  if (!plan.ok()) return plan.status();
  const float alpha = 1.f, beta = 0.f;
  GISTMEM_LT_RETURN_IF_ERROR(cublasLtMatmul(
      handle_, (*plan)->op, &alpha, w, (*plan)->a, x, (*plan)->b, &beta, y, (*plan)->c, y,
      (*plan)->c, &(*plan)->algo, workspace_.get(), workspace_.bytes(), stream));
  if (bias == nullptr) return absl::OkStatus();
  return output == OutputType::kFloat32
             ? AddBias(static_cast<float*>(y), bias, rows, out, out, stream)
             : AddBiasBf16(y, bias, rows, out, stream);
}

}  // namespace gistmem::cuda
