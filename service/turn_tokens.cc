#include "service/turn_tokens.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "model/tokenizer/tokenizer_error.h"
#include "model/tokenizer/utf8.h"

namespace gistmem::service {
namespace {

int32_t RequireToken(const model::Tokenizer& tokenizer, std::string_view text) {
  const std::optional<int32_t> id = tokenizer.TokenId(text);
  if (!id)
    throw model::TokenizerError(
        absl::StrCat("the vocabulary has no ", std::string(text), " token"));
  return *id;
}

}  // namespace

absl::StatusOr<std::string_view> NormalizeRole(std::string_view role) {
  if (role.empty()) return std::string_view("user");
  for (std::string_view known : {"user", "system", "tool", "assistant"}) {
    if (role == known) return known;
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown role \"", std::string(role),
                                                 "\"; one of user, system, tool, assistant"));
}

TurnTokens::TurnTokens(const model::Tokenizer& tokenizer, const model::ModelConfig& config)
    : tokenizer_(tokenizer), format_(model::DetectChatFormat(tokenizer)) {
  // Each message is rendered on its own, so the template must not add a reply header to it.
  options_.always_add_generation_prompt = false;
  options_.qwen3 = false;
  end_of_turn_id_ =
      RequireToken(tokenizer, format_ == model::ChatFormat::kLlama3 ? "<|eot_id|>" : "<|im_end|>");
  if (format_ == model::ChatFormat::kLlama3) RequireToken(tokenizer, options_.bos_token);
  stop_token_ids_.push_back(end_of_turn_id_);
  for (int64_t eos : config.eos_token_ids) {
    const auto id = static_cast<int32_t>(eos);
    if (std::ranges::find(stop_token_ids_, id) == stop_token_ids_.end()) {
      stop_token_ids_.push_back(id);
    }
  }
}

std::vector<int32_t> TurnTokens::Encode(std::string_view text) const {
  return tokenizer_.Encode(text);
}

absl::StatusOr<std::vector<int32_t>> TurnTokens::SessionStart(
    std::string_view system_prompt) const {
  std::string text;
  if (!system_prompt.empty()) {
    absl::StatusOr<std::vector<int32_t>> system = Message("system", system_prompt);
    if (!system.ok()) return system.status();
    std::vector<int32_t> tokens;
    if (format_ == model::ChatFormat::kLlama3) tokens = Encode(options_.bos_token);
    tokens.insert(tokens.end(), system->begin(), system->end());
    return tokens;
  }
  if (format_ == model::ChatFormat::kLlama3) return Encode(options_.bos_token);
  return std::vector<int32_t>();
}

absl::StatusOr<std::vector<int32_t>> TurnTokens::Message(std::string_view role,
                                                         std::string_view text) const {
  if (const std::optional<size_t> bad = model::utf8::FindInvalid(text)) {
    return absl::InvalidArgumentError(
        absl::StrCat("message text is not valid UTF-8 (byte offset ", *bad, ")"));
  }
  absl::StatusOr<std::string_view> known_role = NormalizeRole(role);
  if (!known_role.ok()) return known_role.status();
  for (int32_t id : Encode(text)) {
    if (tokenizer_.IsSpecial(id)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "message text contains the special token ", std::string(tokenizer_.TokenText(id)),
          "; special tokens are written by the server's chat template only"));
    }
  }
  model::ChatTemplateOptions options = options_;
  options.bos_token.clear();  // BOS belongs to the session start only
  const model::ChatMessage message{std::string(*known_role), std::string(text)};
  return Encode(model::RenderChat(format_, std::span(&message, 1), false, options));
}

std::vector<int32_t> TurnTokens::ReplyPrompt() const {
  return Encode(model::RenderChat(format_, {}, true, options_));
}

}  // namespace gistmem::service
