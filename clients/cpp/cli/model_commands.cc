#include <absl/flags/flag.h>
#include <absl/strings/numbers.h>
#include <absl/strings/str_split.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "clients/cpp/cli/commands.h"
#include "clients/cpp/cli/flags.h"
#include "memory/session_kv.h"
#include "model/device_choice.h"
#include "model/engine.h"
#include "model/generation.h"
#include "model/tokenizer/chat_template.h"
#include "model/tokenizer/incremental_decoder.h"
#include "model/tokenizer/tokenizer.h"

namespace gistmem::cli {
namespace {

std::filesystem::path ModelDir() {
  const std::string dir = absl::GetFlag(FLAGS_model);
  if (dir.empty()) throw std::invalid_argument("--model DIR is required");
  return dir;
}

std::vector<int32_t> ParseTokenList(const std::string& text) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipWhitespace())) {
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      throw std::invalid_argument("--tokens: '" + std::string(part) + "' is not a token id");
    }
    ids.push_back(id);
  }
  if (ids.empty()) throw std::invalid_argument("--tokens needs at least one id, e.g. 1,2,3");
  return ids;
}

model::SamplingParams SamplingFromFlags() {
  model::SamplingParams params;
  params.temperature = static_cast<float>(absl::GetFlag(FLAGS_temperature));
  params.top_k = absl::GetFlag(FLAGS_top_k);
  params.top_p = static_cast<float>(absl::GetFlag(FLAGS_top_p));
  params.repetition_penalty = static_cast<float>(absl::GetFlag(FLAGS_repetition_penalty));
  params.seed = absl::GetFlag(FLAGS_seed);
  if (const std::string error = params.Validate(); !error.empty()) {
    throw std::invalid_argument(error);
  }
  return params;
}

std::vector<int32_t> PromptTokens(const model::Tokenizer& tokenizer) {
  const std::string prompt = absl::GetFlag(FLAGS_prompt);
  if (prompt.empty()) throw std::invalid_argument("--prompt TEXT is required");
  if (!absl::GetFlag(FLAGS_chat)) return tokenizer.Encode(prompt);
  const model::ChatMessage turn[] = {{"user", prompt}};
  return tokenizer.Encode(model::RenderChat(model::DetectChatFormat(tokenizer), turn,
                                            /*add_generation_prompt=*/true, {}));
}

std::unique_ptr<model::Engine> LoadEngineFromFlags(const std::filesystem::path& dir) {
  std::string device = absl::GetFlag(FLAGS_device);
  if (device.empty() || device == "auto") {
    const model::DeviceChoice choice = model::DefaultDevice();
    std::fprintf(stderr, "--device auto: %s (%s)\n", choice.device.c_str(), choice.why.c_str());
    device = choice.device;
  }
  absl::StatusOr<std::unique_ptr<model::Engine>> engine =
      model::LoadEngine(dir, {.device = device, .num_threads = absl::GetFlag(FLAGS_threads)});
  if (!engine.ok()) throw std::runtime_error(std::string(engine.status().message()));
  return *std::move(engine);
}

template <typename T>
T OrThrow(absl::StatusOr<T> value) {
  if (!value.ok()) throw std::runtime_error(std::string(value.status().message()));
  return *std::move(value);
}

const char* FinishReasonName(model::FinishReason reason) {
  switch (reason) {
    case model::FinishReason::kStopToken:
      return "stop";
    case model::FinishReason::kLength:
      return "length";
    case model::FinishReason::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

}  // namespace

int RunLogits() {
  const std::unique_ptr<model::Engine> engine = LoadEngineFromFlags(ModelDir());
  const std::vector<int32_t> tokens = ParseTokenList(absl::GetFlag(FLAGS_tokens));
  std::vector<int64_t> positions(tokens.size());
  std::iota(positions.begin(), positions.end(), 0);
  memory::SessionKv kv(engine->kv_pool());
  const std::vector<float> logits =
      OrThrow(model::ForwardPlain(*engine, kv, tokens, positions, model::LogitsMode::kAll));
  const size_t vocab = static_cast<size_t>(engine->config().vocab_size);
  nlohmann::json rows = nlohmann::json::array();
  for (size_t row = 0; row < tokens.size(); ++row) {
    rows.push_back(
        std::vector<float>(logits.begin() + row * vocab, logits.begin() + (row + 1) * vocab));
  }
  std::printf("%s\n", nlohmann::json{{"logits", rows}}.dump().c_str());
  return 0;
}

int RunGenerate() {
  const std::filesystem::path dir = ModelDir();
  const std::unique_ptr<model::Engine> engine = LoadEngineFromFlags(dir);
  const std::string tokenizer_path = absl::GetFlag(FLAGS_tokenizer).empty()
                                         ? (dir / "tokenizer.json").string()
                                         : absl::GetFlag(FLAGS_tokenizer);
  const model::Tokenizer tokenizer = model::Tokenizer::FromFile(tokenizer_path);

  model::GenerationOptions options;
  options.max_new_tokens = absl::GetFlag(FLAGS_max_tokens);
  options.sampling = SamplingFromFlags();
  for (int64_t id : engine->config().eos_token_ids)
    options.stop_token_ids.push_back(int32_t(id));

  const bool json = absl::GetFlag(FLAGS_json);
  const std::vector<int32_t> prompt = PromptTokens(tokenizer);
  model::IncrementalDecoder decoder(tokenizer);
  std::vector<int32_t> generated;
  std::string text;
  memory::SessionKv kv(engine->kv_pool());
  const model::FinishReason reason =
      OrThrow(model::Generate(*engine, kv, prompt, options, [&](int32_t token) {
        generated.push_back(token);
        const std::string piece = decoder.Push(token);
        text += piece;
        if (!json) {
          std::fwrite(piece.data(), 1, piece.size(), stdout);
          std::fflush(stdout);  // stream: show each piece as soon as it is whole UTF-8
        }
        return true;
      }));
  const std::string rest = decoder.Flush();
  text += rest;
  if (json) {
    std::printf("%s\n", nlohmann::json{{"prompt_tokens", prompt.size()},
                                       {"ids", generated},
                                       {"text", text},
                                       {"finish_reason", FinishReasonName(reason)}}
                            .dump()
                            .c_str());
  } else {
    std::printf("%s\n", rest.c_str());
  }
  return 0;
}

}  // namespace gistmem::cli
