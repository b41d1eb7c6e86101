// gistmem-server: serves gistmem.v1.Gistmem over gRPC.
//
//   gistmem-server --model DIR --db PATH --listen HOST:PORT [--policy full] [limits...]
//   gistmem-server --flagfile=server.flags      (one --name=value per line; see --help)
//
// Prints "starting on HOST:PORT" when it has bound the address (health answers NOT_SERVING
// while the model loads) and "listening on HOST:PORT" (the chosen port for --listen HOST:0)
// once it serves.
// SIGTERM or SIGINT: stop accepting, let running turns finish for --shutdown_grace, cancel
// the rest, close the store. Exit status: 0 after a clean shutdown, 1 when the server cannot
// start, 2 for bad flags.
#include <signal.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "clients/cpp/common/help_flags.h"
#include "service/config.h"
#include "service/logging.h"
#include "service/server.h"
#include "service/startup_health.h"

ABSL_FLAG(std::string, log_level, "info", "trace, debug, info, warn, error, critical or off");
ABSL_FLAG(std::string, log_format, "text",
          "Logs on stderr: text, or json (one JSON object per line: time, level, msg and the "
          "event's fields: tenant, session_id, request_id, turn, code, timings)");
ABSL_FLAG(bool, log_content, false,
          "Log the text of messages and replies in turn events (off: never logged)");

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "gistmem-server --model DIR --db PATH --listen HOST:PORT [--policy gist] "
      "[--flagfile=PATH]");
  gistmem::clients::HelpListsFlagsFrom("service/");  // --help lists the server's own flags
  absl::ParseCommandLine(argc, argv);

  gistmem::service::LoggingOptions logging;
  logging.level = spdlog::level::from_str(absl::GetFlag(FLAGS_log_level));
  if (logging.level == spdlog::level::off && absl::GetFlag(FLAGS_log_level) != "off") {
    std::cerr << "gistmem-server: unknown --log_level " << absl::GetFlag(FLAGS_log_level) << "\n";
    return 2;
  }
  if (!gistmem::service::ParseLogFormat(absl::GetFlag(FLAGS_log_format), &logging.format)) {
    std::cerr << "gistmem-server: --log_format must be text or json, not "
              << absl::GetFlag(FLAGS_log_format) << "\n";
    return 2;
  }
  logging.log_content = absl::GetFlag(FLAGS_log_content);
  // Logs go to stderr; stdout carries only the "listening on" lines that scripts wait for.
  gistmem::service::ConfigureLogging(logging);

  absl::StatusOr<gistmem::service::ServerConfig> config = gistmem::service::ConfigFromFlags();
  if (!config.ok()) {
    std::cerr << "gistmem-server: " << config.status().message() << "\n";
    return 2;
  }

  // Signals are taken by sigwait below, not by whichever thread they would interrupt; the
  // mask is inherited by every thread started after this point.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  // Health answers NOT_SERVING on the address while the model loads (plaintext only).
  std::unique_ptr<gistmem::service::StartupHealth> starting;
  if (config->tls_cert.empty()) {
    starting = gistmem::service::StartupHealth::Start(config->listen_address);
    if (starting) {
      config->listen_address = starting->address();
      std::cout << "starting on " << starting->address() << std::endl;
    }
  }
  absl::StatusOr<std::unique_ptr<gistmem::service::Server>> server =
      gistmem::service::Server::Start(*config);
  if (!server.ok() && starting && absl::IsUnavailable(server.status())) {
    // The port could not be shared with the start-up health server: start without it.
    starting.reset();
    server = gistmem::service::Server::Start(*config);
  }
  starting.reset();
  if (!server.ok()) {
    spdlog::critical("cannot start: {}", server.status().ToString());
    std::cerr << "gistmem-server: " << server.status().message() << "\n";
    return 1;
  }
  if ((*server)->ops().metrics_port() != 0) {
    std::cout << "metrics on " << (*server)->ops().metrics_port() << std::endl;
  }
  if ((*server)->ops().http_port() != 0) {
    std::cout << "http on " << (*server)->ops().http_port() << std::endl;
  }
  std::cout << "listening on " << (*server)->address() << std::endl;
  spdlog::info("listening on {} (model {})", (*server)->address(), (*server)->model_fingerprint());

  int received = 0;
  sigwait(&signals, &received);
  spdlog::info("received {}", received == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->Shutdown(config->shutdown_grace);
  return 0;
}
