// RocksDB's info log, sent to spdlog (logger "rocksdb", the sinks and format of the default
// logger) instead of a LOG file in the database directory: one log stream for the server,
// and no file write that can fail (or assert) when the disk is full.
//
// Levels: RocksDB's DEBUG, INFO and HEADER lines are spdlog debug; WARN, ERROR and FATAL are
// warn, error and critical. The spdlog logger "rocksdb" is the server's
// (service/logging.cc registers it); without one, a stderr logger at warn level is made.
// Thread-safe (spdlog loggers are).
#pragma once

#include <memory>

#include "rocksdb/env.h"

namespace gistmem::store {

std::shared_ptr<rocksdb::Logger> MakeSpdlogRocksLogger();

}  // namespace gistmem::store
