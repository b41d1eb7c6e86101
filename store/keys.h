// Key layout of the column families (all ids validated by store/ids.h first):
//
//   sessions   : <tenant>/<session_id>                      -> SessionRecord
//   transcript : <tenant>/<session_id>/<turn_index:be64>    -> TurnRecord
//   kv         : <tenant>/<session_id>/<segment_seq:be64>   -> KvSegmentHeader + K/V bytes
//   documents  : <tenant>/<document_id>                     -> DocumentRecord + K/V bytes
//   default    : "format"                                   -> StoreFormat
//
// The tenant is part of every key so that two tenants' sessions of the same id never share
// data. Big-endian sequence numbers sort numerically, so an iterator reads turns in order.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace gistmem::store {

inline constexpr std::string_view kSessionsFamily = "sessions";
inline constexpr std::string_view kTranscriptFamily = "transcript";
inline constexpr std::string_view kKvFamily = "kv";
inline constexpr std::string_view kDocumentsFamily = "documents";
inline constexpr std::string_view kFormatKey = "format";
inline constexpr char kKeySeparator = '/';

// "<tenant>/": the prefix of one tenant's `sessions` keys.
std::string TenantPrefix(std::string_view tenant);
// "<tenant>/<session_id>": the session's `sessions` key.
std::string SessionKey(std::string_view tenant, std::string_view session_id);
// "<tenant>/<session_id>/": the prefix of the session's `transcript` and `kv` keys.
std::string SessionDataPrefix(std::string_view tenant, std::string_view session_id);
// "<tenant>/<session_id>/<sequence:be64>".
std::string SequencedKey(std::string_view tenant, std::string_view session_id, uint64_t sequence);

// The smallest key greater than every key that starts with `prefix` (whose last byte is a
// separator or id character, never 0xff).
std::string PrefixEnd(std::string_view prefix);

// The sequence number of `key` = `prefix` + be64, or nothing when `key` is not of that shape.
std::optional<uint64_t> SequenceOf(std::string_view key, std::string_view prefix);

// `key` for messages: the binary sequence suffix written as "#<decimal>", other bytes escaped.
std::string PrintableKey(std::string_view key);

}  // namespace gistmem::store
