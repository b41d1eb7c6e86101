#include "model/gist_config.h"

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "model/config.h"

namespace gistmem::model {
namespace {

int64_t PositiveInt(const nlohmann::json& j, const char* key) {
  if (!j.contains(key) || !j[key].is_number_integer() || j[key].get<int64_t>() < 0) {
    throw ConfigError(std::string("gist_config.json: '") + key +
                      "' must be a non-negative integer");
  }
  return j[key].get<int64_t>();
}

}  // namespace

GistConfig GistConfig::FromFile(const std::filesystem::path& path, int64_t vocab_size) {
  std::ifstream in(path);
  if (!in) throw ConfigError(path.string() + ": cannot open");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ConfigError(path.string() + ": not JSON: " + e.what());
  }
  if (!j.is_object()) throw ConfigError("gist_config.json: not a JSON object");
  GistConfig c;
  c.gist_token_id = static_cast<int32_t>(PositiveInt(j, "gist_token_id"));
  if (c.gist_token_id >= vocab_size) {
    throw ConfigError("gist_config.json: 'gist_token_id' " + std::to_string(c.gist_token_id) +
                      " is outside the vocabulary of " + std::to_string(vocab_size));
  }
  if (!j.contains("ratios") || !j["ratios"].is_array() || j["ratios"].empty()) {
    throw ConfigError("gist_config.json: 'ratios' must be a non-empty list of integers");
  }
  for (const auto& r : j["ratios"]) {
    if (!r.is_number_integer() || r.get<int64_t>() < 1) {
      throw ConfigError("gist_config.json: 'ratios' must hold integers >= 1");
    }
    c.ratios.push_back(r.get<int64_t>());
  }
  c.default_ratio = PositiveInt(j, "default_ratio");
  if (std::ranges::find(c.ratios, c.default_ratio) == c.ratios.end()) {
    throw ConfigError("gist_config.json: 'default_ratio' is not among 'ratios'");
  }
  c.sink_tokens = PositiveInt(j, "sink_tokens");
  c.window = PositiveInt(j, "window");
  for (int64_t r : c.ratios) {
    if (c.window < r || c.window % r != 0) {
      throw ConfigError("gist_config.json: 'window' must be a multiple of every ratio");
    }
  }
  return c;
}

std::optional<GistConfig> GistConfig::FromModelDir(const std::filesystem::path& model_dir,
                                                   int64_t vocab_size) {
  const std::filesystem::path path = model_dir / "gist_config.json";
  if (!std::filesystem::exists(path)) return std::nullopt;
  return FromFile(path, vocab_size);
}

}  // namespace gistmem::model
