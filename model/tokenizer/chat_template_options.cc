#include <fstream>
#include <nlohmann/json.hpp>

#include "model/tokenizer/chat_template.h"

namespace gistmem::model {
namespace {

using nlohmann::json;

// chat_template is a string, or a list of {"name", "template"} of which "default" is used.
std::string TemplateText(const json& config) {
  const auto found = config.find("chat_template");
  if (found == config.end()) return {};
  if (found->is_string()) return found->get<std::string>();
  if (found->is_array()) {
    for (const json& entry : *found) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        return entry["template"].get<std::string>();
      }
    }
  }
  return {};
}

}  // namespace

ChatTemplateOptions ReadChatTemplateOptions(const std::filesystem::path& tokenizer_config) {
  std::ifstream file(tokenizer_config);
  if (!file) throw TokenizerError(tokenizer_config.string() + ": cannot open file");
  json config;
  try {
    config = json::parse(file);
  } catch (const json::exception& error) {
    throw TokenizerError(tokenizer_config.string() + ": not valid JSON: " + error.what());
  }
  if (!config.is_object()) throw TokenizerError(tokenizer_config.string() + ": expected an object");

  ChatTemplateOptions options;
  if (const auto bos = config.find("bos_token"); bos != config.end()) {
    if (bos->is_string()) {
      options.bos_token = bos->get<std::string>();
    } else if (bos->is_object() && bos->contains("content") && (*bos)["content"].is_string()) {
      options.bos_token = (*bos)["content"].get<std::string>();
    } else if (bos->is_null()) {
      options.bos_token.clear();
    }
  }
  const std::string text = TemplateText(config);
  options.always_add_generation_prompt =
      !text.empty() && text.find("add_generation_prompt") == std::string::npos;
  options.qwen3 = text.find("</think>") != std::string::npos;
  return options;
}

}  // namespace gistmem::model
