#pragma once

#include <span>
#include <string>

#include "model/tokenizer/chat_template.h"

namespace gistmem::model {

// Qwen3's ChatML variant; see RenderChat.
std::string RenderQwen3Chat(std::span<const ChatMessage> messages, bool add_generation_prompt,
                            bool enable_thinking);

}  // namespace gistmem::model
