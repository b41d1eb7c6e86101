// A fixed set of threads for work that may block on I/O (store reads, synced commits), so that
// gRPC's callback threads and the scheduler's compute thread never wait on a disk.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace gistmem::service {

class WorkerPool {
 public:
  explicit WorkerPool(int threads);
  // Runs what is queued, then joins.
  ~WorkerPool();
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Tasks start in submission order as threads free up; after Stop() a task runs on the caller.
  void Post(std::function<void()> task);

  // Lets the threads finish what is queued (including what those tasks post) and joins them.
  void Stop();

 private:
  void Run();

  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::function<void()>> tasks_;
  bool stopping_ = false;
  bool joined_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace gistmem::service
