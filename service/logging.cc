#include "service/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>

#include <atomic>
#include <cmath>
#include <memory>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace gistmem::service {
namespace {

std::atomic<bool> json_format{false};
std::atomic<bool> log_content{false};

// A structured event's payload in JSON mode: this byte, then the event's fields as a JSON
// object; the formatter splices them into the line's object.
constexpr char kFieldsMarker = '\x1e';

// Whole numbers print without a fraction ("turn":3, not 3.0).
std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  if (value == std::floor(value) && std::fabs(value) < 9e15) {
    return nlohmann::json(static_cast<int64_t>(value)).dump();
  }
  return nlohmann::json(value).dump();
}

std::string JsonString(std::string_view text) {
  return nlohmann::json(std::string(text))
      .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// One JSON object per line: time (UTC, RFC 3339, microseconds), level, then the message
// ("msg") or the event's fields.
class JsonFormatter final : public spdlog::formatter {
 public:
  void format(const spdlog::details::log_msg& message, spdlog::memory_buf_t& dest) override {
    const absl::Time time = absl::FromChrono(message.time);
    std::string line = absl::StrCat(
        "{\"time\":\"", absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", time, absl::UTCTimeZone()),
        "\",\"level\":\"",
        std::string(spdlog::level::to_string_view(message.level).data(),
                    spdlog::level::to_string_view(message.level).size()),
        "\"");
    const std::string_view logger(message.logger_name.data(), message.logger_name.size());
    if (!logger.empty() && logger != "gistmem-server") {
      absl::StrAppend(&line, ",\"logger\":", JsonString(logger));
    }
    const std::string_view payload(message.payload.data(), message.payload.size());
    if (!payload.empty() && payload.front() == kFieldsMarker && payload.size() > 2) {
      // payload = marker + "{...}": drop the braces and append the fields.
      absl::StrAppend(&line, ",", std::string(payload.substr(2, payload.size() - 3)), "}\n");
    } else {
      absl::StrAppend(&line, ",\"msg\":", JsonString(payload), "}\n");
    }
    dest.append(line.data(), line.data() + line.size());
  }
  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>();
  }
};

}  // namespace

bool ParseLogFormat(std::string_view name, LogFormat* format) {
  if (name == "text") {
    *format = LogFormat::kText;
    return true;
  }
  if (name == "json") {
    *format = LogFormat::kJson;
    return true;
  }
  return false;
}

void ConfigureLogging(const LoggingOptions& options) {
  std::shared_ptr<spdlog::logger> logger = spdlog::get("gistmem-server");
  if (!logger) logger = spdlog::stderr_color_mt("gistmem-server");
  if (options.format == LogFormat::kJson) logger->set_formatter(std::make_unique<JsonFormatter>());
  spdlog::set_default_logger(logger);
  spdlog::set_level(options.level);
  // RocksDB's info log (store/rocks_logger.h): same sink and format, its own name.
  if (!spdlog::get("rocksdb")) spdlog::register_logger(logger->clone("rocksdb"));
  spdlog::get("rocksdb")->set_level(options.level);
  json_format = options.format == LogFormat::kJson;
  log_content = options.log_content;
}

bool LogContent() {
  return log_content.load();
}

void LogEvent(spdlog::level::level_enum level, std::string_view message, const LogStrings& strings,
              const LogNumbers& numbers) {
  if (!spdlog::should_log(level)) return;
  if (json_format.load()) {
    std::string fields =
        absl::StrCat(std::string(1, kFieldsMarker), "{\"msg\":", JsonString(message));
    for (const auto& [key, value] : strings) {
      if (value.empty()) continue;
      absl::StrAppend(&fields, ",", JsonString(key), ":", JsonString(value));
    }
    for (const auto& [key, value] : numbers) {
      absl::StrAppend(&fields, ",", JsonString(key), ":", JsonNumber(value));
    }
    fields += "}";
    spdlog::log(level, "{}", fields);
    return;
  }
  std::string line(message);
  for (const auto& [key, value] : strings) {
    if (value.empty()) continue;
    const bool quote = value.find_first_of(" \"=\n") != std::string::npos;
    absl::StrAppend(&line, " ", std::string(key), "=", quote ? JsonString(value) : value);
  }
  for (const auto& [key, value] : numbers)
    absl::StrAppend(&line, " ", std::string(key), "=", JsonNumber(value));
  spdlog::log(level, "{}", line);
}

}  // namespace gistmem::service
