#pragma once

#include <string_view>

// String helpers with the semantics of the Python/Jinja methods the chat templates call.
namespace gistmem::model::chat_text {

// str.strip() with no argument: Python's whitespace set, which includes U+001C..U+001F.
std::string_view PythonStrip(std::string_view text);

// str.lstrip(c) / str.rstrip(c) / str.strip(c) for one ASCII character `c`.
std::string_view LeftStrip(std::string_view text, char c);
std::string_view RightStrip(std::string_view text, char c);
std::string_view Strip(std::string_view text, char c);

// str.split(separator)[0] and str.split(separator)[-1].
std::string_view BeforeFirst(std::string_view text, std::string_view separator);
std::string_view AfterLast(std::string_view text, std::string_view separator);

}  // namespace gistmem::model::chat_text
