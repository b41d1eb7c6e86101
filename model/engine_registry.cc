// The engine registry: every engine this binary has, by name. It lives in gistmem_engines
// (not gistmem_model) because the CUDA backend links gistmem_model: the registry sits above
// both, so neither library needs the other's symbols.
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "model/backend/cpu/cpu_engine.h"
#include "model/device_choice.h"
#include "model/engine.h"
#ifdef GISTMEM_HAVE_CUDA
#include "model/backend/cuda/cuda_engine.h"
#include "model/backend/cuda/device_info.h"
#endif

namespace gistmem::model {
namespace {

struct EngineEntry {
  const char* name;
  absl::StatusOr<std::unique_ptr<Engine>> (*load)(const std::filesystem::path&,
                                                  const EngineOptions&);
};

#ifndef GISTMEM_HAVE_CUDA
absl::StatusOr<std::unique_ptr<Engine>> CudaNotBuilt(const std::filesystem::path&,
                                                     const EngineOptions&) {
  return absl::UnimplementedError(
      "--device cuda: this binary was built without the CUDA backend (no CUDA toolkit at "
      "build time, or GISTMEM_CUDA=OFF); use --device cpu or rebuild with nvcc");
}
#endif

// "cuda" and "cuda:N" both name the CUDA engine (N: the device index, 0 when left out).
constexpr EngineEntry kEngines[] = {
    {"cpu", LoadCpuEngine},
#ifdef GISTMEM_HAVE_CUDA
    {"cuda", cuda::LoadCudaEngine},
#else
    {"cuda", CudaNotBuilt},
#endif
};

}  // namespace

std::vector<std::string> EngineNames() {
  std::vector<std::string> names;
  for (const EngineEntry& entry : kEngines)
    names.emplace_back(entry.name);
  return names;
}

DeviceChoice DefaultDevice() {
#ifdef GISTMEM_HAVE_CUDA
  const std::vector<cuda::DeviceInfo> devices = cuda::ListDevices();
  if (devices.empty()) {
    return {"cpu", "this binary has the CUDA backend but the CUDA runtime sees no device"};
  }
  return {"cuda", absl::StrCat("this binary has the CUDA backend and ", devices.size(),
                               " CUDA device(s) are present, the first: ", devices[0].name)};
#else
  return {"cpu", "this binary was built without the CUDA backend"};
#endif
}

std::string ResolveDevice(std::string_view device) {
  if (device == "auto") return DefaultDevice().device;
  return std::string(device);
}

absl::StatusOr<std::unique_ptr<Engine>> LoadEngine(const std::filesystem::path& model_dir,
                                                   const EngineOptions& given) {
  EngineOptions options = given;
  options.device = ResolveDevice(given.device);
  const std::string_view device = options.device;
  const std::string_view name = device.substr(0, device.find(':'));
  for (const EngineEntry& entry : kEngines) {
    if (name != entry.name) continue;
    if (name != device && name != "cuda") break;  // only cuda takes an index
    return entry.load(model_dir, options);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown device \"", options.device,
                   "\"; this build has: ", absl::StrJoin(EngineNames(), ", ")));
}

}  // namespace gistmem::model
