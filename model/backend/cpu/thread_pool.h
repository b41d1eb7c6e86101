// A fixed set of worker threads for data-parallel loops (attention over heads and rows).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gistmem::model {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);  // 0 = one per hardware thread
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  // Runs body(i) for i in [0, count), spread over the workers and the calling thread;
  // returns when all are done. Not re-entrant: one ParallelFor at a time.
  void ParallelFor(int64_t count, const std::function<void(int64_t)>& body);

 private:
  void WorkerLoop();
  void RunShare();

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t)>* body_ = nullptr;
  int64_t count_ = 0;
  int64_t next_ = 0;
  int busy_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

}  // namespace gistmem::model
