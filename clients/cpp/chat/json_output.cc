#include "clients/cpp/chat/json_output.h"

namespace gistmem::chat {

std::string FinishReasonName(v1::FinishReason reason) {
  switch (reason) {
    case v1::FINISH_REASON_STOP:
      return "stop";
    case v1::FINISH_REASON_LENGTH:
      return "length";
    case v1::FINISH_REASON_CANCELLED:
      return "cancelled";
    default:
      return "unspecified";
  }
}

nlohmann::json UsageJson(const v1::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens()},
          {"completion_tokens", usage.completion_tokens()},
          {"cached_tokens", usage.cached_tokens()},
          {"stream_tokens", usage.stream_tokens()}};
}

nlohmann::json TurnJson(const TurnResult& turn) {
  return {{"session_id", turn.session_id},
          {"turn_index", turn.turn_index},
          {"reply", turn.reply},
          {"finish_reason", FinishReasonName(turn.finish_reason)},
          {"usage", UsageJson(turn.usage)}};
}

nlohmann::json AppendJson(const std::string& session_id, const v1::Usage& usage) {
  return {{"session_id", session_id}, {"appended", true}, {"usage", UsageJson(usage)}};
}

nlohmann::json StatsJson(const v1::SessionStats& stats) {
  return {
      {"session_id", stats.session_id()},         {"stream_tokens", stats.stream_tokens()},
      {"raw_tokens", stats.raw_tokens()},         {"retained_entries", stats.retained_entries()},
      {"sink_entries", stats.sink_entries()},     {"gist_entries", stats.gist_entries()},
      {"pooled_entries", stats.pooled_entries()}, {"window_entries", stats.window_entries()},
      {"bytes_gpu", stats.bytes_gpu()},           {"bytes_host", stats.bytes_host()},
      {"bytes_disk", stats.bytes_disk()},         {"compression_ratio", stats.compression_ratio()}};
}

}  // namespace gistmem::chat
