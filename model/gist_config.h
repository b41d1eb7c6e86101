// gist_config.json, beside config.json in a gist-trained checkpoint (gist-method.md section
// 2): the gist token and the ratios, sinks and window the model was trained for. A checkpoint
// without the file serves the training-free policies only.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <vector>

namespace gistmem::model {

struct GistConfig {
  int32_t gist_token_id = -1;
  std::vector<int64_t> ratios;  // the ratios the model was trained for
  int64_t default_ratio = 0;
  int64_t sink_tokens = 0;
  int64_t window = 0;

  // Parses and checks the file (throws ConfigError naming the key on anything wrong, e.g. a
  // gist token outside the vocabulary or a default ratio not among the trained ones).
  static GistConfig FromFile(const std::filesystem::path& gist_config_json, int64_t vocab_size);
  // The model directory's gist_config.json, or nothing when it has none.
  static std::optional<GistConfig> FromModelDir(const std::filesystem::path& model_dir,
                                                int64_t vocab_size);
};

}  // namespace gistmem::model
