#include "model/tokenizer/chat_template.h"

#include "model/tokenizer/chat_text.h"
#include "model/tokenizer/qwen3_chat_template.h"

namespace gistmem::model {
namespace {

std::string RenderLlama3(std::span<const ChatMessage> messages, bool add_generation_prompt,
                         const ChatTemplateOptions& options) {
  std::string text;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) text += options.bos_token;
    text += "<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n";
    text += chat_text::PythonStrip(messages[i].content);
    text += "<|eot_id|>";
  }
  if (add_generation_prompt || options.always_add_generation_prompt) {
    text += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  }
  return text;
}

std::string RenderPlainChatML(std::span<const ChatMessage> messages, bool add_generation_prompt) {
  std::string text;
  for (const ChatMessage& message : messages) {
    text += "<|im_start|>" + message.role + "\n" + message.content + "<|im_end|>\n";
  }
  if (add_generation_prompt) text += "<|im_start|>assistant\n";
  return text;
}

}  // namespace

std::string RenderChat(ChatFormat format, std::span<const ChatMessage> messages,
                       bool add_generation_prompt, const ChatTemplateOptions& options) {
  switch (format) {
    case ChatFormat::kLlama3:
      return RenderLlama3(messages, add_generation_prompt, options);
    case ChatFormat::kChatML:
      if (options.qwen3) {
        return RenderQwen3Chat(messages, add_generation_prompt, options.enable_thinking);
      }
      return RenderPlainChatML(messages, add_generation_prompt);
  }
  throw TokenizerError("unknown chat format");
}

ChatFormat DetectChatFormat(const Tokenizer& tokenizer) {
  if (tokenizer.TokenId("<|start_header_id|>")) return ChatFormat::kLlama3;
  if (tokenizer.TokenId("<|im_start|>")) return ChatFormat::kChatML;
  throw TokenizerError(
      "cannot tell the chat format: the vocabulary has neither <|start_header_id|> (Llama-3) "
      "nor <|im_start|> (ChatML)");
}

}  // namespace gistmem::model
