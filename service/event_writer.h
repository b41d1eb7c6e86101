// Outgoing messages of a callback-API stream: gRPC allows one write in flight, events arrive
// from other threads at any time, and Finish must wait until what was queued is written.
// Reactor calls (StartWrite, Finish) are made outside the lock because gRPC may run a
// reaction inline on the calling thread.
#pragma once

#include <grpcpp/grpcpp.h>

#include <deque>
#include <mutex>
#include <optional>

namespace gistmem::service {

// `Reactor` is a ServerWriteReactor<ByteBuffer> or ServerBidiReactor<ByteBuffer, ByteBuffer>.
template <typename Reactor>
class EventWriter {
 public:
  explicit EventWriter(Reactor* reactor) : reactor_(reactor) {}

  // Queues a message; dropped once Finish was asked for or a write failed.
  void Write(grpc::ByteBuffer message) {
    {
      std::lock_guard lock(mutex_);
      if (finish_status_ || broken_) return;
      queue_.push_back(std::move(message));
      if (writing_) return;
      writing_ = true;
      current_ = std::move(queue_.front());
      queue_.pop_front();
    }
    reactor_->StartWrite(&current_);
  }

  // Ends the call with `status` once the queue is written (at once after a failed write).
  // Only the first call counts.
  void Finish(const grpc::Status& status) {
    {
      std::lock_guard lock(mutex_);
      if (finish_status_) return;
      finish_status_ = status;
      if (writing_) return;
      finished_ = true;
    }
    reactor_->Finish(status);
  }

  // The reactor's OnWriteDone.
  void OnWriteDone(bool ok) {
    grpc::Status finish;
    bool write_next = false;
    {
      std::lock_guard lock(mutex_);
      if (!ok) {
        broken_ = true;
        queue_.clear();
      }
      if (!queue_.empty()) {
        current_ = std::move(queue_.front());
        queue_.pop_front();
        write_next = true;
      } else {
        writing_ = false;
        if (!finish_status_ || finished_) return;
        finished_ = true;
        finish = *finish_status_;
      }
    }
    if (write_next) {
      reactor_->StartWrite(&current_);
    } else {
      reactor_->Finish(finish);
    }
  }

  bool finish_requested() const {
    std::lock_guard lock(mutex_);
    return finish_status_.has_value();
  }

 private:
  Reactor* reactor_;
  mutable std::mutex mutex_;
  std::deque<grpc::ByteBuffer> queue_;
  grpc::ByteBuffer current_;  // the message in flight; untouched until OnWriteDone
  bool writing_ = false;
  bool broken_ = false;
  bool finished_ = false;
  std::optional<grpc::Status> finish_status_;
};

}  // namespace gistmem::service
