#include "service/scheduler.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "service/batch_forward.h"

namespace gistmem::service {

// A job while it runs: where it is in its prompt, and the token it must read next.
struct Scheduler::Active {
  std::unique_ptr<Job> job;
  std::unique_ptr<model::Sampler> sampler;
  int64_t start_size = 0;    // cache entries when the job began
  size_t prompt_read = 0;    // prompt tokens already read
  bool has_pending = false;  // a sampled token waits to be read
  int32_t pending = 0;
  bool sample_after = false;  // after reading `pending`, sample again (false: the reply is over)
  JobResult result;
  // This step's rows.
  std::vector<int32_t> step_tokens;
  std::vector<int64_t> step_positions;
  bool in_step = false;
};

namespace {

int64_t NextPosition(const model::KvCache& cache) {
  return cache.size() == 0 ? 0 : cache.positions().back() + 1;
}

void RestoreCache(model::KvCache& cache, int64_t start_size) {
  if (cache.size() > start_size) cache.Truncate(start_size);
}

}  // namespace

Scheduler::Scheduler(model::CpuTransformer& model, const SchedulerOptions& options)
    : model_(model), options_(options), thread_([this] { Run(); }) {}

Scheduler::~Scheduler() {
  Stop();
}

void Scheduler::Complete(Job& job, JobResult result) {
  job.on_done(std::move(result));
  jobs_in_flight_.fetch_sub(1);
}

void Scheduler::Submit(std::unique_ptr<Job> job) {
  jobs_in_flight_.fetch_add(1);
  {
    std::lock_guard lock(mutex_);
    if (!stopping_) {
      incoming_.push_back(std::move(job));
      wake_.notify_one();
      return;
    }
  }
  JobResult result;
  result.outcome = JobResult::Outcome::kCancelled;
  Complete(*job, std::move(result));
}

void Scheduler::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void Scheduler::Run() {
  std::vector<std::unique_ptr<Active>> active;
  while (true) {
    std::deque<std::unique_ptr<Job>> arrived;
    bool stopping = false;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || !incoming_.empty() || !active.empty(); });
      arrived.swap(incoming_);
      stopping = stopping_;
    }
    for (std::unique_ptr<Job>& job : arrived) {
      auto entry = std::make_unique<Active>();
      entry->start_size = job->cache->size();
      if (job->generate) entry->sampler = std::make_unique<model::Sampler>(job->sampling);
      entry->job = std::move(job);
      active.push_back(std::move(entry));
    }
    if (stopping) {
      for (std::unique_ptr<Active>& entry : active) {
        RestoreCache(*entry->job->cache, entry->start_size);
        entry->result.outcome = JobResult::Outcome::kCancelled;
        Complete(*entry->job, std::move(entry->result));
      }
      return;
    }
    Step(active);
  }
}

void Scheduler::Step(std::vector<std::unique_ptr<Active>>& active) {
  // Cancelled jobs leave before the step, their caches restored.
  std::erase_if(active, [this](std::unique_ptr<Active>& entry) {
    if (!entry->job->is_cancelled()) return false;
    RestoreCache(*entry->job->cache, entry->start_size);
    entry->result.outcome = JobResult::Outcome::kCancelled;
    Complete(*entry->job, std::move(entry->result));
    return true;
  });
  if (active.empty()) return;

  // Rows of this step, oldest job first; a job that does not fit waits for the next step
  // rather than being split differently.
  std::vector<SequenceStep> steps;
  std::vector<Active*> members;
  int64_t rows_used = 0;
  for (std::unique_ptr<Active>& owned : active) {
    Active& entry = *owned;
    Job& job = *entry.job;
    entry.in_step = false;
    entry.step_tokens.clear();
    const bool reading_prompt = entry.prompt_read < job.prompt.size();
    const int64_t rows =
        reading_prompt
            ? std::min<int64_t>(options_.prefill_chunk,
                                static_cast<int64_t>(job.prompt.size() - entry.prompt_read))
            : 1;
    if (!steps.empty() && rows_used + rows > options_.max_step_tokens) continue;
    if (reading_prompt) {
      if (job.reread_last && entry.prompt_read == 0) job.cache->Truncate(entry.start_size - 1);
      entry.step_tokens.assign(job.prompt.begin() + static_cast<int64_t>(entry.prompt_read),
                               job.prompt.begin() + static_cast<int64_t>(entry.prompt_read) + rows);
    } else {
      entry.step_tokens.push_back(entry.pending);
    }
    entry.step_positions.resize(entry.step_tokens.size());
    std::iota(entry.step_positions.begin(), entry.step_positions.end(), NextPosition(*job.cache));
    steps.push_back({entry.step_tokens, entry.step_positions, job.cache});
    members.push_back(&entry);
    entry.in_step = true;
    rows_used += rows;
  }

  StepOutputs outputs = ForwardBatch(model_, steps);
  steps_.fetch_add(1);
  int64_t seen = max_sequences_in_step_.load();
  const auto size = static_cast<int64_t>(members.size());
  while (size > seen && !max_sequences_in_step_.compare_exchange_weak(seen, size)) {
  }

  for (size_t i = 0; i < members.size(); ++i) {
    Active& entry = *members[i];
    Job& job = *entry.job;
    if (!outputs.error.empty()) {
      // The rows shared their matrix products: the whole step failed.
      RestoreCache(*job.cache, entry.start_size);
      entry.result.outcome = JobResult::Outcome::kFailed;
      entry.result.error = outputs.error;
      entry.has_pending = false;
      entry.sample_after = false;
      entry.prompt_read = job.prompt.size();
      continue;  // finished below
    }
    bool sample = false;
    if (entry.prompt_read < job.prompt.size()) {
      entry.prompt_read += entry.step_tokens.size();
      if (entry.prompt_read < job.prompt.size()) continue;
      job.history.insert(job.history.end(), job.prompt.begin() + (job.reread_last ? 1 : 0),
                         job.prompt.end());
      sample = job.generate;
    } else {
      entry.has_pending = false;
      sample = entry.sample_after;
    }
    if (!sample) continue;
    const int32_t token = entry.sampler->Sample(outputs.last_logits[i], job.history);
    job.history.push_back(token);
    entry.result.generated.push_back(token);
    job.on_token(token);
    entry.has_pending = true;
    entry.pending = token;
    entry.result.stopped = std::ranges::find(job.stop_token_ids, token) != job.stop_token_ids.end();
    // The last token is read too, so the cache covers every token of the stream.
    entry.sample_after = !entry.result.stopped &&
                         static_cast<int64_t>(entry.result.generated.size()) < job.max_new_tokens;
  }

  // Jobs with nothing left to read are done.
  std::erase_if(active, [this](std::unique_ptr<Active>& entry) {
    const bool done =
        entry->in_step && entry->prompt_read >= entry->job->prompt.size() && !entry->has_pending;
    if (done) Complete(*entry->job, std::move(entry->result));
    return done;
  });
}

}  // namespace gistmem::service
