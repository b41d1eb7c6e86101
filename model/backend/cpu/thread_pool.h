// A fixed set of worker threads for data-parallel loops (attention over heads and rows).
// Matrix products are threaded by OpenBLAS itself; this pool covers the rest.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gistmem::model {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // threads in all, caller included; 0 = hardware
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs body(i) for every i in [0, count), spread over the workers and the calling thread,
  // and returns when all are done. The first exception a body throws is rethrown here (the
  // remaining indices are skipped). Concurrent callers take turns.
  void ParallelFor(int64_t count, const std::function<void(int64_t)>& body);

 private:
  void WorkerLoop();
  // Claims and runs indices of the current loop until none are left. `body` is a pointer
  // because a worker that wakes after its loop ended holds one to a finished callable,
  // which it never calls: no index is left for it.
  void RunShare(const std::function<void(int64_t)>* body, int64_t count);

  std::vector<std::thread> workers_;
  std::mutex caller_mutex_;  // one loop at a time

  std::mutex mutex_;  // guards everything below except next_
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  int64_t count_ = 0;
  std::atomic<int64_t> next_{0};
  int busy_ = 0;  // workers inside RunShare
  uint64_t generation_ = 0;
  std::exception_ptr error_;
  bool stopping_ = false;
};

}  // namespace gistmem::model
