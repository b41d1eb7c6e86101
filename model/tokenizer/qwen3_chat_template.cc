// Qwen3's chat template (tokenizer_config.json of Qwen3), without tool definitions or calls.
#include "model/tokenizer/qwen3_chat_template.h"

#include "model/tokenizer/chat_text.h"

namespace gistmem::model {
namespace {

bool IsToolResponse(std::string_view content) {
  return content.starts_with("<tool_response>") && content.ends_with("</tool_response>");
}

// Index of the last user message that is not a wrapped tool response; the template only
// shows the reasoning of assistant messages after it.
size_t LastQueryIndex(std::span<const ChatMessage> messages) {
  for (size_t i = messages.size(); i-- > 0;) {
    if (messages[i].role == "user" && !IsToolResponse(messages[i].content)) return i;
  }
  return messages.size() - 1;
}

void RenderAssistant(const ChatMessage& message, bool after_last_query, bool is_last,
                     std::string& text) {
  std::string_view content = message.content;
  std::string_view reasoning;
  if (content.find("</think>") != std::string_view::npos) {
    content = chat_text::LeftStrip(chat_text::AfterLast(message.content, "</think>"), '\n');
    reasoning = chat_text::RightStrip(chat_text::BeforeFirst(message.content, "</think>"), '\n');
    reasoning = chat_text::LeftStrip(chat_text::AfterLast(reasoning, "<think>"), '\n');
  }
  text += "<|im_start|>" + message.role + "\n";
  if (after_last_query && (is_last || !reasoning.empty())) {
    text += "<think>\n";
    text += chat_text::Strip(reasoning, '\n');
    text += "\n</think>\n\n";
    text += chat_text::LeftStrip(content, '\n');
  } else {
    text += content;
  }
  text += "<|im_end|>\n";
}

}  // namespace

std::string RenderQwen3Chat(std::span<const ChatMessage> messages, bool add_generation_prompt,
                            bool enable_thinking) {
  std::string text;
  if (!messages.empty() && messages[0].role == "system") {
    text += "<|im_start|>system\n" + messages[0].content + "<|im_end|>\n";
  }
  const size_t last_query = messages.empty() ? 0 : LastQueryIndex(messages);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& message = messages[i];
    const bool is_last = i + 1 == messages.size();
    if (message.role == "user" || (message.role == "system" && i > 0)) {
      text += "<|im_start|>" + message.role + "\n" + message.content + "<|im_end|>\n";
    } else if (message.role == "assistant") {
      RenderAssistant(message, i > last_query, is_last, text);
    } else if (message.role == "tool") {
      // Consecutive tool messages share one user turn.
      if (i == 0 || messages[i - 1].role != "tool") text += "<|im_start|>user";
      text += "\n<tool_response>\n" + message.content + "\n</tool_response>";
      if (is_last || messages[i + 1].role != "tool") text += "<|im_end|>\n";
    }
  }
  if (add_generation_prompt) {
    text += "<|im_start|>assistant\n";
    if (!enable_thinking) text += "<think>\n\n</think>\n\n";
  }
  return text;
}

}  // namespace gistmem::model
