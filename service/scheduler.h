// Continuous batching: one thread runs forward steps for every session with work. Each step
// takes, oldest turn first, the next prompt chunk or the next decode token of each active job
// and runs them together through the engine (model/engine.h); jobs join and leave between
// steps.
//
// A job's rows never depend on what runs beside it: prompt chunks have a fixed size per job
// (never cut to fit a step) and each sequence keeps its own cache, and the runtime's batched
// forward gives each sequence what it would compute alone; so a session's tokens are the same
// alone or in a crowd. Each job reads through its session's memory (memory/session_memory.h):
// gist tokens are inserted where the policy says and the policy is applied after every step.
// Cancellation is checked between steps; undoing a cancelled or failed job is the caller's
// (SessionMemory::Rollback). A job whose rows find no room in the KV pool fails alone, with
// RESOURCE_EXHAUSTED.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "memory/session_memory.h"
#include "model/engine.h"
#include "model/sampling.h"
#include "service/config.h"

namespace gistmem::service {

struct JobResult {
  enum class Outcome {
    kFinished,   // the prompt was read and, for generation, a reply produced
    kCancelled,  // is_cancelled said so between steps
    kFailed,     // no room for its rows, or the forward pass failed; `error` says why
  };
  Outcome outcome = Outcome::kFinished;
  std::vector<int32_t> generated;  // sampled tokens, the stop token included when there is one
  // Ended by a stop token (read into the memory) rather than the token limit (the last
  // sampled token is then not read: the next turn reads it first).
  bool stopped = false;
  std::string error;
  absl::StatusCode error_code = absl::StatusCode::kInternal;  // for kFailed
};

struct Job {
  // The session's memory; the job owns it until on_done.
  memory::SessionMemory* memory = nullptr;
  // Raw tokens to read (never empty for a job that generates).
  std::vector<int32_t> prompt;
  // Generation; when false the job only reads the prompt.
  bool generate = false;
  model::SamplingParams sampling;
  int64_t max_new_tokens = 0;
  std::vector<int32_t> stop_token_ids;
  // Every raw token of the stream before the prompt (for the repetition penalty).
  std::vector<int32_t> history;

  // Called on the scheduler thread; they must not block.
  std::function<bool()> is_cancelled;
  std::function<void(int32_t token)> on_token;  // each sampled token, before it is read
  std::function<void(JobResult)> on_done;       // exactly once, last
};

class Scheduler {
 public:
  Scheduler(model::Engine& engine, const SchedulerOptions& options);
  // Stops: jobs still queued or running end as cancelled.
  ~Scheduler();
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Queues a job; it joins the next step.
  void Submit(std::unique_ptr<Job> job);

  // Ends every job as cancelled and joins the thread. Later Submits are cancelled at once.
  void Stop();

  // Forward steps run so far, and the most sessions one of them held (> 1 shows batching).
  int64_t steps() const { return steps_.load(); }
  int64_t max_sequences_in_step() const { return max_sequences_in_step_.load(); }
  // Jobs submitted whose on_done has not returned yet.
  int64_t jobs_in_flight() const { return jobs_in_flight_.load(); }

 private:
  struct Active;
  void Run();
  void Step(std::vector<std::unique_ptr<Active>>& active);
  void Complete(Job& job, JobResult result);
  static void Fail(Active& entry, const absl::Status& status);

  model::Engine& engine_;
  const SchedulerOptions options_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Job>> incoming_;
  bool stopping_ = false;
  std::atomic<int64_t> steps_{0};
  std::atomic<int64_t> max_sequences_in_step_{0};
  std::atomic<int64_t> jobs_in_flight_{0};
  std::thread thread_;
};

}  // namespace gistmem::service
