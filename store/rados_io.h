// Thin RAII wrappers over librados' C API (rados/librados.h, Debian's librados-dev) for
// store/rados_store.cc: a connected pool, compound read and write operations on one object,
// and the mapping of librados' negative errno values to absl::Status.
//
// Thread-safety: a RadosPool may be used from many threads at once (librados' I/O context is);
// a ReadOp or WriteOp belongs to one thread.
#pragma once

#include <rados/librados.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace gistmem::store {

// `what` failed with librados' `rc` (a negative errno): NOT_FOUND (ENOENT), ALREADY_EXISTS
// (EEXIST), ABORTED (ECANCELED: a compare guard failed), RESOURCE_EXHAUSTED (ENOSPC, EDQUOT),
// UNAVAILABLE (ETIMEDOUT, ENOTCONN, ESHUTDOWN, EAGAIN, ECONNREFUSED), INTERNAL otherwise.
absl::Status RadosError(int rc, std::string_view what);

class RadosPool {
 public:
  // Connects as client `client_id` with the settings of `conf_file` (empty: librados' default
  // search) and opens `pool`. Every operation gives up after `op_timeout` (UNAVAILABLE).
  static absl::StatusOr<std::unique_ptr<RadosPool>> Connect(const std::string& conf_file,
                                                            const std::string& client_id,
                                                            const std::string& pool,
                                                            absl::Duration op_timeout);
  ~RadosPool();
  RadosPool(const RadosPool&) = delete;
  RadosPool& operator=(const RadosPool&) = delete;

  rados_ioctx_t io() const { return io_; }
  const std::string& pool_name() const { return pool_; }

  // Whole-object helpers. Read returns NOT_FOUND when the object is absent.
  absl::StatusOr<std::string> ReadAll(const std::string& oid) const;
  // Size and modification time (unix seconds).
  absl::StatusOr<std::pair<uint64_t, int64_t>> Stat(const std::string& oid) const;
  absl::Status Remove(const std::string& oid) const;
  // Creates each object (exclusive: ALREADY_EXISTS if one exists) with its data, all in
  // flight at once; returns when every one is durable or the first error once all finished.
  absl::Status CreateAll(const std::vector<std::pair<std::string, std::string>>& objects) const;
  // Removes each object, all in flight at once; absent ones count as removed.
  absl::Status RemoveAll(const std::vector<std::string>& oids) const;
  // Objects whose name starts with `prefix` (a full scan of the pool).
  absl::StatusOr<std::vector<std::string>> List(std::string_view prefix) const;

 private:
  RadosPool(rados_t cluster, rados_ioctx_t io, std::string pool)
      : cluster_(cluster), io_(io), pool_(std::move(pool)) {}
  rados_t cluster_;
  rados_ioctx_t io_;
  std::string pool_;
};

// Key/value pairs of an object's omap or xattrs, sorted by key.
using KeyValues = std::map<std::string, std::string>;

// One compound read of one object, applied atomically by its primary OSD. Add the reads, then
// Run; the results are filled in by Run.
class ReadOp {
 public:
  ReadOp();
  ~ReadOp();
  ReadOp(const ReadOp&) = delete;
  ReadOp& operator=(const ReadOp&) = delete;

  void GetXattrs(KeyValues* out);
  void GetOmapKeys(std::vector<std::string> keys, KeyValues* out);
  // Up to `max_return` pairs whose key starts with `prefix`; *more says whether there are more.
  void GetOmapPrefix(std::string prefix, uint64_t max_return, KeyValues* out, bool* more,
                     std::string start_after = "");
  absl::Status Run(const RadosPool& pool, const std::string& oid);

 private:
  struct Pending;
  rados_read_op_t op_;
  std::vector<std::unique_ptr<Pending>> pending_;
};

// One compound write of one object: every step or none (guards first; a failed guard is
// ABORTED and changes nothing). Run returns once the write is durable on the acting OSDs.
class WriteOp {
 public:
  WriteOp();
  ~WriteOp();
  WriteOp(const WriteOp&) = delete;
  WriteOp& operator=(const WriteOp&) = delete;

  void CreateExclusive();
  void AssertExists();
  void CmpXattrEq(const std::string& name, std::string_view value);
  void SetXattr(const std::string& name, std::string_view value);
  void WriteFull(std::string_view data);
  void OmapSet(const std::string& key, std::string_view value);
  void OmapRemove(const std::string& key);
  void Remove();
  absl::Status Run(const RadosPool& pool, const std::string& oid);

 private:
  rados_write_op_t op_;  // librados copies every argument into it when a step is added
};

}  // namespace gistmem::store
