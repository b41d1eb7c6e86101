#pragma once

#include <stdexcept>

namespace gistmem::model {

// Raised for tokenizer files we cannot load (naming the file and the JSON key) and for
// input we cannot encode, such as invalid UTF-8.
class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace gistmem::model
