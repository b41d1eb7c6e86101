#include "service/drain.h"

#include <spdlog/spdlog.h>

#include "absl/time/clock.h"

namespace gistmem::service {

absl::Duration DrainTurns(const Scheduler& scheduler, absl::Duration grace) {
  const absl::Time deadline = absl::Now() + grace;
  while (scheduler.jobs_in_flight() > 0 && absl::Now() < deadline)
    absl::SleepFor(absl::Milliseconds(10));
  if (scheduler.jobs_in_flight() > 0) {
    spdlog::info("{} turns still running after the grace period: cancelling them",
                 scheduler.jobs_in_flight());
  }
  return std::max(deadline - absl::Now(), absl::ZeroDuration());
}

}  // namespace gistmem::service
