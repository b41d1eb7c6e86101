#include "model/tokenizer/utf8.h"

#include <algorithm>
#include <cstdint>

namespace gistmem::model::utf8 {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

bool InRange(uint8_t byte, uint8_t low, uint8_t high) {
  return byte >= low && byte <= high;
}

}  // namespace

Sequence ReadSequence(std::string_view bytes, size_t offset) {
  const auto lead = static_cast<uint8_t>(bytes[offset]);
  if (lead < 0x80) return {Sequence::Kind::kValid, 1, lead};

  size_t needed;
  // The allowed range of the second byte depends on the lead byte (Unicode table 3-7).
  uint8_t second_low = 0x80, second_high = 0xBF;
  char32_t code_point;
  if (InRange(lead, 0xC2, 0xDF)) {
    needed = 2;
    code_point = lead & 0x1F;
  } else if (InRange(lead, 0xE0, 0xEF)) {
    needed = 3;
    code_point = lead & 0x0F;
    if (lead == 0xE0) second_low = 0xA0;
    if (lead == 0xED) second_high = 0x9F;
  } else if (InRange(lead, 0xF0, 0xF4)) {
    needed = 4;
    code_point = lead & 0x07;
    if (lead == 0xF0) second_low = 0x90;
    if (lead == 0xF4) second_high = 0x8F;
  } else {
    return {Sequence::Kind::kInvalid, 1, 0};
  }

  size_t length = 1;
  while (length < needed) {
    if (offset + length >= bytes.size()) return {Sequence::Kind::kIncomplete, length, 0};
    const auto next = static_cast<uint8_t>(bytes[offset + length]);
    const bool ok =
        length == 1 ? InRange(next, second_low, second_high) : InRange(next, 0x80, 0xBF);
    if (!ok) return {Sequence::Kind::kInvalid, length, 0};
    code_point = (code_point << 6) | (next & 0x3F);
    ++length;
  }
  return {Sequence::Kind::kValid, length, code_point};
}

std::optional<size_t> FindInvalid(std::string_view bytes) {
  size_t offset = 0;
  while (offset < bytes.size()) {
    // ASCII runs are the common case; skip them without decoding.
    if (static_cast<uint8_t>(bytes[offset]) < 0x80) {
      ++offset;
      continue;
    }
    const Sequence sequence = ReadSequence(bytes, offset);
    if (sequence.kind != Sequence::Kind::kValid) return offset;
    offset += sequence.length;
  }
  return std::nullopt;
}

void AppendLossy(std::string_view bytes, std::string& out) {
  size_t offset = 0;
  while (offset < bytes.size()) {
    const Sequence sequence = ReadSequence(bytes, offset);
    if (sequence.kind == Sequence::Kind::kValid) {
      out.append(bytes.substr(offset, sequence.length));
    } else {
      out.append(kReplacement);
    }
    offset += sequence.length;
  }
}

size_t IncompleteTailLength(std::string_view bytes) {
  // A character is at most 4 bytes, so only the last 3 bytes can be an unfinished start.
  const size_t first = bytes.size() - std::min<size_t>(bytes.size(), 3);
  for (size_t start = first; start < bytes.size(); ++start) {
    // Only a lead byte can start an incomplete sequence, and since a lead byte is never a
    // continuation byte, no earlier sequence reaches into it.
    if (ReadSequence(bytes, start).kind == Sequence::Kind::kIncomplete) return bytes.size() - start;
  }
  return 0;
}

void AppendCodePoint(char32_t code_point, std::string& out) {
  if (code_point < 0x80) {
    out.push_back(static_cast<char>(code_point));
  } else if (code_point < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (code_point >> 6)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else if (code_point < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (code_point >> 12)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (code_point >> 18)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((code_point >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (code_point & 0x3F)));
  }
}

}  // namespace gistmem::model::utf8
