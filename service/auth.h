// Who is calling: API keys sent as call metadata or HTTP headers ("authorization: Bearer KEY",
// the scheme in any case, or "x-api-key: KEY"; both at once must carry the same key) name the
// caller's tenant; every session and document lives under one, and
// the store's keys begin with it, so one tenant can neither read nor name another's data.
// Without a keys file the server runs open, with every call in the tenant "default". Each
// tenant's calls are also rate-limited (token bucket), when a rate is set.
#pragma once

#include <grpcpp/grpcpp.h>

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

#include "absl/status/statusor.h"

namespace gistmem::service {

// Calls from the server's own HTTP gateway (service/openai_gateway.h) on its in-process
// channel: the tenant the gateway admitted, vouched for by a per-process secret.
inline constexpr std::string_view kGatewaySecretHeader = "x-gistmem-gateway-secret";
inline constexpr std::string_view kGatewayTenantHeader = "x-gistmem-gateway-tenant";

class Auth {
 public:
  // An open server: no keys, tenant "default".
  Auth() = default;
  // Lines "KEY TENANT" ('#' starts a comment); INVALID_ARGUMENT naming the line when a key is
  // shorter than 16 characters, repeated, or a tenant id is malformed.
  static absl::StatusOr<std::unique_ptr<Auth>> FromFile(const std::filesystem::path& path);

  // Calls per second allowed to each tenant (bursts of up to one second's worth); 0 = no limit.
  void set_rate_limit(double calls_per_second) { rate_ = calls_per_second; }

  // The caller's tenant: UNAUTHENTICATED without a known key or with two different keys,
  // RESOURCE_EXHAUSTED over the tenant's rate (counted in gistmem_rate_limited_total).
  absl::StatusOr<std::string> Admit(const grpc::ServerContextBase& context);
  // The same for an HTTP request's header values (empty: the header is absent).
  absl::StatusOr<std::string> AdmitHeaders(std::string_view x_api_key,
                                           std::string_view authorization);
  // The tenant the call's key names, without charging its rate; empty when it names none.
  // For logs.
  std::string TenantOf(const grpc::ServerContextBase& context) const;

  // The key presented: x-api-key, or the credentials of an "authorization: Bearer KEY"
  // header (scheme case-insensitive). Empty when neither is given; UNAUTHENTICATED when both
  // are given with different keys, or authorization has another scheme.
  static absl::StatusOr<std::string> PresentedKey(std::string_view x_api_key,
                                                  std::string_view authorization);

  bool open() const { return tenants_.empty(); }

  // Calls carrying this secret (kGatewaySecretHeader) are admitted as the tenant in
  // kGatewayTenantHeader without a key or a charge: the gateway has admitted and charged
  // them. Empty (the default): no call is.
  void set_gateway_secret(std::string secret) { gateway_secret_ = std::move(secret); }

 private:
  struct Bucket {
    double tokens = 0;
    std::chrono::steady_clock::time_point refilled;
  };
  absl::StatusOr<std::string> AdmitKey(const absl::StatusOr<std::string>& key);
  absl::Status Charge(const std::string& tenant);

  // The tenant of a call from the gateway; nothing when it is not one.
  std::optional<std::string> GatewayTenant(const grpc::ServerContextBase& context) const;

  std::unordered_map<std::string, std::string> tenants_;  // key -> tenant
  std::string gateway_secret_;
  double rate_ = 0;
  std::mutex mutex_;
  std::unordered_map<std::string, Bucket> buckets_;
};

}  // namespace gistmem::service
