// ListSessions page tokens: the last session id of the previous page, hex-encoded so that
// clients treat it as opaque.
#pragma once

#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace gistmem::store {

std::string EncodePageToken(std::string_view last_session_id);

// The session id a page token continues after; INVALID_ARGUMENT for anything EncodePageToken
// cannot have made.
absl::StatusOr<std::string> DecodePageToken(std::string_view token);

}  // namespace gistmem::store
