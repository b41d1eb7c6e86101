// A turn is all or nothing: a commit refused by its checks, or one whose write fails on disk
// (the write-ahead log reporting a full disk), leaves no trace, even after reopening; and once
// the disk has room again the same open store writes again.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>

#include "rocksdb/env.h"
#include "rocksdb/file_system.h"
#include "store/rocks_store.h"
#include "tests/unit/store_test_support.h"

namespace gistmem::store {
namespace {

using ::testing::ElementsAre;
using testing::MakeSession;
using testing::NextExchange;

// Write-ahead log files whose writes fail with "no space" while `full` is set.
class WalFullFileSystem : public rocksdb::FileSystemWrapper {
 public:
  WalFullFileSystem() : FileSystemWrapper(rocksdb::FileSystem::Default()) {}
  const char* Name() const override { return "WalFullFileSystem"; }

  rocksdb::IOStatus NewWritableFile(const std::string& name, const rocksdb::FileOptions& options,
                                    std::unique_ptr<rocksdb::FSWritableFile>* result,
                                    rocksdb::IODebugContext* debug) override {
    rocksdb::IOStatus status = target()->NewWritableFile(name, options, result, debug);
    if (status.ok() && name.ends_with(".log")) {
      *result = std::make_unique<WalFile>(std::move(*result), full);
    }
    return status;
  }

  std::atomic<bool> full{false};

 private:
  class WalFile : public rocksdb::FSWritableFileOwnerWrapper {
   public:
    WalFile(std::unique_ptr<rocksdb::FSWritableFile> file, const std::atomic<bool>& full)
        : FSWritableFileOwnerWrapper(std::move(file)), full_(full) {}
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             rocksdb::IODebugContext* debug) override {
      if (full_) return rocksdb::IOStatus::NoSpace("injected: disk full");
      return FSWritableFileOwnerWrapper::Append(data, options, debug);
    }
    rocksdb::IOStatus Append(const rocksdb::Slice& data, const rocksdb::IOOptions& options,
                             const rocksdb::DataVerificationInfo& info,
                             rocksdb::IODebugContext* debug) override {
      if (full_) return rocksdb::IOStatus::NoSpace("injected: disk full");
      return FSWritableFileOwnerWrapper::Append(data, options, info, debug);
    }
    rocksdb::IOStatus Sync(const rocksdb::IOOptions& options,
                           rocksdb::IODebugContext* debug) override {
      if (full_) return rocksdb::IOStatus::NoSpace("injected: disk full");
      return FSWritableFileOwnerWrapper::Sync(options, debug);
    }
    rocksdb::IOStatus Fsync(const rocksdb::IOOptions& options,
                            rocksdb::IODebugContext* debug) override {
      if (full_) return rocksdb::IOStatus::NoSpace("injected: disk full");
      return FSWritableFileOwnerWrapper::Fsync(options, debug);
    }

   private:
    const std::atomic<bool>& full_;
  };
};

std::vector<uint64_t> SeqsOf(const std::vector<KvSegment>& segments) {
  std::vector<uint64_t> seqs;
  for (const KvSegment& segment : segments)
    seqs.push_back(segment.seq);
  return seqs;
}

TEST(StoreAtomicityTest, RefusedCommitWritesNothing) {
  testing::TempDir dir;
  absl::StatusOr<std::unique_ptr<RocksStore>> store = RocksStore::Open(dir.db());
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_TRUE((*store)->CreateSession(MakeSession("acme", "s1")).ok());
  const TurnCommit first = NextExchange(*(*store)->GetSession("acme", "s1"));
  ASSERT_TRUE((*store)->CommitTurn(first).ok());

  // Valid turns and a valid first segment, but the second segment is of another model.
  TurnCommit second = NextExchange(first.session);
  second.new_kv_segments[1].header.set_model_fingerprint("another-model");
  EXPECT_EQ((*store)->CommitTurn(second).code(), absl::StatusCode::kFailedPrecondition);

  EXPECT_EQ((*store)->GetSession("acme", "s1")->SerializeAsString(),
            first.session.SerializeAsString());
  EXPECT_EQ((*store)->LoadTranscript("acme", "s1")->size(), 2u);
  EXPECT_THAT(SeqsOf(*(*store)->LoadKvSegments("acme", "s1")), ElementsAre(0, 1));
}

TEST(StoreAtomicityTest, FailedWriteLeavesNothingAndSaysDiskFull) {
  testing::TempDir dir;
  auto file_system = std::make_shared<WalFullFileSystem>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(file_system);
  RocksStoreOptions options;
  options.env = env.get();

  TurnCommit first;
  {
    absl::StatusOr<std::unique_ptr<RocksStore>> store = RocksStore::Open(dir.db(), options);
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateSession(MakeSession("acme", "s1")).ok());
    first = NextExchange(*(*store)->GetSession("acme", "s1"));
    ASSERT_TRUE((*store)->CommitTurn(first).ok());

    file_system->full = true;
    const absl::Status failed = (*store)->CommitTurn(NextExchange(first.session));
    EXPECT_EQ(failed.code(), absl::StatusCode::kResourceExhausted) << failed;
    // Nothing of it is visible in the running store either.
    absl::StatusOr<SessionRecord> after_failure = (*store)->GetSession("acme", "s1");
    ASSERT_TRUE(after_failure.ok()) << after_failure.status();
    EXPECT_EQ(after_failure->turn_count(), 2);
  }

  file_system->full = false;
  absl::StatusOr<std::unique_ptr<RocksStore>> reopened = RocksStore::Open(dir.db());
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->GetSession("acme", "s1")->SerializeAsString(),
            first.session.SerializeAsString());
  EXPECT_EQ((*reopened)->LoadTranscript("acme", "s1")->size(), 2u);
  EXPECT_THAT(SeqsOf(*(*reopened)->LoadKvSegments("acme", "s1")), ElementsAre(0, 1));
  // The session carries on from the last acknowledged turn.
  EXPECT_TRUE((*reopened)->CommitTurn(NextExchange(first.session)).ok());
}

// Opens a store on `file_system`, whose write-ahead log files fail while it says full.
absl::StatusOr<std::unique_ptr<RocksStore>> OpenOn(const std::filesystem::path& db,
                                                   rocksdb::Env* env) {
  RocksStoreOptions options;
  options.env = env;
  return RocksStore::Open(db, options);
}

// Commits turns on the open store while the disk is full (each RESOURCE_EXHAUSTED, nothing
// stored), then once it has room again (the next commit goes through, no reopening), and
// checks the store, open and reopened, holds exactly the acknowledged turns.
void FullThenRoomAgain(RocksStore& store, WalFullFileSystem& file_system,
                       const TurnCommit& last_acknowledged) {
  file_system.full = true;
  for (int attempt = 0; attempt < 3; ++attempt) {
    const absl::Status failed = store.CommitTurn(NextExchange(last_acknowledged.session));
    EXPECT_EQ(failed.code(), absl::StatusCode::kResourceExhausted) << failed;
  }
  // Reads go on meanwhile.
  ASSERT_EQ(store.GetSession("acme", "s1")->SerializeAsString(),
            last_acknowledged.session.SerializeAsString());

  file_system.full = false;
  const TurnCommit next = NextExchange(last_acknowledged.session);
  const absl::Status written = store.CommitTurn(next);
  ASSERT_TRUE(written.ok()) << written;
  const TurnCommit after = NextExchange(next.session);
  ASSERT_TRUE(store.CommitTurn(after).ok());
  EXPECT_EQ(store.GetSession("acme", "s1")->SerializeAsString(), after.session.SerializeAsString());
  const int64_t turns = after.session.turn_count();
  EXPECT_EQ(store.LoadTranscript("acme", "s1")->size(), static_cast<size_t>(turns));
  ASSERT_TRUE(store.CreateSession(MakeSession("acme", "s2")).ok());
}

// The acknowledged turns (2 before the full disk, 4 after it) are all there, reopened.
void ExpectReopensWithSixTurns(const std::filesystem::path& db) {
  absl::StatusOr<std::unique_ptr<RocksStore>> reopened = RocksStore::Open(db);
  ASSERT_TRUE(reopened.ok()) << reopened.status();
  EXPECT_EQ((*reopened)->GetSession("acme", "s1")->turn_count(), 6);
  EXPECT_EQ((*reopened)->LoadTranscript("acme", "s1")->size(), 6u);
  EXPECT_TRUE((*reopened)->GetSession("acme", "s2").ok());
}

TEST(StoreAtomicityTest, WritesGoOnOnceTheDiskHasRoomAgainWithoutReopening) {
  testing::TempDir dir;
  auto file_system = std::make_shared<WalFullFileSystem>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(file_system);
  {
    absl::StatusOr<std::unique_ptr<RocksStore>> store = OpenOn(dir.db(), env.get());
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateSession(MakeSession("acme", "s1")).ok());
    const TurnCommit first = NextExchange(*(*store)->GetSession("acme", "s1"));
    ASSERT_TRUE((*store)->CommitTurn(first).ok());
    FullThenRoomAgain(**store, *file_system, first);
  }
  ExpectReopensWithSixTurns(dir.db());
}

// The same right after opening, when every memtable is empty (opening flushed them): the
// disk fills on the first write to a fresh write-ahead log.
TEST(StoreAtomicityTest, WritesGoOnAfterAFullDiskRightAfterOpening) {
  testing::TempDir dir;
  auto file_system = std::make_shared<WalFullFileSystem>();
  std::unique_ptr<rocksdb::Env> env = rocksdb::NewCompositeEnv(file_system);
  TurnCommit first;
  {
    absl::StatusOr<std::unique_ptr<RocksStore>> store = OpenOn(dir.db(), env.get());
    ASSERT_TRUE(store.ok()) << store.status();
    ASSERT_TRUE((*store)->CreateSession(MakeSession("acme", "s1")).ok());
    first = NextExchange(*(*store)->GetSession("acme", "s1"));
    ASSERT_TRUE((*store)->CommitTurn(first).ok());
  }
  {
    absl::StatusOr<std::unique_ptr<RocksStore>> store = OpenOn(dir.db(), env.get());
    ASSERT_TRUE(store.ok()) << store.status();
    FullThenRoomAgain(**store, *file_system, first);
  }
  ExpectReopensWithSixTurns(dir.db());
}

}  // namespace
}  // namespace gistmem::store
