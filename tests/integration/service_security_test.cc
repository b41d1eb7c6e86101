// Tenants, API keys, rate limits and TLS against a real server: a caller without a known key
// is UNAUTHENTICATED; a tenant can neither read, list, resume, fork nor attach another
// tenant's sessions or documents (NOT_FOUND, never data); a tenant over its rate is
// RESOURCE_EXHAUSTED; with a certificate the server speaks TLS only.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <iterator>

#include "tests/integration/service_test_support.h"

namespace gistmem::testing {
namespace {

constexpr char kKeyA[] = "key-of-tenant-acme-0001";
constexpr char kKeyB[] = "key-of-tenant-bolt-0002";

std::filesystem::path WriteKeys(const std::filesystem::path& dir) {
  const std::filesystem::path path = dir / "keys";
  std::ofstream(path) << "# key tenant\n" << kKeyA << " acme\n" << kKeyB << " bolt  # second\n";
  return path;
}

// A context that presents `key` ("" = none), as "x-api-key" or as a bearer token.
std::unique_ptr<grpc::ClientContext> As(const std::string& key, bool bearer = false) {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!key.empty()) {
    if (bearer) {
      context->AddMetadata("authorization", "Bearer " + key);
    } else {
      context->AddMetadata("x-api-key", key);
    }
  }
  return context;
}

grpc::Status CreateAs(v1::Gistmem::Stub& stub, const std::string& key, const std::string& id) {
  v1::CreateSessionRequest request;
  request.set_session_id(id);
  request.set_system_prompt("Tenant " + key.substr(14, 4));
  v1::Session session;
  return stub.CreateSession(As(key).get(), request, &session);
}

grpc::Status AppendAs(v1::Gistmem::Stub& stub, const std::string& key, const std::string& id,
                      const std::string& text) {
  v1::AppendRequest request;
  request.set_session_id(id);
  request.mutable_message()->set_content(text);
  v1::AppendResponse response;
  return stub.Append(As(key).get(), request, &response);
}

class SecurityTest : public ::testing::Test {
 protected:
  service::ServerConfig Config() {
    service::ServerConfig config = TestConfig(dir_.path() / "db");
    config.api_keys_file = WriteKeys(dir_.path());
    return config;
  }
  TempDir dir_;
};

TEST_F(SecurityTest, CallsWithoutAKnownKeyAreUnauthenticated) {
  TestServer server(Config());
  v1::ListSessionsResponse page;
  EXPECT_EQ(server.stub().ListSessions(As("").get(), {}, &page).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(server.stub().ListSessions(As("not-a-key-at-all-xyz").get(), {}, &page).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(server.stub().ListSessions(As(kKeyA, true).get(), {}, &page).ok());
  // Streams too.
  v1::GenerateRequest generate;
  generate.set_session_id("anything");
  auto context = As("");
  auto reader = server.stub().Generate(context.get(), generate);
  v1::ChatEvent event;
  while (reader->Read(&event)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
  auto chat_context = As("");
  auto chat = server.stub().Chat(chat_context.get());
  chat->WritesDone();
  while (chat->Read(&event)) {
  }
  EXPECT_EQ(chat->Finish().error_code(), grpc::StatusCode::UNAUTHENTICATED);
}

TEST_F(SecurityTest, TenantsCannotReachEachOthersData) {
  TestServer server(Config());
  v1::Gistmem::Stub& stub = server.stub();
  ASSERT_TRUE(CreateAs(stub, kKeyA, "shared-name").ok());
  ASSERT_TRUE(AppendAs(stub, kKeyA, "shared-name", "The vault code is 7731.").ok());
  // The other tenant sees nothing of it, and may use the same id for its own session.
  v1::GetSessionRequest get;
  get.set_session_id("shared-name");
  v1::Session session;
  EXPECT_EQ(stub.GetSession(As(kKeyB).get(), get, &session).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::ListSessionsResponse page;
  ASSERT_TRUE(stub.ListSessions(As(kKeyB).get(), {}, &page).ok());
  EXPECT_EQ(page.sessions_size(), 0);
  EXPECT_EQ(AppendAs(stub, kKeyB, "shared-name", "hello").error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::ForkSessionRequest fork;
  fork.set_session_id("shared-name");
  EXPECT_EQ(stub.ForkSession(As(kKeyB).get(), fork, &session).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::GetSessionStatsRequest stats_request;
  stats_request.set_session_id("shared-name");
  v1::SessionStats stats;
  EXPECT_EQ(stub.GetSessionStats(As(kKeyB).get(), stats_request, &stats).error_code(),
            grpc::StatusCode::NOT_FOUND);
  v1::DeleteSessionRequest del;
  del.set_session_id("shared-name");
  v1::DeleteSessionResponse deleted;
  EXPECT_EQ(stub.DeleteSession(As(kKeyB).get(), del, &deleted).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(CreateAs(stub, kKeyB, "shared-name").ok());
  ASSERT_TRUE(stub.GetSession(As(kKeyA).get(), get, &session).ok());
  EXPECT_EQ(session.turns(), 2);  // acme's session is untouched

  // Documents: bolt can neither read nor attach acme's.
  v1::PutDocumentRequest put;
  put.set_text("Acme's private price list: widgets cost 12 dollars.");
  v1::Document document;
  ASSERT_TRUE(stub.PutDocument(As(kKeyA).get(), put, &document).ok());
  v1::GetDocumentRequest get_document;
  get_document.set_document_id(document.document_id());
  v1::Document seen;
  EXPECT_EQ(stub.GetDocument(As(kKeyB).get(), get_document, &seen).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(AppendAs(stub, kKeyB, "shared-name", "hi").ok());
  v1::AttachDocumentRequest attach;
  attach.set_session_id("shared-name");
  attach.set_document_id(document.document_id());
  v1::AttachDocumentResponse attached;
  EXPECT_EQ(stub.AttachDocument(As(kKeyB).get(), attach, &attached).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(stub.AttachDocument(As(kKeyA).get(), attach, &attached).ok());

  // After a restart the isolation holds (it is in the store's keys).
  server.Restart();
  EXPECT_EQ(server.stub().GetDocument(As(kKeyB).get(), get_document, &seen).error_code(),
            grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(server.stub().GetSession(As(kKeyA).get(), get, &session).ok());
  EXPECT_EQ(session.turns(), 3);  // the message and the attached document
}

TEST_F(SecurityTest, ATenantOverItsRateIsResourceExhausted) {
  service::ServerConfig config = Config();
  config.tenant_rate_limit = 2;
  TestServer server(config);
  int refused = 0;
  for (int i = 0; i < 8; ++i) {
    v1::ListSessionsResponse page;
    const grpc::Status status = server.stub().ListSessions(As(kKeyA).get(), {}, &page);
    if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
      ++refused;
      EXPECT_NE(status.error_message().find("acme"), std::string::npos);
    }
  }
  EXPECT_GE(refused, 5);
  // Another tenant has its own budget.
  v1::ListSessionsResponse page;
  EXPECT_TRUE(server.stub().ListSessions(As(kKeyB).get(), {}, &page).ok());
}

TEST(TlsTest, TheServerSpeaksTlsWithItsCertificate) {
  TempDir dir;
  const std::filesystem::path cert = dir.path() / "cert.pem", key = dir.path() / "key.pem";
  const std::string make =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
      key.string() + " -out " + cert.string() + " 2>/dev/null";
  ASSERT_EQ(std::system(make.c_str()), 0) << make;
  service::ServerConfig config = TestConfig(dir.path() / "db");
  config.tls_cert = cert;
  config.tls_key = key;
  absl::StatusOr<std::unique_ptr<service::Server>> server = service::Server::Start(config);
  ASSERT_TRUE(server.ok()) << server.status();

  std::ifstream in(cert);
  grpc::SslCredentialsOptions options;
  options.pem_root_certs.assign(std::istreambuf_iterator<char>(in), {});
  auto secure = v1::Gistmem::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::SslCredentials(options)));
  v1::Session session;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  EXPECT_TRUE(secure->CreateSession(&context, {}, &session).ok());

  auto plain = v1::Gistmem::NewStub(
      grpc::CreateChannel((*server)->address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext plain_context;
  plain_context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  EXPECT_FALSE(plain->CreateSession(&plain_context, {}, &session).ok());
  (*server)->Shutdown(absl::Seconds(1));

  config.tls_key = dir.path() / "missing.pem";
  EXPECT_FALSE(service::Server::Start(config).ok());
}

}  // namespace
}  // namespace gistmem::testing
