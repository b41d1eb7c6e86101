// Who is calling: API keys sent as call metadata ("authorization: Bearer KEY" or
// "x-api-key: KEY") name the caller's tenant; every session and document lives under one, and
// the store's keys begin with it, so one tenant can neither read nor name another's data.
// Without a keys file the server runs open, with every call in the tenant "default". Each
// tenant's calls are also rate-limited (token bucket), when a rate is set.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

#include "absl/status/statusor.h"

namespace gistmem::service {

class Auth {
 public:
  // An open server: no keys, tenant "default".
  Auth() = default;
  // Lines "KEY TENANT" ('#' starts a comment); INVALID_ARGUMENT naming the line when a key is
  // shorter than 16 characters, repeated, or a tenant id is malformed.
  static absl::StatusOr<std::unique_ptr<Auth>> FromFile(const std::filesystem::path& path);

  // Calls per second allowed to each tenant (bursts of up to one second's worth); 0 = no limit.
  void set_rate_limit(double calls_per_second) { rate_ = calls_per_second; }

  // The caller's tenant: UNAUTHENTICATED without a known key, RESOURCE_EXHAUSTED over the
  // tenant's rate.
  absl::StatusOr<std::string> Admit(const grpc::ServerContextBase& context);

  bool open() const { return tenants_.empty(); }

 private:
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled;
  };
  absl::Status Charge(const std::string& tenant);

  std::unordered_map<std::string, std::string> tenants_;  // key -> tenant
  double rate_ = 0;
  std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace gistmem::service
