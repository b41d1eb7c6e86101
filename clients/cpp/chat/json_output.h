// The JSON objects gistmem-chat prints with --json and --stats (documented in --help).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "clients/cpp/chat/chat_stream.h"
#include "gistmem/v1/gistmem.pb.h"

namespace gistmem::chat {

// "stop", "length", "cancelled" or "unspecified".
std::string FinishReasonName(v1::FinishReason reason);

nlohmann::json UsageJson(const v1::Usage& usage);
nlohmann::json TurnJson(const TurnResult& turn);
nlohmann::json AppendJson(const std::string& session_id, const v1::Usage& usage);
// Every SessionStats field under its proto name, numbers as JSON numbers.
nlohmann::json StatsJson(const v1::SessionStats& stats);

}  // namespace gistmem::chat
