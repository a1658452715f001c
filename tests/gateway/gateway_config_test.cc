#include "gateway/gateway_config.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/status_matchers.h"

namespace stella::gateway {
namespace {

using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::testing::HasSubstr;

absl::StatusOr<GatewayConfig> Parse(const std::string& text) {
  absl::StatusOr<runtime::ConfigFile> file = runtime::ConfigFile::Parse(
      text, "gateway.yaml", [](const std::string&) { return std::nullopt; });
  if (!file.ok()) {
    return file.status();
  }
  return ParseGatewayConfig(*file);
}

constexpr char kFull[] = R"(
GatewayId: gw-eu-1
TlsTransport:
  Port: 9601
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/services-ca.pem
  MaxPayloadSize: 1048576
Callers:
  CertificatePath: /certs/gw-callers.pem
  ClientCaCertificatePath: /certs/callers-ca.pem
Admin:
  ListenAddress: 0.0.0.0
  Port: 9700
ServiceIdentities:
  greeter:
    - uri:spiffe://example.org/ns/prod/greeter
    - dns:*.greeter.svc
  billing: [cn:billing]
CallerPolicy:
  uri:spiffe://example.org/ns/prod/frontend: [greeter.v1.Greeter/*]
  cn:ops: ["*"]
Limits:
  MaxInFlightPerServiceConnection: 500
  MaxInFlightPerCallerConnection: 100
  MaxQueuedBytesPerConnection: 8388608
  StreamWindowBytes: 2097152
  DefaultTimeoutMs: 15000
  DrainTimeoutSeconds: 5
)";

TEST(GatewayConfigTest, EverySection) {
  absl::StatusOr<GatewayConfig> config = Parse(kFull);
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->gateway_id, "gw-eu-1");
  EXPECT_EQ(config->services.port, 9601);
  ASSERT_TRUE(config->callers.has_value());
  EXPECT_EQ(config->callers->port, 9502);  // the caller listener's own default
  EXPECT_EQ(config->callers->tls.trust.ca_path, "/certs/callers-ca.pem");
  EXPECT_EQ(config->admin.listen_address, "0.0.0.0");
  EXPECT_EQ(config->admin.port, 9700);
  EXPECT_EQ(config->limits.max_in_flight_per_service_connection, 500u);
  EXPECT_EQ(config->limits.max_in_flight_per_caller_connection, 100u);
  EXPECT_EQ(config->limits.max_queued_bytes_per_connection, 8388608u);
  EXPECT_EQ(config->limits.stream_window_bytes, 2097152u);
  EXPECT_EQ(config->limits.default_timeout, absl::Seconds(15));
  EXPECT_EQ(config->limits.drain_timeout, absl::Seconds(5));

  runtime::tls::CertificateIdentity greeter;
  greeter.dns_names = {"pod-7.greeter.svc"};
  EXPECT_THAT(config->service_identities.Check("greeter", greeter), IsOk());
  EXPECT_FALSE(config->service_identities.Check("billing", greeter).ok());
  runtime::tls::CertificateIdentity ops;
  ops.common_name = "ops";
  EXPECT_THAT(config->caller_policy.Check(ops, "billing.v1.Billing/Charge"), IsOk());
  EXPECT_FALSE(config->caller_policy.allows_everyone());
}

TEST(GatewayConfigTest, Defaults) {
  absl::StatusOr<GatewayConfig> config = Parse(R"(
TlsTransport:
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/ca.pem
)");
  ASSERT_THAT(config, IsOk());
  EXPECT_FALSE(config->gateway_id.empty());  // the host name
  EXPECT_FALSE(config->callers.has_value());
  EXPECT_EQ(config->admin.listen_address, "127.0.0.1");
  EXPECT_EQ(config->admin.port, 9503);
  EXPECT_TRUE(config->caller_policy.allows_everyone());
  EXPECT_TRUE(config->service_identities.empty());
  EXPECT_EQ(config->limits.stream_window_bytes, 4u << 20);
}

TEST(GatewayConfigTest, MistakesAreNamed) {
  EXPECT_THAT(Parse("Admin:\n  Port: 1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("the TlsTransport section (the service listener) is required")));
  EXPECT_THAT(Parse(std::string(kFull) + "Limts:\n  DefaultTimeoutMs: 1\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Limts: unknown key; did you mean Limits?")));
  EXPECT_THAT(Parse(R"(
TlsTransport:
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/ca.pem
ServiceIdentities:
  greeter: [greeter]
)"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("gateway.yaml:6: ServiceIdentities.greeter: identity pattern "
                                 "\"greeter\" has no kind")));
  EXPECT_THAT(Parse(R"(
TlsTransport:
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/ca.pem
CallerPolicy:
  cn:ops: [billing]
)"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("CallerPolicy.cn:ops: method pattern \"billing\" is not")));
  EXPECT_THAT(Parse(R"(
TlsTransport:
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/ca.pem
Limits:
  StreamWindowBytes: 65536
)"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Limits.StreamWindowBytes: is 65536, smaller than "
                                 "TlsTransport.MaxPayloadSize (4194304)")));
  EXPECT_THAT(Parse(R"(
TlsTransport:
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/ca.pem
Callers:
  Port: 9501
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/ca.pem
)"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("Callers.Port: is 9501, the port of TlsTransport")));
}

}  // namespace
}  // namespace stella::gateway
