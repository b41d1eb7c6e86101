#include <absl/flags/flag.h>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "clients/cpp/cli/commands.h"
#include "clients/cpp/cli/flags.h"
#include "model/tokenizer/tokenizer.h"

namespace gistmem::cli {
namespace {

model::Tokenizer LoadTokenizer() {
  std::filesystem::path path = absl::GetFlag(FLAGS_tokenizer);
  if (path.empty() && !absl::GetFlag(FLAGS_model).empty()) {
    path = std::filesystem::path(absl::GetFlag(FLAGS_model)) / "tokenizer.json";
  }
  if (path.empty()) throw std::invalid_argument("--tokenizer (or --model) is required");
  return model::Tokenizer::FromFile(path);
}

std::string ReadStdin() {
  return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
}

}  // namespace

int RunTokenize() {
  const model::Tokenizer tokenizer = LoadTokenizer();
  const std::vector<int32_t> ids = tokenizer.Encode(ReadStdin());
  std::printf("%s\n", nlohmann::json{{"ids", ids}}.dump().c_str());
  return 0;
}

// Reads {"ids": [...]} (or a bare JSON array) and writes the decoded UTF-8 text.
int RunDetokenize() {
  const model::Tokenizer tokenizer = LoadTokenizer();
  const nlohmann::json input = nlohmann::json::parse(ReadStdin());
  const nlohmann::json& ids = input.is_array() ? input : input.at("ids");
  const std::string text = tokenizer.Decode(ids.get<std::vector<int32_t>>());
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace gistmem::cli
