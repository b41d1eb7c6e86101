// Chat templates: against transformers' apply_chat_template renderings of the real Llama-3
// and Qwen3 templates (tests/fixtures/chat_templates.json) and hand-derived expectations.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/tokenizer/chat_template.h"

namespace gistmem::model {
namespace {

using nlohmann::json;

const std::filesystem::path kRenderings =
    std::filesystem::path(GISTMEM_SOURCE_DIR) / "tests/fixtures/chat_templates.json";

// The options that the fetched tokenizer_config.json files give (tokenizer_reference_test
// checks ReadChatTemplateOptions against them).
ChatTemplateOptions FetchedLlama3Options() {
  ChatTemplateOptions options;
  options.always_add_generation_prompt = true;
  return options;
}

ChatTemplateOptions Qwen3Options(bool enable_thinking = true) {
  ChatTemplateOptions options;
  options.qwen3 = true;
  options.enable_thinking = enable_thinking;
  return options;
}

TEST(ChatTemplateTest, MatchesTransformersRenderings) {
  if (!std::filesystem::exists(kRenderings)) GTEST_SKIP() << kRenderings << " is absent";
  std::ifstream file(kRenderings);
  const json renderings = json::parse(file);
  size_t checked = 0;
  for (const std::string family : {"llama3", "qwen3"}) {
    for (const json& row : renderings.at(family)) {
      std::vector<ChatMessage> messages;
      for (const json& message : row.at("messages")) {
        messages.push_back({message.at("role"), message.at("content")});
      }
      const bool add_generation_prompt = row.at("add_generation_prompt");
      const json& thinking = row.at("enable_thinking");
      const ChatTemplateOptions options =
          family == "llama3" ? FetchedLlama3Options()
                             : Qwen3Options(thinking.is_null() || thinking.get<bool>());
      const ChatFormat format = family == "llama3" ? ChatFormat::kLlama3 : ChatFormat::kChatML;
      EXPECT_EQ(RenderChat(format, messages, add_generation_prompt, options),
                row.at("text").get<std::string>())
          << family << ": " << row.dump();
      ++checked;
    }
  }
  EXPECT_GT(checked, 10u);
}

TEST(ChatTemplateTest, Llama3TrimsContentAndPutsBosFirst) {
  const std::vector<ChatMessage> messages = {{"system", " Be kind.\n"},
                                             {"user", "\t Hi there \u3000\n"}};
  const std::string body =
      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe kind.<|eot_id|>"
      "<|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>";
  EXPECT_EQ(RenderChat(ChatFormat::kLlama3, messages, false), body);
  EXPECT_EQ(RenderChat(ChatFormat::kLlama3, messages, true),
            body + "<|start_header_id|>assistant<|end_header_id|>\n\n");
  // The first published Llama-3 template always ends with the assistant header.
  EXPECT_EQ(RenderChat(ChatFormat::kLlama3, messages, false, FetchedLlama3Options()),
            body + "<|start_header_id|>assistant<|end_header_id|>\n\n");
  ChatTemplateOptions custom_bos;
  custom_bos.bos_token = "<s>";
  EXPECT_EQ(
      RenderChat(ChatFormat::kLlama3, std::vector<ChatMessage>{{"user", "x"}}, false, custom_bos),
      "<s><|start_header_id|>user<|end_header_id|>\n\nx<|eot_id|>");
}

TEST(ChatTemplateTest, PlainChatML) {
  const std::vector<ChatMessage> messages = {
      {"system", "S"}, {"user", " u \n"}, {"assistant", "a"}};
  const std::string body =
      "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n u \n<|im_end|>\n"
      "<|im_start|>assistant\na<|im_end|>\n";
  EXPECT_EQ(RenderChat(ChatFormat::kChatML, messages, false), body);
  EXPECT_EQ(RenderChat(ChatFormat::kChatML, messages, true), body + "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, Qwen3GenerationPromptWithThinkingOff) {
  const std::vector<ChatMessage> messages = {{"user", "Hello!"}};
  EXPECT_EQ(RenderChat(ChatFormat::kChatML, messages, true, Qwen3Options()),
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(RenderChat(ChatFormat::kChatML, messages, true, Qwen3Options(false)),
            "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n");
  EXPECT_EQ(RenderChat(ChatFormat::kChatML, messages, false, Qwen3Options(false)),
            "<|im_start|>user\nHello!<|im_end|>\n");
}

TEST(ChatTemplateTest, Qwen3DropsReasoningBeforeTheLastQuery) {
  const std::vector<ChatMessage> messages = {
      {"system", "Sys"},
      {"user", "Q1"},
      {"assistant", "<think>\nplan one\n</think>\n\nA1"},
      {"user", "Q2"},
      {"assistant", "<think>\n\nplan two\n\n</think>\n\n\nA2"},
  };
  EXPECT_EQ(RenderChat(ChatFormat::kChatML, messages, false, Qwen3Options()),
            "<|im_start|>system\nSys<|im_end|>\n"
            "<|im_start|>user\nQ1<|im_end|>\n"
            "<|im_start|>assistant\nA1<|im_end|>\n"
            "<|im_start|>user\nQ2<|im_end|>\n"
            "<|im_start|>assistant\n<think>\nplan two\n</think>\n\nA2<|im_end|>\n");
}

TEST(ChatTemplateTest, Qwen3LastAssistantGetsAnEmptyThinkBlock) {
  const std::vector<ChatMessage> messages = {{"user", "Q"}, {"assistant", "\nA"}};
  EXPECT_EQ(RenderChat(ChatFormat::kChatML, messages, false, Qwen3Options()),
            "<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\nA"
            "<|im_end|>\n");
}

TEST(ChatTemplateTest, Qwen3GroupsToolResponsesIntoOneUserTurn) {
  const std::vector<ChatMessage> messages = {
      {"user", "Weather?"}, {"assistant", "Calling."},      {"tool", "sunny"},
      {"tool", "warm"},     {"system", "Late system note"},
  };
  EXPECT_EQ(RenderChat(ChatFormat::kChatML, messages, true, Qwen3Options()),
            "<|im_start|>user\nWeather?<|im_end|>\n"
            "<|im_start|>assistant\nCalling.<|im_end|>\n"
            "<|im_start|>user\n<tool_response>\nsunny\n</tool_response>"
            "\n<tool_response>\nwarm\n</tool_response><|im_end|>\n"
            "<|im_start|>system\nLate system note<|im_end|>\n"
            "<|im_start|>assistant\n");
}

}  // namespace
}  // namespace gistmem::model
