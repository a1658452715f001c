#include "runtime/tls/trust.h"

#include <string>
#include <variant>

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
using ::testing::HasSubstr;
using ::testing::MatchesRegex;

class TrustTest : public ::testing::Test {
 protected:
  TrustBundle Trust(RevocationMode mode = RevocationMode::kNoCheck,
                    std::vector<std::string> crls = {}) {
    TrustSource source;
    source.ca_path = ca_path_;
    source.crl_paths = std::move(crls);
    source.revocation_mode = mode;
    absl::StatusOr<TrustBundle> trust = LoadTrust(source);
    EXPECT_THAT(trust, IsOk());
    return *std::move(trust);
  }

  static std::variant<VerifyResult, VerifyFailure> Verify(const TrustBundle& trust,
                                                          const std::vector<X509*>& chain,
                                                          const VerifyOptions& options = {}) {
    return VerifyPeerChain(chain, trust, options);
  }

  static const VerifyFailure& Failure(const std::variant<VerifyResult, VerifyFailure>& result) {
    static const VerifyFailure kNone{VerifyFailureReason::kOther, "(verification succeeded)"};
    const VerifyFailure* failure = std::get_if<VerifyFailure>(&result);
    return failure != nullptr ? *failure : kNone;
  }

  TestPki pki_;
  TempDir dir_;
  std::string ca_path_ = dir_.Write("ca.crt", TestPki::Pem(pki_.root));
};

TEST_F(TrustTest, AcceptsAClientIssuedByTheTrustedCa) {
  auto result = Verify(Trust(), {pki_.client.cert.get()});
  ASSERT_TRUE(std::holds_alternative<VerifyResult>(result)) << Failure(result).sentence;
  const VerifyResult& ok = std::get<VerifyResult>(result);
  EXPECT_EQ(ok.peer.common_name, "greeter");
  EXPECT_EQ(ok.peer.spiffe_id, "spiffe://example.org/ns/prod/greeter");
  EXPECT_FALSE(ok.relied_on_untrusted_root);
}

TEST_F(TrustTest, UsesIntermediatesSentInTheChain) {
  TrustBundle trust = Trust();
  auto with =
      Verify(trust, {pki_.client_via_intermediate.cert.get(), pki_.intermediate.cert.get()});
  EXPECT_TRUE(std::holds_alternative<VerifyResult>(with)) << Failure(with).sentence;
  auto without = Verify(trust, {pki_.client_via_intermediate.cert.get()});
  EXPECT_EQ(Failure(without).reason, VerifyFailureReason::kUnknownIssuer);
}

TEST_F(TrustTest, UnknownCaNamesTheIssuerAndTheBundle) {
  auto result = Verify(Trust(), {pki_.client_other_ca.cert.get()});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kUnknownIssuer);
  EXPECT_THAT(Failure(result).sentence,
              HasSubstr("client certificate rejected: issued by \"CN=Other CA,O=Stella Tests\", "
                        "which is not in the trust bundle ClientCaCertificatePath=" +
                        ca_path_));
  EXPECT_THAT(Failure(result).sentence, HasSubstr("subject \"CN=intruder,O=Stella Tests\""));
}

TEST_F(TrustTest, SelfSignedPeerIsAnUnknownCa) {
  auto result = Verify(Trust(), {pki_.other_ca.cert.get()});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kUnknownIssuer);
  EXPECT_THAT(Failure(result).sentence, HasSubstr("self-signed \"CN=Other CA,O=Stella Tests\""));
}

TEST_F(TrustTest, Expired) {
  auto result = Verify(Trust(), {pki_.client_expired.cert.get()});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kExpired);
  EXPECT_THAT(Failure(result).sentence,
              MatchesRegex("client certificate rejected: it expired at "
                           "[0-9-]+T[0-9:]+Z \\(it is now [0-9-]+T[0-9:]+Z\\): subject "
                           "\"CN=expired,O=Stella Tests\".*the peer must renew it"));
}

TEST_F(TrustTest, NotYetValid) {
  auto result = Verify(Trust(), {pki_.client_not_yet_valid.cert.get()});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kNotYetValid);
  EXPECT_THAT(Failure(result).sentence,
              AllOf(HasSubstr("it is not valid until"), HasSubstr("check the clocks")));
}

TEST_F(TrustTest, RevokedWithRevocationTime) {
  const std::string crl = dir_.Write("root.crl", pki_.crl_pem);
  TrustBundle trust = Trust(RevocationMode::kOffline, {crl});
  auto result = Verify(trust, {pki_.client_revoked.cert.get()});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kRevoked);
  EXPECT_THAT(Failure(result).sentence,
              HasSubstr("client certificate rejected: it was revoked at 2026-09-21T14:13:20Z "
                        "according to the CRL of \"CN=Stella Test Root CA,O=Stella Tests\" "
                        "(CrlPaths=" +
                        crl + ")"));
  // The same CRL does not affect a certificate it does not list.
  EXPECT_TRUE(std::holds_alternative<VerifyResult>(Verify(trust, {pki_.client.cert.get()})));
}

TEST_F(TrustTest, NoCheckIgnoresTheCrl) {
  TrustBundle trust = Trust(RevocationMode::kNoCheck, {dir_.Write("root.crl", pki_.crl_pem)});
  EXPECT_TRUE(
      std::holds_alternative<VerifyResult>(Verify(trust, {pki_.client_revoked.cert.get()})));
}

TEST_F(TrustTest, CaWithoutCrlIsReportedClearly) {
  // Offline, with a CRL only for another CA: the root's certificates cannot be checked.
  absl::StatusOr<std::string> other_crl =
      MintCrl(pki_.other_ca, {}, absl::Now() - absl::Hours(1), absl::Now() + absl::Hours(24));
  ASSERT_THAT(other_crl, IsOk());
  TrustBundle trust = Trust(RevocationMode::kOffline, {dir_.Write("other.crl", *other_crl)});
  auto result = Verify(trust, {pki_.client.cert.get()});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kCrlMissing);
  EXPECT_THAT(Failure(result).sentence,
              HasSubstr("no CRL from \"CN=Stella Test Root CA,O=Stella Tests\", which issued "
                        "\"CN=greeter,O=Stella Tests\", is loaded"));
  EXPECT_THAT(Failure(result).sentence,
              HasSubstr("RevocationMode is Offline, so add that CA's CRL to CrlPaths or set "
                        "RevocationMode: NoCheck"));
}

TEST_F(TrustTest, ExpiredCrl) {
  absl::StatusOr<std::string> stale =
      MintCrl(pki_.root, {}, absl::Now() - absl::Hours(48), absl::Now() - absl::Hours(24));
  ASSERT_THAT(stale, IsOk());
  TrustBundle trust = Trust(RevocationMode::kOffline, {dir_.Write("stale.crl", *stale)});
  auto result = Verify(trust, {pki_.client.cert.get()});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kCrlExpired);
  EXPECT_THAT(Failure(result).sentence, AllOf(HasSubstr("expired at its nextUpdate"),
                                              HasSubstr("publish a fresh CRL from that CA")));
}

TEST_F(TrustTest, ExtraCrlsAreCheckedEvenInNoCheckMode) {
  // What Online mode does with the CRLs it fetched.
  TrustBundle trust = Trust(RevocationMode::kOnline);
  auto fetched = ParseCrls(pki_.crl_pem, "test");
  ASSERT_THAT(fetched, IsOk());
  VerifyOptions options;
  options.extra_crls = {(*fetched)[0].get()};
  options.extra_crl_origin = "http://127.0.0.1:1/root.crl";
  auto result = Verify(trust, {pki_.client_revoked.cert.get()}, options);
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kRevoked);
  EXPECT_THAT(Failure(result).sentence, HasSubstr("(http://127.0.0.1:1/root.crl)"));
}

TEST_F(TrustTest, WrongExtendedKeyUsage) {
  auto result = Verify(Trust(), {pki_.client_server_auth_only.cert.get()});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kWrongUsage);
  EXPECT_THAT(Failure(result).sentence,
              HasSubstr("client certificate rejected: it is not allowed for TLS client "
                        "authentication (clientAuth) by its extended key usage"));
}

TEST_F(TrustTest, ServerNameMismatchListsWhatTheCertificateNames) {
  VerifyOptions options;
  options.peer_usage = CertificateUsage::kServer;
  options.expected_name = "other.internal";
  auto result = Verify(Trust(), {pki_.server.cert.get()}, options);
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kNameMismatch);
  EXPECT_THAT(Failure(result).sentence,
              HasSubstr("server certificate does not match ExpectedServerName \"other.internal\": "
                        "it names DNS:gateway.internal, DNS:localhost, IP:127.0.0.1"));
}

TEST_F(TrustTest, ServerNameMatchesDnsOrIp) {
  TrustBundle trust = Trust();
  VerifyOptions options;
  options.peer_usage = CertificateUsage::kServer;
  for (const char* name : {"gateway.internal", "localhost", "127.0.0.1"}) {
    options.expected_name = name;
    auto result = Verify(trust, {pki_.server.cert.get()}, options);
    EXPECT_TRUE(std::holds_alternative<VerifyResult>(result))
        << name << ": " << Failure(result).sentence;
  }
  options.expected_name = "10.1.2.3";
  EXPECT_EQ(Failure(Verify(trust, {pki_.server.cert.get()}, options)).reason,
            VerifyFailureReason::kNameMismatch);
}

TEST_F(TrustTest, ServerCertificateUsedAsClientIsRefused) {
  // A client certificate presented by a server (or the reverse) fails the usage check.
  VerifyOptions options;
  options.peer_usage = CertificateUsage::kServer;
  auto result = Verify(Trust(), {pki_.client.cert.get()}, options);
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kWrongUsage);
  EXPECT_THAT(Failure(result).sentence, HasSubstr("server certificate rejected"));
}

TEST_F(TrustTest, AllowUntrustedRootAcceptsAnUnknownCaButStillChecksTheRest) {
  TrustBundle trust = Trust();
  VerifyOptions options;
  options.allow_untrusted_root = true;
  auto result = Verify(trust, {pki_.client_other_ca.cert.get()}, options);
  ASSERT_TRUE(std::holds_alternative<VerifyResult>(result)) << Failure(result).sentence;
  EXPECT_TRUE(std::get<VerifyResult>(result).relied_on_untrusted_root);

  // Expiry is still checked.
  CertSpec expired = testing::LeafSpec("old", false, true);
  expired.not_before = absl::Now() - absl::Hours(48);
  expired.not_after = absl::Now() - absl::Hours(24);
  testing::MintedCert old = testing::MustMint(expired, &pki_.other_ca);
  auto expired_result = Verify(trust, {old.cert.get()}, options);
  EXPECT_EQ(Failure(expired_result).reason, VerifyFailureReason::kExpired)
      << Failure(expired_result).sentence;
}

TEST_F(TrustTest, NoPeerCertificate) {
  auto result = Verify(Trust(), {});
  EXPECT_EQ(Failure(result).reason, VerifyFailureReason::kNoPeerCertificate);
  EXPECT_THAT(Failure(result).sentence,
              HasSubstr("client presented no certificate, but RequireClientCertificate is true"));
}

TEST_F(TrustTest, CaDirectoryLoadsEveryBundleFile) {
  dir_.Write("cas/root.pem", TestPki::Pem(pki_.root));
  dir_.Write("cas/other.crt", TestPki::Pem(pki_.other_ca));
  dir_.Write("cas/README", "ignored");
  TrustSource source;
  source.ca_path = dir_.Path("cas");
  absl::StatusOr<TrustBundle> trust = LoadTrust(source);
  ASSERT_THAT(trust, IsOk());
  EXPECT_EQ(trust->cas.size(), 2u);
  EXPECT_TRUE(
      std::holds_alternative<VerifyResult>(Verify(*trust, {pki_.client_other_ca.cert.get()})));
}

TEST_F(TrustTest, LoadErrorsNameTheSetting) {
  TrustSource source;
  EXPECT_THAT(LoadTrust(source), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("ClientCaCertificatePath is not set")));
  source.ca_setting = "ServerCaCertificatePath";
  source.ca_path = dir_.Path("missing.crt");
  EXPECT_THAT(LoadTrust(source),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("ServerCaCertificatePath=" + dir_.Path("missing.crt"))));
  source.ca_path = ca_path_;
  source.revocation_mode = RevocationMode::kOffline;
  EXPECT_THAT(LoadTrust(source), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("RevocationMode is Offline but CrlPaths is "
                                                    "empty")));
  source.crl_paths = {dir_.Write("junk.crl", "not a crl")};
  EXPECT_THAT(LoadTrust(source), StatusIs(absl::StatusCode::kInvalidArgument,
                                          HasSubstr("is neither a PEM nor a DER CRL")));
}

TEST_F(TrustTest, ReasonNamesAreStableLabels) {
  EXPECT_STREQ(VerifyFailureReasonName(VerifyFailureReason::kUnknownIssuer), "unknown_ca");
  EXPECT_STREQ(VerifyFailureReasonName(VerifyFailureReason::kCrlMissing), "crl_missing");
  EXPECT_STREQ(RevocationModeName(RevocationMode::kOnline), "Online");
}

}  // namespace
}  // namespace stella::runtime::tls
