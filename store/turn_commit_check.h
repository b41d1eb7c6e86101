// Whether a TurnCommit follows the session as stored: checked before anything is written, so a
// commit that was already applied (a retry) or that skips a turn cannot damage the session.
#pragma once

#include "absl/status/status.h"
#include "store/store.h"

namespace gistmem::store {

// FAILED_PRECONDITION saying what does not follow `stored`; INVALID_ARGUMENT when the commit
// contradicts itself.
absl::Status CheckTurnCommit(const SessionRecord& stored, const TurnCommit& commit);

}  // namespace gistmem::store
