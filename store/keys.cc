#include "store/keys.h"

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "store/absl_view.h"

namespace gistmem::store {
namespace {
constexpr size_t kSequenceBytes = 8;
}  // namespace

std::string TenantPrefix(std::string_view tenant) {
  return absl::StrCat(AbslView(tenant), "/");
}

std::string SessionKey(std::string_view tenant, std::string_view session_id) {
  return absl::StrCat(AbslView(tenant), "/", AbslView(session_id));
}

std::string SessionDataPrefix(std::string_view tenant, std::string_view session_id) {
  return absl::StrCat(AbslView(tenant), "/", AbslView(session_id), "/");
}

std::string SequencedKey(std::string_view tenant, std::string_view session_id, uint64_t sequence) {
  std::string key = SessionDataPrefix(tenant, session_id);
  for (int shift = 56; shift >= 0; shift -= 8)
    key.push_back(static_cast<char>(sequence >> shift));
  return key;
}

std::string PrefixEnd(std::string_view prefix) {
  std::string end(prefix);
  end.back() = static_cast<char>(static_cast<unsigned char>(end.back()) + 1);
  return end;
}

std::optional<uint64_t> SequenceOf(std::string_view key, std::string_view prefix) {
  if (key.size() != prefix.size() + kSequenceBytes || key.substr(0, prefix.size()) != prefix) {
    return std::nullopt;
  }
  uint64_t sequence = 0;
  for (char byte : key.substr(prefix.size())) {
    sequence = (sequence << 8) | static_cast<unsigned char>(byte);
  }
  return sequence;
}

std::string PrintableKey(std::string_view key) {
  // A sequenced key has exactly two separators before its 8-byte suffix (which may itself
  // contain a '/' byte, hence the search from the front).
  const size_t first = key.find(kKeySeparator);
  const size_t second =
      first == std::string_view::npos ? std::string_view::npos : key.find(kKeySeparator, first + 1);
  if (second != std::string_view::npos && key.size() == second + 1 + kSequenceBytes) {
    const std::string_view prefix = key.substr(0, second + 1);
    return absl::StrCat(absl::CHexEscape(AbslView(prefix)), "#", *SequenceOf(key, prefix));
  }
  return absl::CHexEscape(AbslView(key));
}

}  // namespace gistmem::store
