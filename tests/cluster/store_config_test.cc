// --store / --db: which store a server opens (service/config.h ParseStoreFlag, ValidateConfig,
// service/store_factory.h OpenStore). No Ceph needed: a RADOS store that cannot be reached
// must fail with a clear status, never fall back to another store.
#include <gtest/gtest.h>

#include "service/config.h"
#include "service/store_factory.h"

namespace gistmem::service {
namespace {

ServerConfig WithModel() {
  ServerConfig config;
  config.model_dir = "/nonexistent-model";
  return config;
}

TEST(StoreConfigTest, RocksDbIsTheDefaultAndDbStillWorks) {
  ServerConfig config = WithModel();
  config.db_path = "/tmp/x";
  ASSERT_TRUE(ParseStoreFlag("", config).ok());
  EXPECT_EQ(config.store.kind, StoreConfig::Kind::kRocksDb);
  EXPECT_TRUE(ValidateConfig(config).ok());
  ASSERT_TRUE(ParseStoreFlag("rocksdb:/tmp/x", config).ok());
  EXPECT_EQ(config.db_path, "/tmp/x");
}

TEST(StoreConfigTest, RadosPool) {
  ServerConfig config = WithModel();
  ASSERT_TRUE(ParseStoreFlag("rados:gistmem", config).ok());
  EXPECT_EQ(config.store.kind, StoreConfig::Kind::kRados);
  EXPECT_EQ(config.store.rados_pool, "gistmem");
  EXPECT_TRUE(ValidateConfig(config).ok());
}

TEST(StoreConfigTest, BadFormsAndConflictsAreInvalidArgument) {
  for (const char* spec : {"rados:", "rocksdb:", "sqlite:/x", "gistmem"}) {
    ServerConfig config = WithModel();
    EXPECT_TRUE(absl::IsInvalidArgument(ParseStoreFlag(spec, config))) << spec;
  }
  ServerConfig config = WithModel();
  config.db_path = "/tmp/a";
  EXPECT_TRUE(absl::IsInvalidArgument(ParseStoreFlag("rados:p", config)));
  EXPECT_TRUE(absl::IsInvalidArgument(ParseStoreFlag("rocksdb:/tmp/b", config)));
  ServerConfig none = WithModel();
  EXPECT_TRUE(absl::IsInvalidArgument(ValidateConfig(none)));
}

TEST(StoreConfigTest, AnUnreachableClusterIsAClearError) {
  ServerConfig config = WithModel();
  ASSERT_TRUE(ParseStoreFlag("rados:gistmem", config).ok());
  config.store.ceph_conf = "/nonexistent/ceph.conf";
  absl::StatusOr<std::unique_ptr<store::Store>> store = OpenStore(config);
  ASSERT_FALSE(store.ok());
  EXPECT_NE(store.status().message().find("ceph.conf"), std::string_view::npos) << store.status();
}

}  // namespace
}  // namespace gistmem::service
