#include "model/backend/cuda/step_graphs.h"

#include "model/backend/cuda/cuda_status.h"

namespace gistmem::cuda {
namespace {

// Shapes seen once are remembered up to this many (decode shapes repeat; prefill chunk shapes
// mostly do not and run above the graphs' row limit anyway).
constexpr size_t kMaxSightings = 4096;

}  // namespace

StepGraphs::StepGraphs(size_t capacity) : capacity_(capacity) {}

StepGraphs::~StepGraphs() {
  Clear();
}

void StepGraphs::Clear() {
  if (!graphs_.empty()) ++stats_.cleared;
  for (auto& [key, entry] : graphs_)
    cudaGraphExecDestroy(entry.exec);
  graphs_.clear();
  seen_.clear();
  uncapturable_.clear();
}

bool StepGraphs::Capture(const Key& key, cudaStream_t stream,
                         absl::FunctionRef<absl::Status()> enqueue) {
  // Thread-local mode: only this thread's unsafe calls (none are expected) break the capture.
  if (cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const absl::Status queued = enqueue();
  cudaGraph_t graph = nullptr;
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  cudaGraphExec_t exec = nullptr;
  const bool captured = queued.ok() && ended == cudaSuccess && graph != nullptr &&
                        cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
  if (graph != nullptr) cudaGraphDestroy(graph);
  if (!captured) {
    cudaGetLastError();  // capture errors are not sticky: clear them for the eager run
    return false;
  }
  if (graphs_.size() >= capacity_) {  // the least recently used goes
    auto oldest = graphs_.begin();
    for (auto it = graphs_.begin(); it != graphs_.end(); ++it)
      if (it->second.last_used < oldest->second.last_used) oldest = it;
    cudaGraphExecDestroy(oldest->second.exec);
    graphs_.erase(oldest);
  }
  graphs_[key] = {.exec = exec, .last_used = clock_};
  return true;
}

absl::Status StepGraphs::Run(const Key& key, cudaStream_t stream,
                             absl::FunctionRef<absl::Status()> enqueue) {
  ++clock_;
  auto found = graphs_.find(key);
  bool captured = false;
  if (found == graphs_.end() && !uncapturable_.contains(key)) {
    if (!seen_.contains(key)) {
      if (seen_.size() >= kMaxSightings) seen_.clear();
      seen_.insert(key);
    } else if (Capture(key, stream, enqueue)) {
      ++stats_.captures;
      captured = true;
      found = graphs_.find(key);
    } else {
      ++stats_.failed_captures;
      uncapturable_.insert(key);
    }
  }
  if (found == graphs_.end()) {
    ++stats_.eager;
    return enqueue();
  }
  found->second.last_used = clock_;
  stats_.replays += !captured;
  GISTMEM_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(found->second.exec, stream));
  return absl::OkStatus();
}

}  // namespace gistmem::cuda
