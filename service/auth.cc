#include "service/auth.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
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

absl::StatusOr<std::string> Auth::Admit(const grpc::ServerContextBase& context) {
  std::string tenant(kDefaultTenant);
  if (!open()) {
    std::string key;
    const auto& metadata = context.client_metadata();
    if (auto found = metadata.find("x-api-key"); found != metadata.end()) {
      key.assign(found->second.data(), found->second.size());
    } else if (auto bearer = metadata.find("authorization"); bearer != metadata.end()) {
      const std::string value(bearer->second.data(), bearer->second.size());
      if (value.rfind("Bearer ", 0) == 0) key = value.substr(7);
    }
    if (key.empty()) {
      return absl::UnauthenticatedError(
          "this server needs an API key (metadata \"authorization: Bearer KEY\" or \"x-api-key\")");
    }
    auto found = tenants_.find(key);
    if (found == tenants_.end()) return absl::UnauthenticatedError("unknown API key");
    tenant = found->second;
  }
  if (absl::Status charged = Charge(tenant); !charged.ok()) return charged;
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
