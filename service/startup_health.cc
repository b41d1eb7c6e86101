#include "service/startup_health.h"

#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "service/server.h"

namespace gistmem::service {

std::unique_ptr<StartupHealth> StartupHealth::Start(const std::string& listen_address) {
  std::unique_ptr<StartupHealth> health(new StartupHealth());
  grpc::EnableDefaultHealthCheckService(true);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen_address, grpc::InsecureServerCredentials(), &port);
  health->server_ = builder.BuildAndStart();
  if (!health->server_ || port == 0) return nullptr;
  grpc::HealthCheckServiceInterface* service = health->server_->GetHealthCheckService();
  service->SetServingStatus(false);
  service->SetServingStatus(kHealthServiceName, false);
  const size_t colon = listen_address.rfind(':');
  health->address_ = absl::StrCat(listen_address.substr(0, colon), ":", port);
  return health;
}

StartupHealth::~StartupHealth() {
  if (server_) {
    server_->Shutdown(std::chrono::system_clock::now());
    server_->Wait();
  }
}

}  // namespace gistmem::service
