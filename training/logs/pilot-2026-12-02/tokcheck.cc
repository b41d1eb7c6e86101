#include <cstdio>
#include <string>
#include "model/tokenizer/tokenizer.h"
int main(int argc, char** argv) {
  auto tok = gistmem::model::Tokenizer::FromFile(argv[1]);
  for (int i = 2; i < argc; ++i) {
    auto ids = tok.Encode(argv[i]);
    for (auto id : ids) std::printf("%d ", id);
    std::printf("\n");
  }
}
