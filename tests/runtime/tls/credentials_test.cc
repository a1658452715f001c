#include "runtime/tls/credentials.h"

#include <cstdlib>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_pki.h"

namespace stella::runtime::tls {
namespace {

using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::stella::testing::TempDir;
using ::stella::testing::TestPki;
using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

class CredentialsTest : public ::testing::Test {
 protected:
  // Writes cert.pem + key.pem for `cert` and returns a source for them.
  CredentialSource PemFiles(const testing::MintedCert& cert, const std::string& password = "") {
    CredentialSource source;
    source.certificate_path = dir_.Write("cert.pem", TestPki::Pem(cert));
    source.key_path = dir_.Write("key.pem", TestPki::KeyPem(cert, password));
    source.password = password;
    return source;
  }

  TestPki pki_;
  TempDir dir_;
};

TEST_F(CredentialsTest, LoadsPemChainAndKeyAndReadsTheIdentity) {
  CredentialSource source;
  source.certificate_path = dir_.Write(
      "chain.pem", TestPki::ChainPem({&pki_.client_via_intermediate, &pki_.intermediate}));
  source.key_path = dir_.Write("key.pem", TestPki::KeyPem(pki_.client_via_intermediate));
  absl::StatusOr<Credentials> creds =
      LoadCredentials(source, CertificateUsage::kClient, absl::Now());
  ASSERT_THAT(creds, IsOk());
  EXPECT_EQ(creds->chain.size(), 2u);
  EXPECT_EQ(creds->leaf.common_name, "billing");
  EXPECT_EQ(creds->leaf.issuer, "CN=Stella Test Intermediate CA,O=Stella Tests");
  EXPECT_EQ(creds->origin, "CertificatePath=" + source.certificate_path);
}

TEST_F(CredentialsTest, IdentityHasSansSpiffeIdAndThumbprint) {
  absl::StatusOr<Credentials> creds =
      LoadCredentials(PemFiles(pki_.client), CertificateUsage::kClient, absl::Now());
  ASSERT_THAT(creds, IsOk());
  EXPECT_EQ(creds->leaf.subject, "CN=greeter,O=Stella Tests");
  EXPECT_THAT(creds->leaf.dns_names, ElementsAre("greeter"));
  EXPECT_EQ(creds->leaf.spiffe_id, "spiffe://example.org/ns/prod/greeter");
  EXPECT_EQ(creds->leaf.sha256_thumbprint, Thumbprint(pki_.client.cert.get(), EVP_sha256()));
  EXPECT_EQ(creds->leaf.sha256_thumbprint.size(), 64u);
  EXPECT_EQ(creds->leaf.DescribeNames(), "DNS:greeter, URI:spiffe://example.org/ns/prod/greeter");
}

TEST_F(CredentialsTest, CertificateAndKeyInOneFile) {
  CredentialSource source;
  source.certificate_path =
      dir_.Write("both.pem", TestPki::Pem(pki_.server) + TestPki::KeyPem(pki_.server));
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kServer, absl::Now()), IsOk());
}

TEST_F(CredentialsTest, PemWithoutKeyAndNoKeyPathIsExplained) {
  CredentialSource source;
  source.certificate_path = dir_.Write("cert.pem", TestPki::Pem(pki_.server));
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("holds no private key and CertificateKeyPath is not set")));
}

TEST_F(CredentialsTest, EncryptedKeyWithItsPassword) {
  EXPECT_THAT(
      LoadCredentials(PemFiles(pki_.server, "s3cret"), CertificateUsage::kServer, absl::Now()),
      IsOk());
}

TEST_F(CredentialsTest, EncryptedKeyWithWrongPassword) {
  CredentialSource source = PemFiles(pki_.server, "s3cret");
  source.password = "guess";
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("wrong password for the encrypted private key in "
                                       "CertificateKeyPath="),
                             HasSubstr("check CertificatePassword"))));
}

TEST_F(CredentialsTest, EncryptedKeyWithoutPassword) {
  CredentialSource source = PemFiles(pki_.server, "s3cret");
  source.password = "";
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is encrypted, but CertificatePassword is empty")));
}

TEST_F(CredentialsTest, KeyThatDoesNotMatchTheCertificate) {
  CredentialSource source;
  source.certificate_path = dir_.Write("cert.pem", TestPki::Pem(pki_.server));
  source.key_path = dir_.Write("key.pem", TestPki::KeyPem(pki_.client));
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("the private key does not match the certificate"),
                             HasSubstr("subject \"CN=gateway.internal,O=Stella Tests\""))));
}

TEST_F(CredentialsTest, ExpiredLeaf) {
  EXPECT_THAT(
      LoadCredentials(PemFiles(pki_.client_expired), CertificateUsage::kClient, absl::Now()),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("expired at"), HasSubstr("renew it"), HasSubstr("CN=expired"))));
}

TEST_F(CredentialsTest, NotYetValidLeaf) {
  EXPECT_THAT(
      LoadCredentials(PemFiles(pki_.client_not_yet_valid), CertificateUsage::kClient, absl::Now()),
      StatusIs(absl::StatusCode::kFailedPrecondition,
               AllOf(HasSubstr("is not valid until"), HasSubstr("CN=future"))));
}

TEST_F(CredentialsTest, LeafWithoutTheNeededUsage) {
  EXPECT_THAT(LoadCredentials(PemFiles(pki_.client_server_auth_only), CertificateUsage::kClient,
                              absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("needs the extended key usage clientAuth but lists serverAuth")));
  EXPECT_THAT(LoadCredentials(PemFiles(pki_.client), CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       HasSubstr("needs the extended key usage serverAuth but lists clientAuth")));
}

TEST_F(CredentialsTest, MissingFileNamesTheSetting) {
  CredentialSource source;
  source.certificate_setting = "ClientCertificatePath";
  source.certificate_path = dir_.Path("nope.pem");
  EXPECT_THAT(
      LoadCredentials(source, CertificateUsage::kClient, absl::Now()),
      StatusIs(absl::StatusCode::kNotFound,
               HasSubstr("ClientCertificatePath=" + dir_.Path("nope.pem") + ": cannot read")));
}

TEST_F(CredentialsTest, GarbageCertificateFile) {
  CredentialSource source;
  source.certificate_path = dir_.Write("bad.pem",
                                       "-----BEGIN CERTIFICATE-----\nnot base64\n"
                                       "-----END CERTIFICATE-----\n");
  source.key_path = dir_.Write("key.pem", TestPki::KeyPem(pki_.server));
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("certificate number 1 is not a valid PEM certificate")));
}

TEST_F(CredentialsTest, NothingConfigured) {
  EXPECT_THAT(LoadCredentials(CredentialSource{}, CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("no certificate configured: set CertificatePath or "
                                 "CertificateThumbprint")));
}

TEST_F(CredentialsTest, LegacyPkcs12) {
  absl::StatusOr<std::string> p12 = MintLegacyPkcs12(pki_.client_via_intermediate.cert.get(),
                                                     pki_.client_via_intermediate.key.get(),
                                                     {pki_.intermediate.cert.get()}, "p12pass");
  ASSERT_THAT(p12, IsOk());
  CredentialSource source;
  source.certificate_path = dir_.Write("client.p12", *p12);
  source.password = "p12pass";
  absl::StatusOr<Credentials> creds =
      LoadCredentials(source, CertificateUsage::kClient, absl::Now());
  ASSERT_THAT(creds, IsOk());
  EXPECT_EQ(creds->leaf.common_name, "billing");
  ASSERT_EQ(creds->chain.size(), 2u);

  source.password = "wrong";
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kClient, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("wrong password for the PKCS#12 file CertificatePath=")));
}

// Modern PKCS#12 (AES-256-CBC, PBKDF2-SHA256, SHA-256 MAC) as OpenSSL 3 writes it by default. The
// openssl command line tool runs as a separate process; nothing of OpenSSL 3 enters this one.
TEST_F(CredentialsTest, ModernPkcs12FromOpenSsl3) {
  const std::string cert = dir_.Write("c.pem", TestPki::Pem(pki_.client));
  const std::string key = dir_.Write("k.pem", TestPki::KeyPem(pki_.client));
  const std::string out = dir_.Path("modern.p12");
  const std::string cmd = "openssl pkcs12 -export -in " + cert + " -inkey " + key + " -out " + out +
                          " -passout pass:m0dern -keypbe AES-256-CBC -certpbe AES-256-CBC "
                          "-macalg sha256 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  CredentialSource source;
  source.certificate_path = out;
  source.password = "m0dern";
  absl::StatusOr<Credentials> creds =
      LoadCredentials(source, CertificateUsage::kClient, absl::Now());
  ASSERT_THAT(creds, IsOk());
  EXPECT_EQ(creds->leaf.common_name, "greeter");

  source.password = "nope";
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kClient, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("wrong password")));
}

TEST_F(CredentialsTest, ThumbprintLookupInStore) {
  dir_.Write("store/other.pem", TestPki::Pem(pki_.client) + TestPki::KeyPem(pki_.client));
  dir_.Write("store/gateway.crt", TestPki::Pem(pki_.server));
  dir_.Write("store/gateway.key", TestPki::KeyPem(pki_.server));
  dir_.Write("store/notes.txt", "not a certificate");
  CredentialSource source;
  source.store_path = dir_.Path("store");

  // SHA-256, lower case with colons, as a person might paste it.
  std::string sha256 = Thumbprint(pki_.server.cert.get(), EVP_sha256());
  std::string typed;
  for (std::size_t i = 0; i < sha256.size(); i += 2) {
    typed += (i ? ":" : "") + sha256.substr(i, 2);
  }
  for (char& c : typed) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  source.thumbprint = typed;
  absl::StatusOr<Credentials> creds =
      LoadCredentials(source, CertificateUsage::kServer, absl::Now());
  ASSERT_THAT(creds, IsOk());
  EXPECT_EQ(creds->leaf.common_name, "gateway.internal");
  EXPECT_THAT(creds->origin, HasSubstr("gateway.crt"));

  // SHA-1 of a PEM file holding both certificate and key.
  source.thumbprint = Thumbprint(pki_.client.cert.get(), EVP_sha1());
  creds = LoadCredentials(source, CertificateUsage::kClient, absl::Now());
  ASSERT_THAT(creds, IsOk());
  EXPECT_EQ(creds->leaf.common_name, "greeter");
}

TEST_F(CredentialsTest, ThumbprintLookupInStoreFindsPkcs12) {
  absl::StatusOr<std::string> p12 =
      MintLegacyPkcs12(pki_.client.cert.get(), pki_.client.key.get(), {}, "pw");
  ASSERT_THAT(p12, IsOk());
  dir_.Write("store/greeter.pfx", *p12);
  CredentialSource source;
  source.store_path = dir_.Path("store");
  source.password = "pw";
  source.thumbprint = Thumbprint(pki_.client.cert.get(), EVP_sha256());
  absl::StatusOr<Credentials> creds =
      LoadCredentials(source, CertificateUsage::kClient, absl::Now());
  ASSERT_THAT(creds, IsOk());
  EXPECT_EQ(creds->leaf.common_name, "greeter");
}

TEST_F(CredentialsTest, ThumbprintNotInStore) {
  dir_.Write("store/gateway.pem", TestPki::Pem(pki_.server) + TestPki::KeyPem(pki_.server));
  CredentialSource source;
  source.store_path = dir_.Path("store");
  source.thumbprint = std::string(64, 'A');
  EXPECT_THAT(
      LoadCredentials(source, CertificateUsage::kServer, absl::Now()),
      StatusIs(absl::StatusCode::kNotFound,
               AllOf(HasSubstr("no certificate with SHA-256 thumbprint " + std::string(64, 'A')),
                     HasSubstr("1 certificate file(s) searched"))));
}

TEST_F(CredentialsTest, MalformedThumbprint) {
  CredentialSource source;
  source.store_path = dir_.path();
  source.thumbprint = "12:34:zz";
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("CertificateThumbprint: thumbprint \"12:34:zz\" has the "
                                 "character 'z', which is not a hex digit")));
  source.thumbprint = "abcd";
  EXPECT_THAT(LoadCredentials(source, CertificateUsage::kServer, absl::Now()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has 4 hex digits")));
}

TEST_F(CredentialsTest, FilesToWatch) {
  CredentialSource source;
  source.certificate_path = "/a/cert.pem";
  source.key_path = "/b/key.pem";
  EXPECT_THAT(CredentialFiles(source), ElementsAre("/a/cert.pem", "/b/key.pem"));
  source.thumbprint = "AB";
  source.store_path = "/store";
  EXPECT_THAT(CredentialFiles(source), ElementsAre("/store"));
}

}  // namespace
}  // namespace stella::runtime::tls
