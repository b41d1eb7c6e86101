#include "store/session_locks.h"

#include <functional>
#include <utility>

namespace gistmem::store {

size_t SessionLocks::StripeOf(std::string_view session_key) const {
  return std::hash<std::string_view>{}(session_key) % kStripes;
}

SessionLocks::Guard SessionLocks::Lock(std::string_view session_key) {
  Guard guard;
  guard.first_ = std::unique_lock(stripes_[StripeOf(session_key)]);
  return guard;
}

SessionLocks::Guard SessionLocks::LockBoth(std::string_view session_key,
                                           std::string_view other_session_key) {
  size_t first = StripeOf(session_key);
  size_t second = StripeOf(other_session_key);
  if (first > second) std::swap(first, second);
  Guard guard;
  guard.first_ = std::unique_lock(stripes_[first]);
  if (second != first) guard.second_ = std::unique_lock(stripes_[second]);
  return guard;
}

}  // namespace gistmem::store
