// Which engine "--device auto" (the default of gistmem-server, gistmem-cli and gistmem-bench)
// runs on. Apart from model/engine.h so that the binaries' flag handling alone depends on it.
#pragma once

#include <string>
#include <string_view>

namespace gistmem::model {

// "cuda" when this binary has the CUDA backend and the CUDA runtime sees a device, else "cpu"
// (a CUDA build on a machine without a GPU or driver serves on the CPU); `why` says which case
// it was, for the log. Thread-safe; asks the CUDA runtime on every call.
struct DeviceChoice {
  std::string device;
  std::string why;
};
DeviceChoice DefaultDevice();

// `device` itself, or DefaultDevice().device when it is "auto" (an empty name stays empty, and
// LoadEngine refuses it). LoadEngine (model/engine.h) resolves its options.device through this.
std::string ResolveDevice(std::string_view device);

}  // namespace gistmem::model
