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

// A ListSessions request made concrete, the same for every Store: page_size <= 0 means
// kDefaultPageSize and a larger one than kMaxPageSize is clamped (store/store.h); after_id is
// the id the page starts after (empty: from the first session). INVALID_ARGUMENT for a
// malformed token.
struct PageRequest {
  int page_size = 0;
  std::string after_id;
};
absl::StatusOr<PageRequest> ParsePageRequest(int page_size, std::string_view page_token);

}  // namespace gistmem::store
