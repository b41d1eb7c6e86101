// Serialises the read-check-write sequences of one session (create, commit, delete, fork) so
// that two of them cannot both pass their checks; RocksDB itself only makes each write atomic.
// A fixed set of mutexes, picked by hashing the session key: no per-session state to clean up.
#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <string_view>

namespace gistmem::store {

class SessionLocks {
 public:
  // Holds one or two of the table's mutexes until destroyed.
  class Guard {
   public:
    Guard(Guard&&) = default;

   private:
    friend class SessionLocks;
    Guard() = default;
    std::unique_lock<std::mutex> first_;
    std::unique_lock<std::mutex> second_;
  };

  Guard Lock(std::string_view session_key);
  // Both sessions, in a fixed order so that two forks in opposite directions cannot deadlock.
  Guard LockBoth(std::string_view session_key, std::string_view other_session_key);

 private:
  static constexpr size_t kStripes = 64;
  size_t StripeOf(std::string_view session_key) const;
  std::array<std::mutex, kStripes> stripes_;
};

}  // namespace gistmem::store
