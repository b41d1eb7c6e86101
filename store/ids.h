// Tenant and session ids: [A-Za-z0-9_.-], 1 to 128 bytes, not only dots (".", ".."). The key
// separator '/' is not among them, so a key's parts can always be told apart.
#pragma once

#include <cstddef>
#include <string_view>

#include "absl/status/status.h"

namespace gistmem::store {

inline constexpr size_t kMaxIdBytes = 128;

bool IsValidId(std::string_view id);

// INVALID_ARGUMENT naming `what` ("tenant", "session id") when `id` is not valid.
absl::Status ValidateId(std::string_view what, std::string_view id);

}  // namespace gistmem::store
