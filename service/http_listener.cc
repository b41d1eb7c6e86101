#include "service/http_listener.h"

#include <httplib.h>

#include <charconv>

#include "absl/strings/str_cat.h"

namespace gistmem::service {

absl::StatusOr<int> BindAndServe(httplib::Server& server, const std::string& address,
                                 const std::string& flag, std::thread* listener) {
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon != std::string::npos) {
    const char* begin = address.data() + colon + 1;
    const char* end = address.data() + address.size();
    auto [stop, error] = std::from_chars(begin, end, port);
    if (error != std::errc() || stop != end || begin == end) port = -1;
  }
  if (port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", address, " is not HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  int bound = 0;
  if (port == 0) {
    bound = server.bind_to_any_port(host);
  } else if (server.bind_to_port(host, port)) {
    bound = port;
  }
  if (bound <= 0) {
    return absl::UnavailableError(absl::StrCat("--", flag, ": cannot listen on ", address));
  }
  *listener = std::thread([&server] { server.listen_after_bind(); });
  return bound;
}

}  // namespace gistmem::service
