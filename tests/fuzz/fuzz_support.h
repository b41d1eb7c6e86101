// What the fuzz targets share: the shipped model's files (loaded once), an in-memory file for
// parsers that take a path, a strict UTF-8 check of our own, and a failure that libFuzzer
// reports as a crash.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "google/protobuf/message_lite.h"
#include "model/config.h"
#include "model/gist_config.h"
#include "model/tokenizer/tokenizer.h"

namespace gistmem::fuzz {

// models/gistmem-16k, or $GISTMEM_FUZZ_MODEL.
const std::string& ModelDir();
const model::ModelConfig& Config();
const model::Tokenizer& Tokenizer();
const std::optional<model::GistConfig>& Gist();
// The model's fingerprint, as the server computes it (stored records carry it).
const std::string& Fingerprint();

// `data` as the content of an in-memory file (memfd); returns a path that opens it. The same
// file is rewritten on every call.
std::string MemoryFile(std::span<const uint8_t> data);

// Strict UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF), written here
// rather than taken from model/tokenizer/utf8.h so that the two can disagree.
bool IsValidUtf8(std::string_view bytes);

// Deterministic serialization (map entries sorted), to compare messages byte for byte.
std::string Canonical(const google::protobuf::MessageLite& message);

// A broken property: prints what and aborts, which libFuzzer records as a crash.
[[noreturn]] void Fail(std::string_view what);

}  // namespace gistmem::fuzz
