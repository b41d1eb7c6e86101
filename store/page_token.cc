#include "store/page_token.h"

#include <algorithm>
#include <cctype>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "store/absl_view.h"
#include "store/ids.h"
#include "store/store.h"

namespace gistmem::store {

std::string EncodePageToken(std::string_view last_session_id) {
  return absl::BytesToHexString(AbslView(last_session_id));
}

absl::StatusOr<std::string> DecodePageToken(std::string_view token) {
  bool is_hex = token.size() % 2 == 0;
  for (char c : token)
    is_hex = is_hex && std::isxdigit(static_cast<unsigned char>(c));
  if (is_hex) {
    std::string session_id = absl::HexStringToBytes(AbslView(token));
    if (IsValidId(session_id)) return session_id;
  }
  return absl::InvalidArgumentError("invalid page token");
}

absl::StatusOr<PageRequest> ParsePageRequest(int page_size, std::string_view page_token) {
  PageRequest request;
  request.page_size = page_size <= 0 ? kDefaultPageSize : std::min(page_size, kMaxPageSize);
  if (!page_token.empty()) {
    absl::StatusOr<std::string> last_id = DecodePageToken(page_token);
    if (!last_id.ok()) return last_id.status();
    request.after_id = *std::move(last_id);
  }
  return request;
}

}  // namespace gistmem::store
