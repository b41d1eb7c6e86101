// Scattered int32 copies staged on the host: the values go into one buffer, and a run says
// where each piece of it goes. One upload of the buffer and one kernel (CopyInt32Runs,
// kernels.h) then put every piece in place on the device, however many there are; a test
// applies the same runs to host memory (ApplyOnHost). Pure C++. Thread-safety: none.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace gistmem::cuda {

// values[source_offset, source_offset + count) -> dest[0, count).
struct Int32Run {
  int32_t* dest;
  int64_t source_offset;
  int64_t count;
};

struct StagedInt32s {
  std::vector<int32_t> values;
  std::vector<Int32Run> runs;

  // Stages from[0, count) for `dest` (nothing when count <= 0).
  void Stage(int32_t* dest, const int32_t* from, int64_t count) {
    if (count <= 0) return;
    runs.push_back(
        {.dest = dest, .source_offset = static_cast<int64_t>(values.size()), .count = count});
    values.insert(values.end(), from, from + count);
  }
  void Clear() {
    values.clear();
    runs.clear();
  }
  // What CopyInt32Runs does, with host pointers for dest (tests).
  void ApplyOnHost() const {
    for (const Int32Run& run : runs)
      std::memcpy(run.dest, values.data() + run.source_offset, run.count * sizeof(int32_t));
  }
};

}  // namespace gistmem::cuda
