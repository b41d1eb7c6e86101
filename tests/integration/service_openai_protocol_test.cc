// The OpenAI wire format of service/openai_protocol.h: request parsing (and its refusals),
// reply and chunk JSON, and the HTTP status of each error code.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "service/openai_protocol.h"

namespace gistmem::service::openai {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

TEST(OpenAiProtocolTest, ParsesMessagesSamplingAndSession) {
  absl::StatusOr<ChatCompletionRequest> request = ParseChatCompletionRequest(R"({
    "model": "gistmem-16k", "stream": true, "stream_options": {"include_usage": true},
    "session_id": "s1", "temperature": 0.5, "top_p": 0.9, "seed": 7, "max_tokens": 12,
    "messages": [
      {"role": "system", "content": "Be brief."},
      {"role": "developer", "content": "No lists."},
      {"role": "user", "content": "Hi"},
      {"role": "assistant", "content": "Hello."},
      {"role": "user", "content": [{"type": "text", "text": "How "}, {"type": "text", "text": "are you?"}]}
    ]})");
  ASSERT_TRUE(request.ok()) << request.status();
  EXPECT_EQ(request->model, "gistmem-16k");
  EXPECT_TRUE(request->stream);
  EXPECT_TRUE(request->include_usage);
  EXPECT_EQ(request->session_id, "s1");
  EXPECT_FLOAT_EQ(request->sampling.temperature(), 0.5f);
  EXPECT_FLOAT_EQ(request->sampling.top_p(), 0.9f);
  EXPECT_EQ(request->sampling.seed(), 7u);
  EXPECT_EQ(request->sampling.max_tokens(), 12);
  ASSERT_EQ(request->messages.size(), 5u);
  EXPECT_EQ(request->messages.back().content, "How are you?");
  EXPECT_EQ(SystemPromptOf(*request), "Be brief.\n\nNo lists.");
  const std::vector<ChatMessage> history = HistoryOf(*request);
  ASSERT_EQ(history.size(), 2u);
  EXPECT_EQ(history[0].role, "user");
  EXPECT_EQ(history[1].role, "assistant");
}

TEST(OpenAiProtocolTest, RefusesWhatItCannotServe) {
  for (const char* body : {
           "not json",
           R"([1, 2])",
           R"({"messages": [{"role": "user", "content": "x"}]})",
           R"({"model": "m", "messages": []})",
           R"({"model": "m", "messages": [{"role": "user"}]})",
           R"({"model": "m", "messages": [{"role": "assistant", "content": "x"}]})",
           R"({"model": "m", "messages": [{"role": "wizard", "content": "x"}]})",
           R"({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]})",
           R"({"model": "m", "n": 2, "messages": [{"role": "user", "content": "x"}]})",
           R"({"model": "m", "tools": [{}], "messages": [{"role": "user", "content": "x"}]})",
           R"({"model": "m", "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]})",
           R"({"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]})",
       }) {
    absl::StatusOr<ChatCompletionRequest> request = ParseChatCompletionRequest(body);
    EXPECT_EQ(request.status().code(), absl::StatusCode::kInvalidArgument) << body;
  }
}

TEST(OpenAiProtocolTest, CompletionAndChunksAreOpenAiShaped) {
  v1::Usage usage;
  usage.set_prompt_tokens(10);
  usage.set_completion_tokens(3);
  usage.set_cached_tokens(40);
  const json reply = json::parse(
      CompletionJson("chatcmpl-1", 5, "m", "s1", "Hi.", v1::FINISH_REASON_LENGTH, usage));
  EXPECT_EQ(reply["object"], "chat.completion");
  EXPECT_EQ(reply["choices"][0]["message"]["content"], "Hi.");
  EXPECT_EQ(reply["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(reply["usage"]["total_tokens"], 13);
  EXPECT_EQ(reply["usage"]["prompt_tokens_details"]["cached_tokens"], 40);
  EXPECT_EQ(reply["session_id"], "s1");

  const json first = json::parse(ChunkJson("c", 5, "m", "s1", "", true, std::nullopt));
  EXPECT_EQ(first["object"], "chat.completion.chunk");
  EXPECT_EQ(first["choices"][0]["delta"]["role"], "assistant");
  EXPECT_TRUE(first["choices"][0]["finish_reason"].is_null());
  const json last =
      json::parse(ChunkJson("c", 5, "m", "s1", std::nullopt, false, v1::FINISH_REASON_STOP));
  EXPECT_EQ(last["choices"][0]["finish_reason"], "stop");
  EXPECT_FALSE(last["choices"][0]["delta"].contains("content"));
  const json tail =
      json::parse(ChunkJson("c", 5, "m", "s1", std::nullopt, false, std::nullopt, &usage));
  EXPECT_TRUE(tail["choices"].empty());
  EXPECT_EQ(tail["usage"]["completion_tokens"], 3);
  // Invalid UTF-8 from a model never breaks the JSON.
  EXPECT_NO_THROW(json::parse(ChunkJson("c", 5, "m", "s1", "\xff\xfe", false, std::nullopt)));
}

TEST(OpenAiProtocolTest, ErrorsCarryOpenAiTypesAndHttpCodes) {
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kInvalidArgument), 400);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnauthenticated), 401);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kNotFound), 404);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kAborted), 409);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kResourceExhausted), 429);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kUnavailable), 503);
  EXPECT_EQ(HttpStatusOf(absl::StatusCode::kDataLoss), 500);
  const json error = json::parse(ErrorJson(absl::UnauthenticatedError("unknown API key")));
  EXPECT_EQ(error["error"]["type"], "authentication_error");
  EXPECT_EQ(error["error"]["code"], "invalid_api_key");
  EXPECT_THAT(error["error"]["message"].get<std::string>(), HasSubstr("unknown API key"));
  const json limited = json::parse(ErrorJson(absl::ResourceExhaustedError("over rate")));
  EXPECT_EQ(limited["error"]["type"], "rate_limit_error");
}

}  // namespace
}  // namespace gistmem::service::openai
