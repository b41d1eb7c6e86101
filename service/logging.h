// gistmem-server's logs: spdlog on stderr, as text or as JSON lines (--log_format), and
// structured events that carry fields (tenant, session id, request id, turn, status, timings).
//
//   ConfigureLogging({.format = LogFormat::kJson, .level = spdlog::level::info});
//   LogEvent(spdlog::level::info, "call", {{"method", "Chat"}, {"code", "OK"}},
//            {{"duration_ms", 12.5}});
//
// Text:  [2026-12-02 10:00:00.123] [info] call method=Chat code=OK duration_ms=12.5
// JSON:  {"time":"2026-12-02T10:00:00.123456Z","level":"info","msg":"call","method":"Chat",
//         "code":"OK","duration_ms":12.5}
// Plain spdlog::info(...) lines become {"time", "level", "msg"} in JSON. Prompt and reply
// text are logged only when LogContent() (--log_content).
//
// Thread-safety: ConfigureLogging once at start-up, before other threads log; the rest from
// any thread.
#pragma once

#include <spdlog/spdlog.h>

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gistmem::service {

enum class LogFormat { kText, kJson };

struct LoggingOptions {
  LogFormat format = LogFormat::kText;
  spdlog::level::level_enum level = spdlog::level::info;
  bool log_content = false;  // prompt and reply text in turn events
};

// Installs the default logger (stderr) with the format and level.
void ConfigureLogging(const LoggingOptions& options);
bool LogContent();

// "text" or "json"; false for anything else.
bool ParseLogFormat(std::string_view name, LogFormat* format);

using LogStrings = std::vector<std::pair<std::string_view, std::string>>;
using LogNumbers = std::vector<std::pair<std::string_view, double>>;
// One event named `message` with string and numeric fields (empty strings are left out).
void LogEvent(spdlog::level::level_enum level, std::string_view message, const LogStrings& strings,
              const LogNumbers& numbers = {});

}  // namespace gistmem::service
