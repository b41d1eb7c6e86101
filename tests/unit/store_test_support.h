// Helpers shared by the store tests: a temporary directory, sample records, a commit that
// extends a session by one exchange, and raw RocksDB access for damaging values on purpose.
#pragma once

#include <gtest/gtest.h>
#include <stdlib.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "rocksdb/db.h"
#include "store/keys.h"
#include "store/store.h"

namespace gistmem::store::testing {

inline constexpr char kTestModel[] = "test-model@0123abcd";

// A fresh directory under the test temp dir, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (std::filesystem::path(::testing::TempDir()) / "gistmem_store_XXXXXX");
    if (mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed for " << pattern;
    path_ = pattern;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path db() const { return path_ / "db"; }

 private:
  std::filesystem::path path_;
};

inline SessionRecord MakeSession(const std::string& tenant, const std::string& session_id) {
  SessionRecord record;
  record.set_tenant(tenant);
  record.set_session_id(session_id);
  record.set_model_fingerprint(kTestModel);
  record.mutable_policy()->set_kind(gistmem::v1::MemoryPolicy::GIST);
  record.mutable_policy()->set_ratio(8);
  record.mutable_policy()->set_window(64);
  record.mutable_policy()->set_sink_tokens(4);
  record.set_system_prompt("You are terse.");
  record.mutable_default_sampling()->set_temperature(0.5f);
  (*record.mutable_labels())["owner"] = "tests";
  record.set_create_time_micros(1'700'000'000'000'000);
  record.set_update_time_micros(1'700'000'000'000'000);
  return record;
}

inline TurnRecord MakeTurn(int64_t index, const std::string& text) {
  TurnRecord turn;
  turn.set_turn_index(index);
  turn.set_role(index % 2 == 0 ? "user" : "assistant");
  turn.set_text(text);
  for (char c : text)
    turn.add_token_ids(static_cast<unsigned char>(c));
  turn.set_generated(index % 2 == 1);
  if (turn.generated()) turn.set_finish_reason(gistmem::v1::FINISH_REASON_STOP);
  return turn;
}

// Deterministic payload bytes, so a reader can tell a segment is complete and its own.
inline std::string SegmentPayload(uint64_t seq, size_t size) {
  std::string payload(size, '\0');
  for (size_t i = 0; i < size; ++i)
    payload[i] = static_cast<char>((seq * 131 + i * 7) & 0xff);
  return payload;
}

inline KvSegment MakeSegment(uint64_t seq, const std::string& kind, size_t payload_size = 256) {
  KvSegment segment;
  segment.seq = seq;
  segment.header.set_model_fingerprint(kTestModel);
  segment.header.set_num_layers(2);
  segment.header.set_num_kv_heads(2);
  segment.header.set_head_dim(8);
  segment.header.set_dtype("bfloat16");
  segment.header.set_kind(kind);
  segment.header.set_entry_count(4);
  for (int64_t i = 0; i < 4; ++i)
    segment.header.add_positions(static_cast<int64_t>(seq) * 4 + i);
  segment.payload = SegmentPayload(seq, payload_size);
  return segment;
}

// One exchange on top of `stored`: a user turn and an assistant turn, a new gist segment, and
// a new window segment replacing the previous window (seq next-1, when there is one).
inline TurnCommit NextExchange(const SessionRecord& stored, size_t payload_size = 256) {
  TurnCommit commit;
  commit.session = stored;
  const int64_t first = stored.turn_count();
  commit.turns = {MakeTurn(first, "question " + std::to_string(first)),
                  MakeTurn(first + 1, "answer " + std::to_string(first + 1))};
  const uint64_t next_seq = stored.next_kv_segment_seq();
  commit.new_kv_segments = {MakeSegment(next_seq, "gist", payload_size),
                            MakeSegment(next_seq + 1, "window", payload_size)};
  if (next_seq > 0) commit.deleted_kv_segments = {next_seq - 1};
  commit.session.set_turn_count(first + 2);
  commit.session.set_stream_tokens(stored.stream_tokens() + 40);
  commit.session.set_next_kv_segment_seq(next_seq + 2);
  commit.session.set_update_time_micros(stored.update_time_micros() + 1);
  return commit;
}

// The database under a RocksStore, opened directly (the store must be closed) to read or
// damage values the way a bad disk or a buggy build would.
class RawDb {
 public:
  explicit RawDb(const std::filesystem::path& path) {
    std::vector<rocksdb::ColumnFamilyDescriptor> families;
    for (const char* name : {"default", "sessions", "transcript", "kv", "documents"}) {
      families.emplace_back(name, rocksdb::ColumnFamilyOptions());
    }
    rocksdb::DB* db = nullptr;
    const rocksdb::Status status =
        rocksdb::DB::Open(rocksdb::DBOptions(), path.string(), families, &handles_, &db);
    EXPECT_TRUE(status.ok()) << status.ToString();
    db_.reset(db);
  }
  ~RawDb() {
    for (rocksdb::ColumnFamilyHandle* handle : handles_) {
      EXPECT_TRUE(db_->DestroyColumnFamilyHandle(handle).ok());
    }
    EXPECT_TRUE(db_->Close().ok());
  }

  rocksdb::ColumnFamilyHandle* family(const std::string& name) const {
    for (rocksdb::ColumnFamilyHandle* handle : handles_) {
      if (handle->GetName() == name) return handle;
    }
    ADD_FAILURE() << "no column family " << name;
    return nullptr;
  }
  std::string Get(const std::string& family_name, const std::string& key) const {
    std::string value;
    const rocksdb::Status status =
        db_->Get(rocksdb::ReadOptions(), family(family_name), key, &value);
    EXPECT_TRUE(status.ok()) << family_name << " " << PrintableKey(key) << ": "
                             << status.ToString();
    return value;
  }
  void Put(const std::string& family_name, const std::string& key, const std::string& value) {
    const rocksdb::Status status =
        db_->Put(rocksdb::WriteOptions(), family(family_name), key, value);
    EXPECT_TRUE(status.ok()) << status.ToString();
  }
  void Delete(const std::string& family_name, const std::string& key) {
    const rocksdb::Status status = db_->Delete(rocksdb::WriteOptions(), family(family_name), key);
    EXPECT_TRUE(status.ok()) << status.ToString();
  }
  // Every key of a family, for checking what a deletion left behind.
  std::vector<std::string> Keys(const std::string& family_name) const {
    std::vector<std::string> keys;
    std::unique_ptr<rocksdb::Iterator> it(
        db_->NewIterator(rocksdb::ReadOptions(), family(family_name)));
    for (it->SeekToFirst(); it->Valid(); it->Next())
      keys.push_back(it->key().ToString());
    EXPECT_TRUE(it->status().ok()) << it->status().ToString();
    return keys;
  }

 private:
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;
};

}  // namespace gistmem::store::testing
