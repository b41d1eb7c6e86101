#include "service/openai_protocol.h"

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"

namespace gistmem::service::openai {
namespace {

using nlohmann::json;

absl::Status Invalid(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", std::string(why)));
}

// A message's content: a string, or an array of {"type": "text", "text": ...} parts.
absl::StatusOr<std::string> ContentOf(const json& message, size_t index) {
  const std::string field = absl::StrCat("messages[", index, "].content");
  if (!message.contains("content") || message["content"].is_null()) return std::string();
  const json& content = message["content"];
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return Invalid(field, "must be a string or an array of text parts");
  std::string text;
  for (const json& part : content) {
    if (!part.is_object() || !part.contains("type") || part["type"] != "text" ||
        !part.contains("text") || !part["text"].is_string()) {
      return Invalid(field, "only text parts are supported");
    }
    text += part["text"].get<std::string>();
  }
  return text;
}

// Numbers OpenAI allows as ints or floats.
bool Number(const json& body, const char* key, double* value) {
  if (!body.contains(key) || body[key].is_null()) return false;
  if (!body[key].is_number()) return false;
  *value = body[key].get<double>();
  return true;
}

json UsageJson(const v1::Usage& usage) {
  return {{"prompt_tokens", usage.prompt_tokens()},
          {"completion_tokens", usage.completion_tokens()},
          {"total_tokens", usage.prompt_tokens() + usage.completion_tokens()},
          {"prompt_tokens_details", {{"cached_tokens", usage.cached_tokens()}}}};
}

std::string Dump(const json& value) {
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace

absl::StatusOr<ChatCompletionRequest> ParseChatCompletionRequest(std::string_view body) {
  const json parsed = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (parsed.is_discarded() || !parsed.is_object()) {
    return absl::InvalidArgumentError("the body is not a JSON object");
  }
  ChatCompletionRequest request;
  if (!parsed.contains("model") || !parsed["model"].is_string()) {
    return Invalid("model", "required (a string)");
  }
  request.model = parsed["model"].get<std::string>();
  if (!parsed.contains("messages") || !parsed["messages"].is_array() ||
      parsed["messages"].empty()) {
    return Invalid("messages", "required (a non-empty array)");
  }
  size_t index = 0;
  for (const json& message : parsed["messages"]) {
    if (!message.is_object() || !message.contains("role") || !message["role"].is_string()) {
      return Invalid(absl::StrCat("messages[", index, "].role"), "required (a string)");
    }
    ChatMessage chat;
    chat.role = message["role"].get<std::string>();
    if (chat.role == "developer") chat.role = "system";
    if (chat.role != "system" && chat.role != "user" && chat.role != "assistant" &&
        chat.role != "tool") {
      return Invalid(absl::StrCat("messages[", index, "].role"),
                     "must be system, developer, user, assistant or tool");
    }
    absl::StatusOr<std::string> content = ContentOf(message, index);
    if (!content.ok()) return content.status();
    chat.content = *std::move(content);
    request.messages.push_back(std::move(chat));
    ++index;
  }
  const ChatMessage& last = request.messages.back();
  if (last.role != "user" && last.role != "tool") {
    return Invalid("messages", "the last message must be the new turn, from user or tool");
  }
  if (last.content.empty()) return Invalid("messages", "the last message has no content");

  if (parsed.contains("stream") && !parsed["stream"].is_null()) {
    if (!parsed["stream"].is_boolean()) return Invalid("stream", "must be a boolean");
    request.stream = parsed["stream"].get<bool>();
  }
  if (parsed.contains("stream_options") && parsed["stream_options"].is_object()) {
    const json& options = parsed["stream_options"];
    request.include_usage = options.contains("include_usage") &&
                            options["include_usage"].is_boolean() &&
                            options["include_usage"].get<bool>();
  }
  if (parsed.contains("session_id") && !parsed["session_id"].is_null()) {
    if (!parsed["session_id"].is_string()) return Invalid("session_id", "must be a string");
    request.session_id = parsed["session_id"].get<std::string>();
  }
  for (const char* unsupported : {"tools", "functions", "logprobs", "stop", "response_format"}) {
    if (parsed.contains(unsupported) && !parsed[unsupported].is_null() &&
        parsed[unsupported] != false) {
      return Invalid(unsupported, "is not supported by gistmem");
    }
  }
  double value = 0;
  if (Number(parsed, "n", &value) && value != 1) return Invalid("n", "only 1 is supported");
  if (Number(parsed, "temperature", &value)) {
    request.sampling.set_temperature(static_cast<float>(value));
  }
  if (Number(parsed, "top_p", &value)) request.sampling.set_top_p(static_cast<float>(value));
  if (Number(parsed, "seed", &value)) request.sampling.set_seed(static_cast<uint64_t>(value));
  for (const char* key : {"max_tokens", "max_completion_tokens"}) {
    if (Number(parsed, key, &value)) {
      if (value < 1 || value > 1e9) return Invalid(key, "must be a positive integer");
      request.sampling.set_max_tokens(static_cast<int32_t>(value));
    }
  }
  return request;
}

std::string SystemPromptOf(const ChatCompletionRequest& request) {
  std::string prompt;
  for (const ChatMessage& message : request.messages) {
    if (message.role != "system") continue;
    if (!prompt.empty()) prompt += "\n\n";
    prompt += message.content;
  }
  return prompt;
}

std::vector<ChatMessage> HistoryOf(const ChatCompletionRequest& request) {
  std::vector<ChatMessage> history;
  for (size_t i = 0; i + 1 < request.messages.size(); ++i) {
    if (request.messages[i].role != "system" && !request.messages[i].content.empty()) {
      history.push_back(request.messages[i]);
    }
  }
  return history;
}

std::string_view FinishReasonName(v1::FinishReason reason) {
  return reason == v1::FINISH_REASON_LENGTH ? "length" : "stop";
}

std::string CompletionJson(std::string_view id, int64_t created, std::string_view model,
                           std::string_view session_id, std::string_view content,
                           v1::FinishReason finish, const v1::Usage& usage) {
  json reply = {
      {"id", id},
      {"object", "chat.completion"},
      {"created", created},
      {"model", model},
      {"session_id", session_id},
      {"choices", json::array({{{"index", 0},
                                {"message", {{"role", "assistant"}, {"content", content}}},
                                {"logprobs", nullptr},
                                {"finish_reason", FinishReasonName(finish)}}})},
      {"usage", UsageJson(usage)}};
  return Dump(reply);
}

std::string ChunkJson(std::string_view id, int64_t created, std::string_view model,
                      std::string_view session_id, std::optional<std::string_view> content,
                      bool first, std::optional<v1::FinishReason> finish, const v1::Usage* usage) {
  json chunk = {{"id", id},
                {"object", "chat.completion.chunk"},
                {"created", created},
                {"model", model},
                {"session_id", session_id}};
  if (usage != nullptr) {
    chunk["choices"] = json::array();
    chunk["usage"] = UsageJson(*usage);
    return Dump(chunk);
  }
  json delta = json::object();
  if (first) delta["role"] = "assistant";
  if (content) delta["content"] = *content;
  chunk["choices"] =
      json::array({{{"index", 0},
                    {"delta", delta},
                    {"logprobs", nullptr},
                    {"finish_reason", finish ? json(FinishReasonName(*finish)) : json(nullptr)}}});
  return Dump(chunk);
}

std::string ModelsJson(std::string_view model_id, int64_t created) {
  return Dump({{"object", "list"},
               {"data", json::array({{{"id", model_id},
                                      {"object", "model"},
                                      {"created", created},
                                      {"owned_by", "gistmem"}}})}});
}

int HttpStatusOf(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return 200;
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kOutOfRange:
      return 400;
    case absl::StatusCode::kUnauthenticated:
      return 401;
    case absl::StatusCode::kPermissionDenied:
      return 403;
    case absl::StatusCode::kNotFound:
      return 404;
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kAborted:
    case absl::StatusCode::kFailedPrecondition:
      return 409;
    case absl::StatusCode::kResourceExhausted:
      return 429;
    case absl::StatusCode::kCancelled:
      return 499;
    case absl::StatusCode::kUnimplemented:
      return 501;
    case absl::StatusCode::kUnavailable:
      return 503;
    case absl::StatusCode::kDeadlineExceeded:
      return 504;
    default:
      return 500;
  }
}

std::string ErrorJson(const absl::Status& status) {
  std::string type = "server_error";
  json code = absl::StatusCodeToString(status.code());
  switch (HttpStatusOf(status.code())) {
    case 400:
    case 404:
    case 409:
      type = "invalid_request_error";
      break;
    case 401:
      type = "authentication_error";
      code = "invalid_api_key";
      break;
    case 403:
      type = "permission_error";
      break;
    case 429:
      type = "rate_limit_error";
      code = "rate_limit_exceeded";
      break;
    default:
      break;
  }
  return Dump({{"error",
                {{"message", std::string(status.message())},
                 {"type", type},
                 {"param", nullptr},
                 {"code", code}}}});
}

}  // namespace gistmem::service::openai
