// The safetensors parser (model/weights.h): any file either opens, with every tensor's bytes
// inside the mapping and matching its dtype and shape, or is refused with WeightsError.
#include <cstddef>
#include <cstdint>
#include <string>

#include "model/weights.h"
#include "tests/fuzz/fuzz_support.h"

using gistmem::fuzz::Fail;
using gistmem::model::DTypeSize;
using gistmem::model::SafetensorsFile;
using gistmem::model::WeightsError;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = gistmem::fuzz::MemoryFile({data, size});
  std::unique_ptr<SafetensorsFile> file;
  try {
    file = SafetensorsFile::Open(path);
  } catch (const WeightsError&) {
    return 0;
  }
  for (const auto& [name, tensor] : file->tensors()) {
    if (name != tensor.name) Fail("tensor listed under another name");
    const int64_t numel = tensor.numel();
    if (numel < 0) Fail("negative element count");
    if (static_cast<uint64_t>(numel) * DTypeSize(tensor.dtype) != tensor.bytes.size()) {
      Fail("tensor bytes do not match dtype and shape");
    }
    if (!tensor.bytes.empty()) {
      // Inside the mapping (ASan does not see mmap'ed memory, so check the bounds too).
      volatile std::byte first = tensor.bytes.front();
      volatile std::byte last = tensor.bytes.back();
      (void)first;
      (void)last;
    }
    if (numel <= (int64_t{1} << 20)) {
      if (tensor.ToFloat32().size() != static_cast<size_t>(numel)) Fail("ToFloat32 size");
    }
  }
  for (const auto& [key, value] : file->metadata()) {
    if (key.empty() && value.empty()) continue;
  }
  return 0;
}
