#include "store/rados_io.h"

#include <cerrno>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "store/absl_view.h"

namespace gistmem::store {

absl::Status RadosError(int rc, std::string_view what) {
  const int error = rc < 0 ? -rc : rc;
  const std::string message =
      absl::StrCat(AbslView(what), ": ", std::strerror(error), " (librados ", rc, ")");
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case ECANCELED:
      return absl::AbortedError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    case ETIMEDOUT:
    case ENOTCONN:
    case ESHUTDOWN:
    case EAGAIN:
    case ECONNREFUSED:
    case EHOSTUNREACH:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<std::unique_ptr<RadosPool>> RadosPool::Connect(const std::string& conf_file,
                                                              const std::string& client_id,
                                                              const std::string& pool,
                                                              absl::Duration op_timeout) {
  rados_t cluster = nullptr;
  if (int rc = rados_create(&cluster, client_id.c_str()); rc < 0) {
    return RadosError(rc, "creating the RADOS client");
  }
  // From here on every failure shuts the client down.
  auto fail = [&](int rc, std::string_view what) {
    rados_shutdown(cluster);
    return RadosError(rc, what);
  };
  if (int rc = rados_conf_read_file(cluster, conf_file.empty() ? nullptr : conf_file.c_str());
      rc < 0) {
    return fail(rc, absl::StrCat("reading Ceph configuration ", conf_file));
  }
  const std::string seconds = absl::StrCat(absl::ToInt64Seconds(op_timeout));
  for (const char* option :
       {"rados_osd_op_timeout", "rados_mon_op_timeout", "client_mount_timeout"}) {
    if (int rc = rados_conf_set(cluster, option, seconds.c_str()); rc < 0) {
      return fail(rc, absl::StrCat("setting ", option));
    }
  }
  if (int rc = rados_connect(cluster); rc < 0) {
    return fail(rc, absl::StrCat("connecting to the Ceph cluster of ", conf_file));
  }
  rados_ioctx_t io = nullptr;
  if (int rc = rados_ioctx_create(cluster, pool.c_str(), &io); rc < 0) {
    return fail(rc, absl::StrCat("opening pool ", pool));
  }
  return std::unique_ptr<RadosPool>(new RadosPool(cluster, io, pool));
}

RadosPool::~RadosPool() {
  rados_ioctx_destroy(io_);
  rados_shutdown(cluster_);
}

absl::StatusOr<std::pair<uint64_t, int64_t>> RadosPool::Stat(const std::string& oid) const {
  uint64_t size = 0;
  time_t mtime = 0;
  if (int rc = rados_stat(io_, oid.c_str(), &size, &mtime); rc < 0) {
    return RadosError(rc, absl::StrCat("stat of ", oid));
  }
  return std::make_pair(size, static_cast<int64_t>(mtime));
}

absl::StatusOr<std::string> RadosPool::ReadAll(const std::string& oid) const {
  absl::StatusOr<std::pair<uint64_t, int64_t>> stat = Stat(oid);
  if (!stat.ok()) return stat.status();
  std::string data(stat->first, '\0');
  size_t done = 0;
  while (done < data.size()) {
    const int rc = rados_read(io_, oid.c_str(), data.data() + done, data.size() - done, done);
    if (rc < 0) return RadosError(rc, absl::StrCat("reading ", oid));
    if (rc == 0) {
      return absl::DataLossError(
          absl::StrCat(oid, " ends at ", done, " bytes; its stat said ", data.size()));
    }
    done += static_cast<size_t>(rc);
  }
  return data;
}

absl::Status RadosPool::Remove(const std::string& oid) const {
  if (int rc = rados_remove(io_, oid.c_str()); rc < 0) {
    return RadosError(rc, absl::StrCat("removing ", oid));
  }
  return absl::OkStatus();
}

absl::Status RadosPool::CreateAll(
    const std::vector<std::pair<std::string, std::string>>& objects) const {
  std::vector<rados_completion_t> completions(objects.size(), nullptr);
  std::vector<rados_write_op_t> ops(objects.size(), nullptr);
  absl::Status result;
  for (size_t i = 0; i < objects.size(); ++i) {
    ops[i] = rados_create_write_op();
    rados_write_op_create(ops[i], LIBRADOS_CREATE_EXCLUSIVE, nullptr);
    rados_write_op_write_full(ops[i], objects[i].second.data(), objects[i].second.size());
    rados_aio_create_completion2(nullptr, nullptr, &completions[i]);
    if (int rc = rados_aio_write_op_operate(ops[i], io_, completions[i], objects[i].first.c_str(),
                                            nullptr, 0);
        rc < 0 && result.ok()) {
      result = RadosError(rc, absl::StrCat("writing ", objects[i].first));
      rados_aio_release(completions[i]);
      completions[i] = nullptr;
    }
  }
  for (size_t i = 0; i < objects.size(); ++i) {
    if (completions[i] != nullptr) {
      rados_aio_wait_for_complete(completions[i]);
      const int rc = rados_aio_get_return_value(completions[i]);
      if (rc < 0 && result.ok())
        result = RadosError(rc, absl::StrCat("writing ", objects[i].first));
      rados_aio_release(completions[i]);
    }
    rados_release_write_op(ops[i]);
  }
  return result;
}

absl::Status RadosPool::RemoveAll(const std::vector<std::string>& oids) const {
  std::vector<rados_completion_t> completions(oids.size(), nullptr);
  absl::Status result;
  for (size_t i = 0; i < oids.size(); ++i) {
    rados_aio_create_completion2(nullptr, nullptr, &completions[i]);
    if (int rc = rados_aio_remove(io_, oids[i].c_str(), completions[i]); rc < 0) {
      if (result.ok()) result = RadosError(rc, absl::StrCat("removing ", oids[i]));
      rados_aio_release(completions[i]);
      completions[i] = nullptr;
    }
  }
  for (size_t i = 0; i < oids.size(); ++i) {
    if (completions[i] == nullptr) continue;
    rados_aio_wait_for_complete(completions[i]);
    const int rc = rados_aio_get_return_value(completions[i]);
    if (rc < 0 && rc != -ENOENT && result.ok()) {
      result = RadosError(rc, absl::StrCat("removing ", oids[i]));
    }
    rados_aio_release(completions[i]);
  }
  return result;
}

absl::StatusOr<std::vector<std::string>> RadosPool::List(std::string_view prefix) const {
  rados_list_ctx_t listing = nullptr;
  if (int rc = rados_nobjects_list_open(io_, &listing); rc < 0) {
    return RadosError(rc, absl::StrCat("listing pool ", pool_));
  }
  std::vector<std::string> names;
  for (;;) {
    const char* entry = nullptr;
    size_t entry_size = 0;
    const int rc =
        rados_nobjects_list_next2(listing, &entry, nullptr, nullptr, &entry_size, nullptr, nullptr);
    if (rc == -ENOENT) break;
    if (rc < 0) {
      rados_nobjects_list_close(listing);
      return RadosError(rc, absl::StrCat("listing pool ", pool_));
    }
    std::string_view name(entry, entry_size);
    if (name.substr(0, prefix.size()) == prefix) names.emplace_back(name);
  }
  rados_nobjects_list_close(listing);
  return names;
}

// What one read step hands back after the op ran.
struct ReadOp::Pending {
  enum Kind { kXattrs, kOmap } kind;
  KeyValues* out = nullptr;
  bool* more = nullptr;
  unsigned char more_flag = 0;
  int rval = 0;
  rados_xattrs_iter_t xattrs = nullptr;
  rados_omap_iter_t omap = nullptr;
  std::vector<std::string> keys;  // kept alive for omap_get_vals_by_keys
  std::string prefix, start_after;
};

ReadOp::ReadOp() : op_(rados_create_read_op()) {}

ReadOp::~ReadOp() {
  for (const auto& pending : pending_) {
    if (pending->xattrs != nullptr) rados_getxattrs_end(pending->xattrs);
    if (pending->omap != nullptr) rados_omap_get_end(pending->omap);
  }
  rados_release_read_op(op_);
}

void ReadOp::GetXattrs(KeyValues* out) {
  auto& pending = pending_.emplace_back(std::make_unique<Pending>());
  pending->kind = Pending::kXattrs;
  pending->out = out;
  rados_read_op_getxattrs(op_, &pending->xattrs, &pending->rval);
}

void ReadOp::GetOmapKeys(std::vector<std::string> keys, KeyValues* out) {
  auto& pending = pending_.emplace_back(std::make_unique<Pending>());
  pending->kind = Pending::kOmap;
  pending->out = out;
  pending->keys = std::move(keys);
  std::vector<const char*> pointers;
  for (const std::string& key : pending->keys)
    pointers.push_back(key.c_str());
  rados_read_op_omap_get_vals_by_keys(op_, pointers.data(), pointers.size(), &pending->omap,
                                      &pending->rval);
}

void ReadOp::GetOmapPrefix(std::string prefix, uint64_t max_return, KeyValues* out, bool* more,
                           std::string start_after) {
  auto& pending = pending_.emplace_back(std::make_unique<Pending>());
  pending->kind = Pending::kOmap;
  pending->out = out;
  pending->more = more;
  pending->prefix = std::move(prefix);
  pending->start_after = std::move(start_after);
  rados_read_op_omap_get_vals2(op_, pending->start_after.c_str(), pending->prefix.c_str(),
                               max_return, &pending->omap, &pending->more_flag, &pending->rval);
}

absl::Status ReadOp::Run(const RadosPool& pool, const std::string& oid) {
  if (int rc = rados_read_op_operate(op_, pool.io(), oid.c_str(), 0); rc < 0) {
    return RadosError(rc, absl::StrCat("reading ", oid));
  }
  for (const auto& pending : pending_) {
    if (pending->rval < 0) return RadosError(pending->rval, absl::StrCat("reading ", oid));
    if (pending->kind == Pending::kXattrs) {
      for (;;) {
        const char* name = nullptr;
        const char* value = nullptr;
        size_t length = 0;
        if (int rc = rados_getxattrs_next(pending->xattrs, &name, &value, &length); rc < 0) {
          return RadosError(rc, absl::StrCat("reading the xattrs of ", oid));
        }
        if (name == nullptr) break;
        (*pending->out)[name] = std::string(value, length);
      }
    } else {
      for (;;) {
        char* key = nullptr;
        char* value = nullptr;
        size_t key_length = 0;
        size_t value_length = 0;
        if (int rc = rados_omap_get_next2(pending->omap, &key, &value, &key_length, &value_length);
            rc < 0) {
          return RadosError(rc, absl::StrCat("reading the omap of ", oid));
        }
        if (key == nullptr) break;
        (*pending->out)[std::string(key, key_length)] = std::string(value, value_length);
      }
      if (pending->more != nullptr) *pending->more = pending->more_flag != 0;
    }
  }
  return absl::OkStatus();
}

WriteOp::WriteOp() : op_(rados_create_write_op()) {}
WriteOp::~WriteOp() {
  rados_release_write_op(op_);
}

void WriteOp::CreateExclusive() {
  rados_write_op_create(op_, LIBRADOS_CREATE_EXCLUSIVE, nullptr);
}
void WriteOp::AssertExists() {
  rados_write_op_assert_exists(op_);
}
void WriteOp::CmpXattrEq(const std::string& name, std::string_view value) {
  rados_write_op_cmpxattr(op_, name.c_str(), LIBRADOS_CMPXATTR_OP_EQ, value.data(), value.size());
}
void WriteOp::SetXattr(const std::string& name, std::string_view value) {
  rados_write_op_setxattr(op_, name.c_str(), value.data(), value.size());
}
void WriteOp::WriteFull(std::string_view data) {
  rados_write_op_write_full(op_, data.data(), data.size());
}
void WriteOp::OmapSet(const std::string& key, std::string_view value) {
  const char* keys[] = {key.c_str()};
  const char* values[] = {value.data()};
  const size_t lengths[] = {value.size()};
  rados_write_op_omap_set(op_, keys, values, lengths, 1);
}
void WriteOp::OmapRemove(const std::string& key) {
  const char* keys[] = {key.c_str()};
  rados_write_op_omap_rm_keys(op_, keys, 1);
}
void WriteOp::Remove() {
  rados_write_op_remove(op_);
}

absl::Status WriteOp::Run(const RadosPool& pool, const std::string& oid) {
  if (int rc = rados_write_op_operate(op_, pool.io(), oid.c_str(), nullptr, 0); rc < 0) {
    return RadosError(rc, absl::StrCat("writing ", oid));
  }
  return absl::OkStatus();
}

}  // namespace gistmem::store
