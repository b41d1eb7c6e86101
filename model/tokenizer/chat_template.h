#pragma once

#include <filesystem>
#include <span>
#include <string>

#include "model/tokenizer/tokenizer.h"

namespace gistmem::model {

enum class ChatFormat {
  kLlama3,  // <|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>
  kChatML,  // <|im_start|>role\ncontent<|im_end|>\n (Qwen)
};

struct ChatMessage {
  std::string role;
  std::string content;
};

struct ChatTemplateOptions {
  // Llama-3: written before the first message.
  std::string bos_token = "<|begin_of_text|>";
  // Llama-3: the template first published with Llama-3 appends the assistant header whether
  // or not a generation prompt is asked for.
  bool always_add_generation_prompt = false;
  // ChatML: render Qwen3's template (think blocks) instead of plain ChatML.
  bool qwen3 = false;
  // Qwen3: false is transformers' enable_thinking=False, an empty think block after the
  // generation prompt.
  bool enable_thinking = true;
};

// Renders `messages` the way transformers' apply_chat_template renders the model's Jinja
// template. Llama-3 trims each message's content; Qwen3 drops the reasoning of assistant
// messages before the last user message. Tool calls are not supported; Qwen3 renders "tool"
// messages as tool responses.
std::string RenderChat(ChatFormat format, std::span<const ChatMessage> messages,
                       bool add_generation_prompt, const ChatTemplateOptions& options = {});

// Llama-3 if the vocabulary has <|start_header_id|>, ChatML if it has <|im_start|>;
// TokenizerError otherwise.
ChatFormat DetectChatFormat(const Tokenizer& tokenizer);

// Template options read from tokenizer_config.json: bos_token, whether the template honours
// add_generation_prompt, whether it is Qwen3's. TokenizerError if the file cannot be read.
ChatTemplateOptions ReadChatTemplateOptions(const std::filesystem::path& tokenizer_config);

}  // namespace gistmem::model
