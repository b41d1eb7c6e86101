// Shared documents in the RocksDB store: content-addressed puts (a second put of an id writes
// nothing), reads per tenant, and damaged values reported as DATA_LOSS naming the key.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "store/keys.h"
#include "store/rocks_store.h"
#include "tests/unit/store_test_support.h"

namespace gistmem::store {
namespace {

using ::testing::HasSubstr;

DocumentRecord MakeDocument(const std::string& tenant, const std::string& id) {
  DocumentRecord record;
  record.set_tenant(tenant);
  record.set_document_id(id);
  record.set_model_fingerprint(testing::kTestModel);
  record.mutable_policy()->set_kind(gistmem::v1::MemoryPolicy::GIST);
  record.add_token_ids(17);
  record.set_raw_tokens(1);
  record.set_stream_tokens(1);
  *record.mutable_segment() = testing::MakeSegment(0, "document").header;
  return record;
}

TEST(StoreDocumentsTest, PutThenGetReturnsTheSameBytes) {
  testing::TempDir dir;
  auto store = RocksStore::Open(dir.db());
  ASSERT_TRUE(store.ok());
  const std::string payload = testing::SegmentPayload(3, 256);
  ASSERT_TRUE((*store)->PutDocument(MakeDocument("acme", "d-1"), payload).ok());
  absl::StatusOr<StoredDocument> got = (*store)->GetDocument("acme", "d-1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->payload, payload);
  EXPECT_EQ(got->record.segment().entry_count(), 4);
  // Content-addressed: a second put of the id changes nothing.
  EXPECT_EQ((*store)->PutDocument(MakeDocument("acme", "d-1"), "other").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ((*store)->GetDocument("acme", "d-1")->payload, payload);
  // Tenants do not see each other's documents.
  EXPECT_EQ((*store)->GetDocument("other", "d-1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*store)->GetDocument("acme", "bad id!").status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(StoreDocumentsTest, ADamagedDocumentIsDataLossNamingItsKey) {
  testing::TempDir dir;
  {
    auto store = RocksStore::Open(dir.db());
    ASSERT_TRUE((*store)->PutDocument(MakeDocument("acme", "d-1"), "payload").ok());
    ASSERT_TRUE((*store)->PutDocument(MakeDocument("acme", "d-2"), "payload").ok());
  }
  {
    testing::RawDb raw(dir.db());
    std::string value = raw.Get("documents", SessionKey("acme", "d-1"));
    value[value.size() - 2] ^= 0x20;
    raw.Put("documents", SessionKey("acme", "d-1"), value);
    // A value copied under another key is caught too.
    raw.Put("documents", SessionKey("acme", "d-3"),
            raw.Get("documents", SessionKey("acme", "d-2")));
  }
  auto store = RocksStore::Open(dir.db());
  absl::Status damaged = (*store)->GetDocument("acme", "d-1").status();
  EXPECT_EQ(damaged.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(damaged.message()), HasSubstr("checksum mismatch"));
  EXPECT_THAT(std::string(damaged.message()), HasSubstr("documents"));
  EXPECT_EQ((*store)->GetDocument("acme", "d-3").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE((*store)->GetDocument("acme", "d-2").ok());  // only that document is harmed
}

}  // namespace
}  // namespace gistmem::store
