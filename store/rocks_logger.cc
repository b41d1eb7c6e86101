#include "store/rocks_logger.h"

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdarg>
#include <cstdio>
#include <string>

namespace gistmem::store {
namespace {

class SpdlogRocksLogger final : public rocksdb::Logger {
 public:
  explicit SpdlogRocksLogger(std::shared_ptr<spdlog::logger> logger)
      : rocksdb::Logger(rocksdb::InfoLogLevel::DEBUG_LEVEL), logger_(std::move(logger)) {}

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    const spdlog::level::level_enum spd = Level(level);
    if (!logger_->should_log(spd)) return;
    va_list copy;
    va_copy(copy, ap);
    const int size = std::vsnprintf(nullptr, 0, format, copy);
    va_end(copy);
    if (size <= 0) return;
    std::string text(static_cast<size_t>(size) + 1, '\0');
    std::vsnprintf(text.data(), text.size(), format, ap);
    text.resize(static_cast<size_t>(size));
    while (!text.empty() && (text.back() == '\n' || text.back() == ' '))
      text.pop_back();
    logger_->log(spd, "{}", text);
  }

 private:
  static spdlog::level::level_enum Level(rocksdb::InfoLogLevel level) {
    switch (level) {
      case rocksdb::InfoLogLevel::WARN_LEVEL:
        return spdlog::level::warn;
      case rocksdb::InfoLogLevel::ERROR_LEVEL:
        return spdlog::level::err;
      case rocksdb::InfoLogLevel::FATAL_LEVEL:
        return spdlog::level::critical;
      default:
        return spdlog::level::debug;
    }
  }

  std::shared_ptr<spdlog::logger> logger_;
};

}  // namespace

std::shared_ptr<rocksdb::Logger> MakeSpdlogRocksLogger() {
  std::shared_ptr<spdlog::logger> logger = spdlog::get("rocksdb");
  if (!logger) {
    // No server configured it (a tool, a test): warnings and worse, on stderr, so that a
    // tool's stdout stays its own.
    logger = std::make_shared<spdlog::logger>(
        "rocksdb", std::make_shared<spdlog::sinks::stderr_color_sink_mt>());
    logger->set_level(spdlog::level::warn);
  }
  return std::make_shared<SpdlogRocksLogger>(std::move(logger));
}

}  // namespace gistmem::store
