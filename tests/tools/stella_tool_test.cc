// The `stella` tool as an operator runs it: `certs dev` mints a PKI whose files the runtime loads
// and whose service certificates pass the gateway's default identity rule; `certs inspect`
// reports names, validity, thumbprints, key match and chain; bad arguments are named.
#include <sys/stat.h>

#include <filesystem>
#include <string>
#include <variant>
#include <vector>

#include "absl/time/clock.h"
#include "gateway/identity_rules.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tls/credentials.h"
#include "runtime/tls/trust.h"
#include "tests/support/status_matchers.h"
#include "tests/support/subprocess.h"
#include "tests/support/temp_dir.h"

namespace stella::tools {
namespace {

namespace tls = runtime::tls;
using ::stella::testing::IsOk;
using ::stella::testing::RunCommand;
using ::stella::testing::StatusIs;
using ::stella::testing::TempDir;
using ::testing::HasSubstr;
using ::testing::Not;

const std::string kStella = std::string(STELLA_BINARY_DIR) + "/stella";

absl::StatusOr<tls::Credentials> Load(const std::string& dir, const std::string& name,
                                      tls::CertificateUsage usage) {
  tls::CredentialSource source;
  source.certificate_path = dir + "/" + name + ".crt";
  source.key_path = dir + "/" + name + ".key";
  return tls::LoadCredentials(source, usage, absl::Now());
}

// Verifies `creds`' chain against DIR/ca.crt the way a listener or a client would.
std::variant<tls::VerifyResult, tls::VerifyFailure> Verify(const std::string& dir,
                                                           const tls::Credentials& creds,
                                                           tls::CertificateUsage usage,
                                                           const std::string& expected_name) {
  tls::TrustSource trust_source;
  trust_source.ca_path = dir + "/ca.crt";
  absl::StatusOr<tls::TrustBundle> trust = tls::LoadTrust(trust_source);
  EXPECT_THAT(trust, IsOk());
  std::vector<X509*> chain;
  for (const auto& cert : creds.chain) {
    chain.push_back(cert.get());
  }
  tls::VerifyOptions options;
  options.peer_usage = usage;
  options.expected_name = expected_name;
  options.now = absl::Now();
  return tls::VerifyPeerChain(chain, *trust, options);
}

std::string FailureOf(const std::variant<tls::VerifyResult, tls::VerifyFailure>& result) {
  return std::holds_alternative<tls::VerifyFailure>(result)
             ? std::get<tls::VerifyFailure>(result).sentence
             : "";
}

class StellaToolTest : public ::testing::Test {
 protected:
  std::string Dev(const std::string& extra = "") {
    std::string out = dir_.Path("pki");
    const auto [code, output] = RunCommand(kStella + " certs dev --out " + out + " " + extra);
    EXPECT_EQ(code, 0) << output;
    return out;
  }

  TempDir dir_;
};

TEST_F(StellaToolTest, DevPkiLoadsChainsAndSatisfiesTheDefaultIdentityRule) {
  const std::string pki = Dev("--services greeter,billing");
  for (const char* file :
       {"ca.crt", "ca.key", "gateway.crt", "gateway.key", "greeter.crt", "greeter.key",
        "billing.crt", "billing.key", "caller.crt", "caller.key", "README"}) {
    EXPECT_TRUE(std::filesystem::exists(pki + "/" + file)) << file;
  }
  // Keys are owner-only from the moment they exist.
  for (const char* key : {"ca.key", "gateway.key", "greeter.key", "caller.key"}) {
    struct stat info {};
    ASSERT_EQ(::stat((pki + "/" + key).c_str(), &info), 0) << key;
    EXPECT_EQ(info.st_mode & 0777, 0600) << key;
  }

  absl::StatusOr<tls::Credentials> gateway = Load(pki, "gateway", tls::CertificateUsage::kServer);
  ASSERT_THAT(gateway, IsOk());
  for (const char* name : {"localhost", "127.0.0.1", "::1"}) {
    EXPECT_EQ(FailureOf(Verify(pki, *gateway, tls::CertificateUsage::kServer, name)), "") << name;
  }
  EXPECT_THAT(FailureOf(Verify(pki, *gateway, tls::CertificateUsage::kServer, "example.org")),
              HasSubstr("example.org"));

  gateway::ServiceIdentityRules default_rule;
  for (const char* service : {"greeter", "billing"}) {
    absl::StatusOr<tls::Credentials> creds = Load(pki, service, tls::CertificateUsage::kClient);
    ASSERT_THAT(creds, IsOk()) << service;
    EXPECT_EQ(FailureOf(Verify(pki, *creds, tls::CertificateUsage::kClient, "")), "") << service;
    EXPECT_THAT(default_rule.Check(service, creds->leaf), IsOk()) << service;
  }
  absl::StatusOr<tls::Credentials> greeter = Load(pki, "greeter", tls::CertificateUsage::kClient);
  ASSERT_THAT(greeter, IsOk());
  EXPECT_THAT(default_rule.Check("billing", greeter->leaf),
              StatusIs(absl::StatusCode::kPermissionDenied));

  absl::StatusOr<tls::Credentials> caller = Load(pki, "caller", tls::CertificateUsage::kClient);
  ASSERT_THAT(caller, IsOk());
  EXPECT_EQ(FailureOf(Verify(pki, *caller, tls::CertificateUsage::kClient, "")), "");
  EXPECT_THAT(default_rule.Check("greeter", caller->leaf), Not(IsOk()));
}

TEST_F(StellaToolTest, DevRefusesToOverwriteAPkiWithoutForce) {
  const std::string pki = Dev();
  const auto [code, output] = RunCommand(kStella + " certs dev --out " + pki);
  EXPECT_EQ(code, 1);
  EXPECT_THAT(output, HasSubstr("already holds a development PKI"));
  EXPECT_THAT(output, HasSubstr("--force"));
  const auto [forced, forced_output] = RunCommand(kStella + " certs dev --force --out " + pki);
  EXPECT_EQ(forced, 0) << forced_output;
}

TEST_F(StellaToolTest, DevMintsEd25519WhenAsked) {
  const std::string pki = Dev("--key-type ed25519");
  absl::StatusOr<tls::Credentials> greeter = Load(pki, "greeter", tls::CertificateUsage::kClient);
  ASSERT_THAT(greeter, IsOk());
  EXPECT_EQ(EVP_PKEY_id(greeter->key.get()), EVP_PKEY_ED25519);
  EXPECT_EQ(FailureOf(Verify(pki, *greeter, tls::CertificateUsage::kClient, "")), "");
}

TEST_F(StellaToolTest, DevNamesWhatIsWrongWithItsArguments) {
  const std::string out = dir_.Path("bad");
  struct Case {
    std::string args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"certs dev", "certs dev needs --out DIR"},
      {"certs dev --out " + out + " --services 'a b'", "service name \"a b\" is not a plain name"},
      {"certs dev --out " + out + " --services ../x", "service name \"../x\" is not a plain name"},
      {"certs dev --out " + out + " --services caller", "would overwrite the PKI's own caller.crt"},
      {"certs dev --out " + out + " --services a,a", "service name \"a\" is listed twice"},
      {"certs dev --out " + out + " --key-type rsa", "--key-type is \"rsa\""},
      {"certs dev --out " + out + " --colour blue", "unknown flag --colour"},
      {"certs mint", "unknown command \"certs mint\""},
  };
  for (const Case& c : cases) {
    const auto [code, output] = RunCommand(kStella + " " + c.args);
    EXPECT_EQ(code, 2) << c.args;
    EXPECT_THAT(output, HasSubstr(c.message)) << c.args;
    EXPECT_THAT(output, HasSubstr("usage:")) << c.args;
  }
  EXPECT_FALSE(std::filesystem::exists(out + "/ca.key"));
}

TEST_F(StellaToolTest, InspectReportsNamesValidityKeyAndChain) {
  const std::string pki = Dev();
  const auto [code, output] = RunCommand(kStella + " certs inspect " + pki + "/greeter.crt --key " +
                                         pki + "/greeter.key --ca " + pki + "/ca.crt");
  EXPECT_EQ(code, 0) << output;
  EXPECT_THAT(output, HasSubstr("subject:      CN=greeter"));
  EXPECT_THAT(output, HasSubstr("issuer:       CN=Stella Development CA"));
  EXPECT_THAT(output, HasSubstr("spiffe://stella.dev/service/greeter"));
  EXPECT_THAT(output, HasSubstr("valid, expires in"));
  EXPECT_THAT(output, HasSubstr("sha256:"));
  EXPECT_THAT(output, HasSubstr("matches the certificate"));
  EXPECT_THAT(output, HasSubstr("chains to a CA in"));

  // A server certificate chains too (the tool tries the usage the certificate has).
  const auto [gateway_code, gateway_output] =
      RunCommand(kStella + " certs inspect " + pki + "/gateway.crt --ca " + pki + "/ca.crt");
  EXPECT_EQ(gateway_code, 0) << gateway_output;
  EXPECT_THAT(gateway_output, HasSubstr("127.0.0.1"));
}

TEST_F(StellaToolTest, InspectSaysWhenTheKeyOrTheCaIsWrong) {
  const std::string pki = Dev();
  const std::string other = dir_.Path("other");
  ASSERT_EQ(RunCommand(kStella + " certs dev --out " + other).exit_code, 0);

  const auto [key_code, key_output] =
      RunCommand(kStella + " certs inspect " + pki + "/greeter.crt --key " + pki + "/caller.key");
  EXPECT_EQ(key_code, 1);
  EXPECT_THAT(key_output, HasSubstr("DOES NOT MATCH"));
  EXPECT_THAT(key_output, HasSubstr("does not match the certificate"));

  const auto [ca_code, ca_output] =
      RunCommand(kStella + " certs inspect " + pki + "/greeter.crt --ca " + other + "/ca.crt");
  EXPECT_EQ(ca_code, 1);
  EXPECT_THAT(ca_output, HasSubstr("chain:          REFUSED"));
  // What the certificate says is printed even when it is refused.
  EXPECT_THAT(ca_output, HasSubstr("subject:      CN=greeter"));
}

TEST_F(StellaToolTest, InspectOfAMissingOrBrokenFileNamesIt) {
  const std::string missing = dir_.Path("nope.crt");
  const auto [missing_code, missing_output] = RunCommand(kStella + " certs inspect " + missing);
  EXPECT_EQ(missing_code, 1);
  EXPECT_THAT(missing_output, HasSubstr(missing));

  const std::string garbage = dir_.Write("garbage.crt", "this is not a certificate\n");
  const auto [garbage_code, garbage_output] = RunCommand(kStella + " certs inspect " + garbage);
  EXPECT_EQ(garbage_code, 1);
  EXPECT_THAT(garbage_output, HasSubstr(garbage + " holds no PEM certificate"));

  const auto [usage_code, usage_output] = RunCommand(kStella + " certs inspect");
  EXPECT_EQ(usage_code, 2);
  EXPECT_THAT(usage_output, HasSubstr("certs inspect needs exactly one FILE"));
}

}  // namespace
}  // namespace stella::tools
