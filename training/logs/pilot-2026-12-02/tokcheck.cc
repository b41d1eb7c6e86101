// Encodes each argument with the C++ tokenizer and prints the ids. Build from /work/main/build:
//   g++ -std=c++20 -O1 -I/work/main tokcheck.cc -o /tmp/tokcheck model/libgistmem_model.a \
//       /usr/lib/x86_64-linux-gnu/libpcre2-8.so /usr/lib/x86_64-linux-gnu/libicuuc.so \
//       /usr/lib/x86_64-linux-gnu/libicudata.so -lpthread
//   /tmp/tokcheck training/tokenizer-digits.json "text" ...
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
