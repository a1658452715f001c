#include "gateway/identity_rules.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/status_matchers.h"

namespace stella::gateway {
namespace {

using runtime::tls::CertificateIdentity;
using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

CertificateIdentity Identity(const std::string& cn, std::vector<std::string> dns,
                             std::vector<std::string> uris) {
  CertificateIdentity id;
  id.common_name = cn;
  id.subject = "CN=" + cn + ",O=Example";
  id.dns_names = std::move(dns);
  id.uris = std::move(uris);
  for (const std::string& uri : id.uris) {
    if (uri.rfind("spiffe://", 0) == 0 && id.spiffe_id.empty()) {
      id.spiffe_id = uri;
    }
  }
  return id;
}

bool Matches(const std::string& pattern, const CertificateIdentity& id) {
  absl::StatusOr<IdentityPattern> parsed = IdentityPattern::Parse(pattern);
  EXPECT_THAT(parsed, IsOk()) << pattern;
  return parsed.ok() && parsed->Matches(id);
}

TEST(IdentityPatternTest, KindsAndExactMatches) {
  const CertificateIdentity greeter =
      Identity("greeter", {"greeter.prod.example.org"}, {"spiffe://example.org/ns/prod/greeter"});
  EXPECT_TRUE(Matches("spiffe://example.org/ns/prod/greeter", greeter));
  EXPECT_TRUE(Matches("uri:spiffe://example.org/ns/prod/greeter", greeter));
  EXPECT_TRUE(Matches("dns:greeter.prod.example.org", greeter));
  EXPECT_TRUE(Matches("DNS:Greeter.Prod.Example.Org", greeter));  // DNS is case-insensitive
  EXPECT_TRUE(Matches("cn:greeter", greeter));
  EXPECT_FALSE(Matches("cn:billing", greeter));
  EXPECT_FALSE(Matches("uri:spiffe://example.org/ns/prod/billing", greeter));
  // A kind only matches names of that kind: the CN is not a DNS name.
  EXPECT_FALSE(Matches("dns:greeter", greeter));
}

TEST(IdentityPatternTest, WildcardIsOneLabel) {
  const CertificateIdentity a =
      Identity("x", {"a.prod.example.org"}, {"spiffe://example.org/ns/prod/a"});
  const CertificateIdentity deep =
      Identity("x", {"a.b.prod.example.org"}, {"spiffe://example.org/ns/prod/a/b"});
  EXPECT_TRUE(Matches("dns:*.prod.example.org", a));
  EXPECT_FALSE(Matches("dns:*.prod.example.org", deep));
  EXPECT_TRUE(Matches("uri:spiffe://example.org/ns/prod/*", a));
  EXPECT_FALSE(Matches("uri:spiffe://example.org/ns/prod/*", deep));
  EXPECT_FALSE(Matches("uri:spiffe://example.org/ns/staging/*", a));
}

TEST(IdentityPatternTest, BadPatternsAreExplained) {
  EXPECT_THAT(IdentityPattern::Parse("greeter"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("identity pattern \"greeter\" has no kind: write uri:")));
  EXPECT_THAT(IdentityPattern::Parse("dns:a.*.example.org"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("has a misplaced *: it may only stand for a whole leftmost "
                                 "label")));
  EXPECT_THAT(IdentityPattern::Parse("uri:spiffe://example.org/*/greeter"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("whole last path segment")));
  EXPECT_THAT(IdentityPattern::Parse("cn:"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is empty")));
}

TEST(ServiceIdentityRulesTest, DefaultRuleRequiresTheCertificateToNameTheService) {
  ServiceIdentityRules rules;
  EXPECT_THAT(rules.Check("greeter", Identity("other", {"greeter"}, {})), IsOk());
  EXPECT_THAT(
      rules.Check("greeter", Identity("other", {}, {"spiffe://example.org/ns/prod/greeter"})),
      IsOk());
  EXPECT_THAT(rules.Check("greeter", Identity("greeter", {}, {})), IsOk());

  // A greeter certificate claiming to be billing.
  const CertificateIdentity greeter =
      Identity("greeter", {"greeter"}, {"spiffe://example.org/ns/prod/greeter"});
  EXPECT_THAT(
      rules.Check("billing", greeter),
      StatusIs(absl::StatusCode::kPermissionDenied,
               AllOf(HasSubstr("certificate spiffe://example.org/ns/prod/greeter (CN=greeter,"
                               "O=Example; DNS:greeter, URI:spiffe://example.org/ns/prod/greeter) "
                               "may not register service \"billing\""),
                     HasSubstr("by the default rule the certificate must name it itself (SAN DNS "
                               "billing, a SAN URI ending in /billing, or CN=billing)"))));
  // A URI that merely contains the name elsewhere does not count.
  EXPECT_FALSE(
      rules.Check("prod", Identity("x", {}, {"spiffe://example.org/ns/prod/greeter"})).ok());
}

TEST(ServiceIdentityRulesTest, ExplicitRuleReplacesTheDefault) {
  ServiceIdentityRules rules;
  ASSERT_THAT(rules.Add("greeter", {"uri:spiffe://example.org/ns/prod/greeter-sa"}), IsOk());
  ASSERT_THAT(rules.Add("greeter", {"dns:*.greeter.svc"}), IsOk());
  EXPECT_THAT(rules.Check("greeter", Identity("x", {"pod1.greeter.svc"}, {})), IsOk());
  // With a rule, a certificate that merely names the service is not enough.
  EXPECT_THAT(
      rules.Check("greeter", Identity("greeter", {"greeter"}, {})),
      StatusIs(absl::StatusCode::kPermissionDenied,
               HasSubstr("ServiceIdentities allows only "
                         "uri:spiffe://example.org/ns/prod/greeter-sa, dns:*.greeter.svc")));
  EXPECT_THAT(rules.Add("billing", {"billing"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("has no kind")));
}

TEST(CallerPolicyTest, EveryoneByDefault) {
  CallerPolicy policy;
  EXPECT_TRUE(policy.allows_everyone());
  EXPECT_THAT(policy.Check(Identity("anyone", {}, {}), "billing.v1.Billing/Charge"), IsOk());
}

TEST(CallerPolicyTest, PatternsPerIdentity) {
  CallerPolicy policy;
  ASSERT_THAT(policy.Add("uri:spiffe://example.org/ns/prod/frontend",
                         {"greeter.v1.Greeter/*", "billing.v1.Billing/Quote"}),
              IsOk());
  ASSERT_THAT(policy.Add("cn:admin", {"*"}), IsOk());
  const CertificateIdentity frontend =
      Identity("frontend", {}, {"spiffe://example.org/ns/prod/frontend"});
  EXPECT_THAT(policy.Check(frontend, "greeter.v1.Greeter/SayHello"), IsOk());
  EXPECT_THAT(policy.Check(frontend, "billing.v1.Billing/Quote"), IsOk());
  EXPECT_THAT(policy.Check(frontend, "billing.v1.Billing/Charge"),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("caller spiffe://example.org/ns/prod/frontend (CN=frontend,"
                                 "O=Example) may not call billing.v1.Billing/Charge")));
  // "greeter.v1.Greeter/*" does not cover a service whose name merely starts the same way.
  EXPECT_FALSE(policy.Check(frontend, "greeter.v1.GreeterAdmin/Reset").ok());
  EXPECT_THAT(policy.Check(Identity("admin", {}, {}), "billing.v1.Billing/Charge"), IsOk());
  EXPECT_FALSE(policy.Check(Identity("stranger", {}, {}), "greeter.v1.Greeter/SayHello").ok());
  // Admission: any entry naming the caller admits it; nobody else is let in at all.
  EXPECT_THAT(policy.Admit(frontend), IsOk());
  EXPECT_THAT(policy.Admit(Identity("admin", {}, {})), IsOk());
  EXPECT_THAT(policy.Admit(Identity("stranger", {}, {})),
              StatusIs(absl::StatusCode::kPermissionDenied,
                       HasSubstr("caller CN=stranger,O=Example (CN=stranger,O=Example) is named "
                                 "by no CallerPolicy entry, so it may call nothing")));
  EXPECT_THAT(CallerPolicy().Admit(Identity("stranger", {}, {})), IsOk());
}

TEST(CallerPolicyTest, MalformedMethodPatterns) {
  CallerPolicy policy;
  EXPECT_THAT(policy.Add("cn:x", {"greeter.v1.Greeter"}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("method pattern \"greeter.v1.Greeter\" is not")));
  EXPECT_THAT(policy.Add("cn:x", {"greeter.*/Say"}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("is not")));
}

}  // namespace
}  // namespace stella::gateway
