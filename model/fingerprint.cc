#include "model/fingerprint.h"

#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <fstream>
#include <memory>
#include <vector>

#include "model/config.h"

namespace gistmem::model {
namespace {

using DigestContext = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

void Update(EVP_MD_CTX* context, const void* data, size_t size) {
  if (EVP_DigestUpdate(context, data, size) != 1) {
    throw FingerprintError("SHA-256 update failed");
  }
}

void HashFile(EVP_MD_CTX* context, const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw FingerprintError("cannot open " + path.string() + " to fingerprint the model");
  std::error_code error;
  const uint64_t size = std::filesystem::file_size(path, error);
  if (error) throw FingerprintError("cannot read the size of " + path.string());

  const std::string name = path.filename().string();
  Update(context, name.data(), name.size() + 1);  // with the terminating NUL
  std::array<unsigned char, 8> size_bytes;
  for (size_t i = 0; i < size_bytes.size(); ++i)
    size_bytes[i] = (size >> (8 * i)) & 0xff;
  Update(context, size_bytes.data(), size_bytes.size());

  std::vector<char> buffer(1 << 20);
  uint64_t total = 0;
  while (file) {
    file.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const std::streamsize got = file.gcount();
    if (got > 0) Update(context, buffer.data(), static_cast<size_t>(got));
    total += static_cast<uint64_t>(got);
  }
  if (file.bad() || total != size) {
    throw FingerprintError("failed reading " + path.string() + " to fingerprint the model");
  }
}

std::vector<std::filesystem::path> FilesToHash(const std::filesystem::path& model_dir) {
  std::vector<std::filesystem::path> weights;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(model_dir, error)) {
    if (entry.is_regular_file() && entry.path().extension() == ".safetensors") {
      weights.push_back(entry.path());
    }
  }
  if (error) throw FingerprintError("cannot list " + model_dir.string() + ": " + error.message());
  if (weights.empty()) throw FingerprintError("no .safetensors files in " + model_dir.string());
  std::ranges::sort(weights);
  std::vector<std::filesystem::path> files = {model_dir / "config.json"};
  files.insert(files.end(), weights.begin(), weights.end());
  return files;
}

}  // namespace

std::string ModelFingerprint(const std::filesystem::path& model_dir) {
  const ModelConfig config = ModelConfig::FromFile(model_dir / "config.json");

  DigestContext context(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  if (!context || EVP_DigestInit_ex(context.get(), EVP_sha256(), nullptr) != 1) {
    throw FingerprintError("cannot initialise SHA-256");
  }
  for (const std::filesystem::path& file : FilesToHash(model_dir))
    HashFile(context.get(), file);

  std::array<unsigned char, EVP_MAX_MD_SIZE> digest;
  unsigned int digest_size = 0;
  if (EVP_DigestFinal_ex(context.get(), digest.data(), &digest_size) != 1 || digest_size < 8) {
    throw FingerprintError("SHA-256 finalisation failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned int i = 0; i < 8; ++i) {  // 8 bytes = 16 hex digits
    hex += kHex[digest[i] >> 4];
    hex += kHex[digest[i] & 0xf];
  }
  return config.model_type + "-" + hex;
}

}  // namespace gistmem::model
