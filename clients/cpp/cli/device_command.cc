#include <cstdio>
#include <nlohmann/json.hpp>

#include "clients/cpp/cli/commands.h"
#ifdef GISTMEM_HAVE_CUDA
#include "model/backend/cuda/device_info.h"
#endif

namespace gistmem::cli {

int RunDevices() {
  nlohmann::json out = {{"cuda_built", false}, {"devices", nlohmann::json::array()}};
#ifdef GISTMEM_HAVE_CUDA
  out["cuda_built"] = true;
  for (const cuda::DeviceInfo& d : cuda::ListDevices()) {
    out["devices"].push_back({{"index", d.index},
                              {"name", d.name},
                              {"compute_capability", std::to_string(d.compute_major) + "." +
                                                         std::to_string(d.compute_minor)},
                              {"multiprocessors", d.multiprocessors},
                              {"memory_bytes", d.total_memory_bytes}});
  }
#endif
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace gistmem::cli
