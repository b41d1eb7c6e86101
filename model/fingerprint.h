// A short name for the exact weights a server runs, stored with every session and KV segment so
// that a cache computed by one model is never read by another.
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

namespace gistmem::model {

class FingerprintError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// "<model_type>-<first 16 hex digits of a SHA-256>" over config.json and every *.safetensors
// file of `model_dir` (sorted by name). Each file enters the hash as its name, a NUL byte, its
// size as 8 bytes little-endian, then its bytes, so that no two different sets of files give
// the same input. Reads every weight file once; throws FingerprintError (naming the file) when
// one cannot be read, or ConfigError when config.json cannot be parsed.
std::string ModelFingerprint(const std::filesystem::path& model_dir);

}  // namespace gistmem::model
