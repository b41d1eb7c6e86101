#include "model/backend/cpu/thread_pool.h"

#include <utility>

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

void ThreadPool::RunShare(const std::function<void(int64_t)>* body, int64_t count) {
  for (int64_t index = next_.fetch_add(1); index < count; index = next_.fetch_add(1)) {
    try {
      (*body)(index);
    } catch (...) {
      next_.store(count);  // nobody claims more
      std::lock_guard lock(mutex_);
      if (!error_) error_ = std::current_exception();
    }
  }
}

void ThreadPool::WorkerLoop() {
  uint64_t seen = 0;
  std::unique_lock lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stopping_ || generation_ != seen; });
    if (stopping_) return;
    seen = generation_;
    // A worker that wakes after its loop ended finds no index left and never calls body.
    const std::function<void(int64_t)>* body = body_;
    const int64_t count = count_;
    ++busy_;
    lock.unlock();
    RunShare(body, count);
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
  std::lock_guard caller(caller_mutex_);
  {
    std::unique_lock lock(mutex_);
    // Late workers of the previous loop must leave before next_ is reset under them.
    done_.wait(lock, [&] { return busy_ == 0; });
    body_ = &body;
    count_ = count;
    next_.store(0);
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  RunShare(&body, count);
  std::exception_ptr error;
  {
    std::unique_lock lock(mutex_);
    done_.wait(lock, [&] { return busy_ == 0; });
    error = std::exchange(error_, nullptr);
  }
  if (error) std::rethrow_exception(error);
}

}  // namespace gistmem::model
