#include "tests/fuzz/fuzz_support.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/stubs/logging.h"
#include "model/fingerprint.h"

namespace gistmem::fuzz {
namespace {

// protobuf logs every string field with invalid UTF-8 it refuses; fuzzing makes millions.
const bool kQuietProtobuf = [] {
  google::protobuf::SetLogHandler(nullptr);
  return true;
}();

}  // namespace

std::string Canonical(const google::protobuf::MessageLite& message) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    message.SerializeToCodedStream(&coded);
  }
  return out;
}

const std::string& ModelDir() {
  static const std::string dir = [] {
    const char* override_dir = std::getenv("GISTMEM_FUZZ_MODEL");
    return std::string(override_dir != nullptr ? override_dir
                                               : GISTMEM_SOURCE_DIR "/models/gistmem-16k");
  }();
  return dir;
}

const model::ModelConfig& Config() {
  static const model::ModelConfig config =
      model::ModelConfig::FromFile(std::filesystem::path(ModelDir()) / "config.json");
  return config;
}

const model::Tokenizer& Tokenizer() {
  static const model::Tokenizer tokenizer =
      model::Tokenizer::FromFile(std::filesystem::path(ModelDir()) / "tokenizer.json");
  return tokenizer;
}

const std::optional<model::GistConfig>& Gist() {
  static const std::optional<model::GistConfig> gist =
      model::GistConfig::FromModelDir(ModelDir(), Config().vocab_size);
  return gist;
}

const std::string& Fingerprint() {
  static const std::string fingerprint = model::ModelFingerprint(ModelDir());
  return fingerprint;
}

std::string MemoryFile(std::span<const uint8_t> data) {
  static const int fd = memfd_create("gistmem-fuzz", 0);
  if (fd < 0) Fail("memfd_create failed");
  if (ftruncate(fd, 0) != 0) Fail("ftruncate failed");
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t n =
        pwrite(fd, data.data() + written, data.size() - written, static_cast<off_t>(written));
    if (n <= 0) Fail("pwrite failed");
    written += static_cast<size_t>(n);
  }
  return "/proc/self/fd/" + std::to_string(fd);
}

bool IsValidUtf8(std::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    const auto byte = [&](size_t k) { return static_cast<unsigned char>(bytes[k]); };
    const unsigned char lead = byte(i);
    size_t length = 0;
    char32_t code = 0;
    if (lead < 0x80) {
      ++i;
      continue;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
      length = 2, code = lead & 0x1F;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
      length = 3, code = lead & 0x0F;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
      length = 4, code = lead & 0x07;
    } else {
      return false;
    }
    if (i + length > bytes.size()) return false;
    for (size_t k = 1; k < length; ++k) {
      if ((byte(i + k) & 0xC0) != 0x80) return false;
      code = (code << 6) | (byte(i + k) & 0x3F);
    }
    if ((length == 3 && code < 0x800) || (length == 4 && code < 0x10000) || code > 0x10FFFF ||
        (code >= 0xD800 && code <= 0xDFFF)) {
      return false;
    }
    i += length;
  }
  return true;
}

void Fail(std::string_view what) {
  std::fprintf(stderr, "fuzz property broken: %.*s\n", static_cast<int>(what.size()), what.data());
  std::abort();
}

}  // namespace gistmem::fuzz
