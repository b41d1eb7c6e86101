// The OpenAI chat-completions wire format, as gistmem's HTTP endpoint speaks it: parsing a
// request body, and the JSON of replies, stream chunks and errors. Pure functions, no I/O.
//
// A gistmem session is named by the x-gistmem-session header or a "session_id" field; the
// request's last message is the new turn and the earlier ones are used only when the session
// is new (system messages become its system prompt, the others are appended in order).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gistmem/v1/gistmem.pb.h"

namespace gistmem::service::openai {

struct ChatMessage {
  std::string role;  // system, developer (= system), user, assistant, tool
  std::string content;
};

struct ChatCompletionRequest {
  std::string model;
  std::vector<ChatMessage> messages;  // at least one; the last is user or tool
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  std::string session_id;      // empty: a one-off session
  v1::SamplingParams sampling;
};

// INVALID_ARGUMENT naming the field for a body that is not a valid request (missing model or
// messages, a last message that is not user or tool, n != 1, unsupported fields such as tools).
absl::StatusOr<ChatCompletionRequest> ParseChatCompletionRequest(std::string_view body);

// The system prompt of a new session (its system messages joined by blank lines) and the
// messages to append before the turn (the rest but the last).
std::string SystemPromptOf(const ChatCompletionRequest& request);
std::vector<ChatMessage> HistoryOf(const ChatCompletionRequest& request);

// "stop", "length" (and "stop" for anything else).
std::string_view FinishReasonName(v1::FinishReason reason);

// chat.completion (non-streaming reply).
std::string CompletionJson(std::string_view id, int64_t created, std::string_view model,
                           std::string_view session_id, std::string_view content,
                           v1::FinishReason finish, const v1::Usage& usage);
// One chat.completion.chunk; `role` is set in the first, `finish` in the last, `usage` in the
// usage chunk (then choices is empty).
std::string ChunkJson(std::string_view id, int64_t created, std::string_view model,
                      std::string_view session_id, std::optional<std::string_view> content,
                      bool first, std::optional<v1::FinishReason> finish,
                      const v1::Usage* usage = nullptr);
// GET /v1/models: the one model this server serves.
std::string ModelsJson(std::string_view model_id, int64_t created);

// The HTTP status and OpenAI-style error body of a status.
int HttpStatusOf(absl::StatusCode code);
std::string ErrorJson(const absl::Status& status);

}  // namespace gistmem::service::openai
