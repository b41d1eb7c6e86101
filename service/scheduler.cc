#include "service/scheduler.h"

#include <algorithm>
#include <numeric>
#include <utility>

#include "service/metrics.h"

namespace gistmem::service {

// A job while it runs: the rows it reads (the prompt's, then each sampled token's, gist
// tokens included), how far it got, and what it does after reading them.
struct Scheduler::Active {
  std::unique_ptr<Job> job;
  std::unique_ptr<model::Sampler> sampler;
  memory::RowPlan rows;
  int64_t rows_read = 0;
  bool reading_prompt = true;
  bool sample_after = false;  // after reading `rows`, sample again (false: the job is over)
  JobResult result;
  // This step's rows: [step_begin, step_end) of `rows`.
  int64_t step_begin = 0, step_end = 0;
  bool in_step = false;

  bool has_rows() const { return rows_read < rows.size(); }
};

Scheduler::Scheduler(model::Engine& engine, const SchedulerOptions& options)
    : engine_(engine), options_(options), thread_([this] { Run(); }) {}

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
      if (job->generate) entry->sampler = std::make_unique<model::Sampler>(job->sampling);
      entry->rows = job->memory->Plan(job->prompt);
      entry->sample_after = job->generate;
      entry->job = std::move(job);
      active.push_back(std::move(entry));
    }
    if (stopping) {
      for (std::unique_ptr<Active>& entry : active) {
        entry->result.outcome = JobResult::Outcome::kCancelled;
        Complete(*entry->job, std::move(entry->result));
      }
      return;
    }
    Step(active);
  }
}

void Scheduler::Fail(Active& entry, const absl::Status& status) {
  entry.result.outcome = JobResult::Outcome::kFailed;
  entry.result.error = std::string(status.message());
  entry.result.error_code = status.code();
  entry.rows_read = entry.rows.size();  // nothing left: it finishes at the end of the step
  entry.sample_after = false;
}

void Scheduler::Step(std::vector<std::unique_ptr<Active>>& active) {
  // Cancelled jobs leave before the step.
  std::erase_if(active, [this](std::unique_ptr<Active>& entry) {
    if (!entry->job->is_cancelled()) return false;
    entry->result.outcome = JobResult::Outcome::kCancelled;
    Complete(*entry->job, std::move(entry->result));
    return true;
  });
  if (active.empty()) return;

  // Rows of this step, oldest job first; a job that does not fit waits for the next step
  // rather than being split differently.
  std::vector<model::SequenceStep> steps;
  std::vector<std::vector<memory::SlotRef>> slots;
  std::vector<Active*> members;
  // A token request for the jobs that sample after this step (their last rows); the others
  // (mid-prompt chunks, reading a stop token, appends) only write their K/V.
  std::vector<model::TokenRequest> requests;
  std::vector<int> request_of;  // per member: index into requests, or -1
  int64_t rows_used = 0;
  for (std::unique_ptr<Active>& owned : active) {
    Active& entry = *owned;
    Job& job = *entry.job;
    entry.in_step = false;
    if (!entry.has_rows()) continue;
    // A prompt goes in chunks of a fixed size (the policy may ask for smaller ones); a gist
    // token stays in the step of the raw token before it, whose logits the next sample uses.
    const int64_t chunk =
        entry.reading_prompt
            ? std::min(options_.prefill_chunk, memory::MaxChunkTokens(job.memory->policy()))
            : entry.rows.size();
    int64_t end = std::min(entry.rows.size(), entry.rows_read + chunk);
    while (end < entry.rows.size() && entry.rows.entries[end].kind == memory::EntryKind::kGist)
      ++end;
    const int64_t rows = end - entry.rows_read;
    if (!steps.empty() && rows_used + rows > options_.max_step_tokens) continue;
    entry.in_step = true;
    absl::StatusOr<std::vector<memory::SlotRef>> reserved =
        job.memory->Reserve(entry.rows, entry.rows_read, end);
    if (!reserved.ok()) {
      Fail(entry, reserved.status());  // no room in the KV pool: this job alone fails
      continue;
    }
    entry.step_begin = entry.rows_read;
    entry.step_end = end;
    const int64_t logits_row = entry.rows.LastRawRow(entry.step_begin, end);
    auto part = [&](const auto& v) { return std::span(v).subspan(entry.step_begin, rows); };
    slots.push_back(*std::move(reserved));
    steps.push_back({.tokens = part(entry.rows.tokens),
                     .positions = part(entry.rows.positions),
                     .clocks = part(entry.rows.clocks),
                     .slots = {},
                     .kv = &job.memory->kv(),
                     .mode = model::LogitsMode::kRow,
                     .logits_row = std::max<int64_t>(logits_row - entry.step_begin, 0)});
    members.push_back(&entry);
    rows_used += rows;
    request_of.push_back(-1);
    if (end == entry.rows.size() && entry.sample_after) {
      // The penalty sees the whole stream before the token: the prompt joins the history now.
      if (entry.reading_prompt) {
        job.history.insert(job.history.end(), job.prompt.begin(), job.prompt.end());
        entry.reading_prompt = false;
      }
      // The session's draw, made where the CPU sampler made it (greedy draws none), so its
      // tokens are the same whichever engine samples.
      const double uniform = job.sampling.temperature == 0.f ? 0.0 : entry.sampler->DrawUniform();
      request_of.back() = static_cast<int>(requests.size());
      requests.push_back(
          {.params = job.sampling, .previous_tokens = job.history, .uniform = uniform});
    }
  }
  std::vector<const model::TokenRequest*> request_ptrs(steps.size(), nullptr);
  for (size_t i = 0; i < steps.size(); ++i) {
    steps[i].slots = slots[i];
    if (request_of[i] >= 0) request_ptrs[i] = &requests[request_of[i]];
  }

  absl::StatusOr<std::vector<int32_t>> outputs = steps.empty()
                                                     ? absl::StatusOr<std::vector<int32_t>>()
                                                     : engine_.ForwardSample(steps, request_ptrs);
  if (!steps.empty()) {
    metrics::ObserveForwardStep(static_cast<int64_t>(members.size()), rows_used);
    steps_.fetch_add(1);
  }
  int64_t seen = max_sequences_in_step_.load();
  const auto size = static_cast<int64_t>(members.size());
  while (size > seen && !max_sequences_in_step_.compare_exchange_weak(seen, size)) {
  }

  for (size_t i = 0; i < members.size(); ++i) {
    Active& entry = *members[i];
    Job& job = *entry.job;
    if (!outputs.ok()) {
      // The rows shared their matrix products: the whole step failed; its rows are dropped.
      job.memory->Unreserve();
      Fail(entry, outputs.status());
      continue;
    }
    if (absl::Status applied = job.memory->Applied(entry.rows, entry.step_begin, entry.step_end);
        !applied.ok()) {
      Fail(entry, applied);
      continue;
    }
    entry.rows_read = entry.step_end;
    if (entry.has_rows()) continue;
    if (entry.reading_prompt) {
      job.history.insert(job.history.end(), job.prompt.begin(), job.prompt.end());
      entry.reading_prompt = false;
    }
    if (!entry.sample_after) continue;
    const int32_t token = (*outputs)[i];
    job.history.push_back(token);
    entry.result.generated.push_back(token);
    job.on_token(token);
    entry.result.stopped = std::ranges::find(job.stop_token_ids, token) != job.stop_token_ids.end();
    const bool at_limit = static_cast<int64_t>(entry.result.generated.size()) >= job.max_new_tokens;
    // A stop token is read, so the memory covers the whole reply; a token that hits the limit
    // is left for the next turn to read (it would need logits nobody asks for yet).
    if (entry.result.stopped || !at_limit) {
      const int32_t next[] = {token};
      entry.rows = job.memory->Plan(next);
      entry.rows_read = 0;
    }
    entry.sample_after = !entry.result.stopped && !at_limit;
  }

  // Jobs with nothing left to read are done.
  std::erase_if(active, [this](std::unique_ptr<Active>& entry) {
    const bool done = entry->in_step && !entry->has_rows();
    if (done) Complete(*entry->job, std::move(entry->result));
    return done;
  });
}

}  // namespace gistmem::service
