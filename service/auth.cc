#include "service/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "service/metrics.h"
#include "service/runtime.h"
#include "store/ids.h"

namespace gistmem::service {

absl::StatusOr<std::unique_ptr<Auth>> Auth::FromFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read keys file ", path.string()));
  auto auth = std::make_unique<Auth>();
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    if (const size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string key, tenant, extra;
    if (!(words >> key)) continue;
    const std::string where = absl::StrCat(path.string(), ":", number, ": ");
    if (!(words >> tenant) || (words >> extra)) {
      return absl::InvalidArgumentError(where + "expected \"KEY TENANT\"");
    }
    if (key.size() < 16)
      return absl::InvalidArgumentError(where + "keys need 16 characters or more");
    if (absl::Status valid = store::ValidateId("tenant", tenant); !valid.ok()) {
      return absl::InvalidArgumentError(where + std::string(valid.message()));
    }
    if (!auth->tenants_.emplace(key, tenant).second) {
      return absl::InvalidArgumentError(where + "the key appears twice");
    }
  }
  if (auth->tenants_.empty()) return absl::InvalidArgumentError(path.string() + " holds no keys");
  return auth;
}

namespace {

std::string_view Metadata(const grpc::ServerContextBase& context, const char* name) {
  const auto& metadata = context.client_metadata();
  auto found = metadata.find(name);
  if (found == metadata.end()) return {};
  return std::string_view(found->second.data(), found->second.size());
}

}  // namespace

absl::StatusOr<std::string> Auth::PresentedKey(std::string_view x_api_key,
                                               std::string_view authorization) {
  std::string bearer;
  if (!authorization.empty()) {
    std::string value(authorization);
    absl::StripAsciiWhitespace(&value);
    const size_t space = value.find(' ');
    if (space == std::string::npos || absl::AsciiStrToLower(value.substr(0, space)) != "bearer") {
      return absl::UnauthenticatedError(
          "the authorization header must be \"Bearer KEY\" (or send \"x-api-key: KEY\")");
    }
    bearer = value.substr(space + 1);
    absl::StripAsciiWhitespace(&bearer);
  }
  std::string api_key(x_api_key);
  absl::StripAsciiWhitespace(&api_key);
  if (!api_key.empty() && !bearer.empty() && api_key != bearer) {
    return absl::UnauthenticatedError(
        "x-api-key and authorization carry different keys; send one, or the same in both");
  }
  return api_key.empty() ? bearer : api_key;
}

std::optional<std::string> Auth::GatewayTenant(const grpc::ServerContextBase& context) const {
  if (gateway_secret_.empty()) return std::nullopt;
  const std::string_view secret = Metadata(context, kGatewaySecretHeader.data());
  // Constant time in the secret's length.
  if (secret.size() != gateway_secret_.size()) return std::nullopt;
  unsigned char differ = 0;
  for (size_t i = 0; i < secret.size(); ++i)
    differ |= static_cast<unsigned char>(secret[i] ^ gateway_secret_[i]);
  if (differ != 0) return std::nullopt;
  const std::string_view tenant = Metadata(context, kGatewayTenantHeader.data());
  if (!store::IsValidId(tenant)) return std::nullopt;
  return std::string(tenant);
}

absl::StatusOr<std::string> Auth::Admit(const grpc::ServerContextBase& context) {
  if (std::optional<std::string> tenant = GatewayTenant(context)) return *tenant;
  if (open()) return AdmitKey(std::string());
  return AdmitKey(PresentedKey(Metadata(context, "x-api-key"), Metadata(context, "authorization")));
}

absl::StatusOr<std::string> Auth::AdmitHeaders(std::string_view x_api_key,
                                               std::string_view authorization) {
  if (open()) return AdmitKey(std::string());
  return AdmitKey(PresentedKey(x_api_key, authorization));
}

std::string Auth::TenantOf(const grpc::ServerContextBase& context) const {
  if (std::optional<std::string> tenant = GatewayTenant(context)) return *tenant;
  if (open()) return std::string(kDefaultTenant);
  absl::StatusOr<std::string> key =
      PresentedKey(Metadata(context, "x-api-key"), Metadata(context, "authorization"));
  if (!key.ok()) return {};
  auto found = tenants_.find(*key);
  return found == tenants_.end() ? std::string() : found->second;
}

absl::StatusOr<std::string> Auth::AdmitKey(const absl::StatusOr<std::string>& key) {
  std::string tenant(kDefaultTenant);
  if (!open()) {
    if (!key.ok()) return key.status();
    if (key->empty()) {
      return absl::UnauthenticatedError(
          "this server needs an API key (metadata \"authorization: Bearer KEY\" or \"x-api-key\")");
    }
    auto found = tenants_.find(*key);
    if (found == tenants_.end()) return absl::UnauthenticatedError("unknown API key");
    tenant = found->second;
  }
  if (absl::Status charged = Charge(tenant); !charged.ok()) {
    metrics::CountRateLimited(tenant);
    return charged;
  }
  return tenant;
}

absl::Status Auth::Charge(const std::string& tenant) {
  if (rate_ <= 0) return absl::OkStatus();
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  auto [entry, fresh] = buckets_.try_emplace(tenant, Bucket{rate_, now});
  Bucket& bucket = entry->second;
  if (!fresh) {
    const double elapsed = std::chrono::duration<double>(now - bucket.refilled).count();
    bucket.tokens = std::min(rate_, bucket.tokens + elapsed * rate_);
    bucket.refilled = now;
  }
  if (bucket.tokens < 1) {
    return absl::ResourceExhaustedError(
        absl::StrCat("tenant ", tenant, " is over its rate of ", rate_, " calls per second"));
  }
  bucket.tokens -= 1;
  return absl::OkStatus();
}

}  // namespace gistmem::service
