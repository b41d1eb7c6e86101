#include "model/backend/cpu/thread_pool.h"

namespace gistmem::model {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::thread::hardware_concurrency());
  for (int i = 1; i < num_threads; ++i)
    workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& worker : workers_)
    worker.join();
}

// Claims indices one at a time until none are left.
void ThreadPool::RunShare() {
  std::unique_lock lock(mutex_);
  while (next_ < count_) {
    const int64_t index = next_++;
    lock.unlock();
    (*body_)(index);
    lock.lock();
  }
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    ++busy_;
    lock.unlock();
    RunShare();
    lock.lock();
    if (--busy_ == 0) done_.notify_all();
  }
}

void ThreadPool::ParallelFor(int64_t count, const std::function<void(int64_t)>& body) {
  if (count <= 0) return;
  if (workers_.empty() || count == 1) {
    for (int64_t i = 0; i < count; ++i)
      body(i);
    return;
  }
  {
    std::lock_guard lock(mutex_);
    body_ = &body;
    count_ = count;
    next_ = 0;
    ++generation_;
  }
  wake_.notify_all();
  RunShare();
  std::unique_lock lock(mutex_);
  done_.wait(lock, [&] { return busy_ == 0 && next_ >= count_; });
  body_ = nullptr;
}

}  // namespace gistmem::model
