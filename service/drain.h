// Draining on SIGTERM: after health turns NOT_SERVING and new calls are refused, wait for the
// turns still running (scheduler jobs) to finish, at most `grace`; health checks keep being
// answered (NOT_SERVING) meanwhile, since the gRPC server still accepts calls.
#pragma once

#include "absl/time/time.h"
#include "service/scheduler.h"

namespace gistmem::service {

// Returns what is left of `grace` once the scheduler has no job (zero when it ran out).
absl::Duration DrainTurns(const Scheduler& scheduler, absl::Duration grace);

}  // namespace gistmem::service
