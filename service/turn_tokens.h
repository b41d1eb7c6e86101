// Exactly which tokens each step of a conversation adds to a session's stream. Turns are
// rendered one at a time with the model's chat template and appended, so the stream after n
// turns is the template's rendering of the whole conversation and a session rebuilt from its
// transcript reads the same tokens. For Llama-3:
//
//   first turn of a session  <|begin_of_text|>[<|start_header_id|>system<|end_header_id|>\n\n
//                            {system prompt}<|eot_id|>]         (the system part when non-empty)
//   a message (Append)       <|start_header_id|>{role}<|end_header_id|>\n\n{text}<|eot_id|>
//   reply prompt (Generate)  <|start_header_id|>assistant<|end_header_id|>\n\n
//   the reply                the sampled tokens, ending with <|eot_id|> when the model stops
//   after a reply cut by max_tokens, the next message first closes it with <|eot_id|>
//
// ChatML (Qwen) is the same with <|im_start|>{role}\n{text}<|im_end|>\n and no BOS (Qwen3's
// think-block handling is not applied: messages render as plain ChatML). Text is trimmed as
// the Llama-3 template trims it.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "model/config.h"
#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/tokenizer.h"

namespace gistmem::service {

class TurnTokens {
 public:
  // Detects the chat format from the vocabulary; throws model::TokenizerError when neither
  // Llama-3 nor ChatML tokens are there.
  TurnTokens(const model::Tokenizer& tokenizer, const model::ModelConfig& config);

  // BOS and the system message (left out when the prompt is empty).
  absl::StatusOr<std::vector<int32_t>> SessionStart(std::string_view system_prompt) const;
  // One whole message. INVALID_ARGUMENT for invalid UTF-8, an unknown role, or text that
  // spells a special token (a user must not be able to forge turn boundaries).
  absl::StatusOr<std::vector<int32_t>> Message(std::string_view role, std::string_view text) const;
  // The header after which the assistant's reply is generated.
  std::vector<int32_t> ReplyPrompt() const;
  // What closes a reply that was cut off before its end-of-turn token.
  std::vector<int32_t> CloseReply() const { return {end_of_turn_id_}; }

  // Tokens that end a reply: the template's end of turn and the model's EOS ids.
  const std::vector<int32_t>& stop_token_ids() const { return stop_token_ids_; }
  model::ChatFormat format() const { return format_; }

 private:
  std::vector<int32_t> Encode(std::string_view text) const;

  const model::Tokenizer& tokenizer_;
  model::ChatFormat format_;
  model::ChatTemplateOptions options_;
  int32_t end_of_turn_id_ = 0;
  std::vector<int32_t> stop_token_ids_;
};

// "user" for an empty role; INVALID_ARGUMENT unless user, system, tool or assistant.
absl::StatusOr<std::string_view> NormalizeRole(std::string_view role);

}  // namespace gistmem::service
