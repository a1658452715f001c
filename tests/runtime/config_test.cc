#include "runtime/config.h"

#include <map>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tls/tls_config.h"
#include "tests/support/status_matchers.h"
#include "tests/support/temp_dir.h"

namespace stella::runtime {
namespace {

using ::stella::testing::IsOk;
using ::stella::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using tls::ParseTlsClientConfig;
using tls::ParseTlsServerConfig;
using tls::RevocationMode;

EnvLookup FakeEnv(std::map<std::string, std::string> vars) {
  return [vars = std::move(vars)](const std::string& name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) {
      return std::nullopt;
    }
    return it->second;
  };
}

ConfigFile MustParse(const std::string& text, EnvLookup env = FakeEnv({})) {
  absl::StatusOr<ConfigFile> file = ConfigFile::Parse(text, "gateway.yaml", std::move(env));
  EXPECT_THAT(file, IsOk());
  return *std::move(file);
}

// Parses `text` as file `file_name` and hands its section `name` to `parse` with the file's
// DevMode.
template <typename Config, typename Parse>
absl::StatusOr<Config> ParseSection(const std::string& text, const std::string& file_name,
                                    const char* name, Parse parse, EnvLookup env) {
  absl::StatusOr<ConfigFile> file = ConfigFile::Parse(text, file_name, std::move(env));
  if (!file.ok()) {
    return file.status();
  }
  absl::StatusOr<bool> dev = tls::ReadDevMode(file->root());
  if (!dev.ok()) {
    return dev.status();
  }
  absl::StatusOr<std::optional<ConfigSection>> section = file->root().Section(name);
  if (!section.ok()) {
    return section.status();
  }
  if (!section->has_value()) {
    return absl::NotFoundError(absl::StrCat("no ", name, " section"));
  }
  return parse(**section, *dev);
}

absl::StatusOr<tls::TlsServerConfig> Server(const std::string& text, EnvLookup env = FakeEnv({})) {
  return ParseSection<tls::TlsServerConfig>(text, "gateway.yaml", "TlsTransport",
                                            ParseTlsServerConfig, std::move(env));
}

absl::StatusOr<tls::TlsClientConfig> Client(const std::string& text, EnvLookup env = FakeEnv({})) {
  return ParseSection<tls::TlsClientConfig>(text, "service.yaml", "TlsClient", ParseTlsClientConfig,
                                            std::move(env));
}

TEST(EnvironmentTest, ExpandsVariablesAndDefaults) {
  EnvLookup env = FakeEnv({{"A", "alpha"}, {"EMPTY", ""}});
  EXPECT_EQ(*ExpandEnvironment("x-${A}-y", env), "x-alpha-y");
  EXPECT_EQ(*ExpandEnvironment("${B:-beta}", env), "beta");
  EXPECT_EQ(*ExpandEnvironment("${EMPTY:-fallback}", env), "fallback");
  EXPECT_EQ(*ExpandEnvironment("${A}${A}", env), "alphaalpha");
  EXPECT_EQ(*ExpandEnvironment("no variables", env), "no variables");
  EXPECT_THAT(ExpandEnvironment("${MISSING}", env),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("environment variable MISSING is not set and has no default")));
  EXPECT_THAT(ExpandEnvironment("${A", env),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("without a closing")));
}

// The seed's YAML, as written there (PKCS#12 files and passwords from the environment).
constexpr char kSeedYaml[] = R"(# Gateway TLS configuration
TlsTransport:
  ListenAddress: "0.0.0.0"
  Port: 9501
  CertificatePath: "/etc/stellaops/certs/gateway.pfx"
  CertificatePassword: "${GATEWAY_CERT_PASSWORD}"
  RequireClientCertificate: true
  ClientCaCertificatePath: "/etc/stellaops/certs/client-ca.crt"
  AllowedProtocols: "Tls12, Tls13"
  RevocationMode: "Online"

# Microservice TLS configuration
TlsClient:
  GatewayHost: "gateway.internal"
  GatewayPort: 9501
  ClientCertificatePath: "/etc/stellaops/certs/service.pfx"
  ClientCertificatePassword: "${SERVICE_CERT_PASSWORD}"
  ExpectedServerName: "gateway.stellaops.internal"
)";

TEST(TlsConfigTest, SeedYamlParsesAsWritten) {
  EnvLookup env =
      FakeEnv({{"GATEWAY_CERT_PASSWORD", "gw-pass"}, {"SERVICE_CERT_PASSWORD", "svc-pass"}});
  absl::StatusOr<tls::TlsServerConfig> server = Server(kSeedYaml, env);
  ASSERT_THAT(server, IsOk());
  EXPECT_EQ(server->listen_address, "0.0.0.0");
  EXPECT_EQ(server->port, 9501);
  EXPECT_EQ(server->certificate.certificate_path, "/etc/stellaops/certs/gateway.pfx");
  EXPECT_EQ(server->certificate.password, "gw-pass");
  EXPECT_TRUE(server->require_client_certificate);
  EXPECT_EQ(server->tls.trust.ca_path, "/etc/stellaops/certs/client-ca.crt");
  EXPECT_TRUE(server->tls.allow_tls12);
  EXPECT_TRUE(server->tls.allow_tls13);
  EXPECT_EQ(server->tls.trust.revocation_mode, RevocationMode::kOnline);

  absl::StatusOr<tls::TlsClientConfig> client = Client(kSeedYaml, env);
  ASSERT_THAT(client, IsOk());
  ASSERT_EQ(client->gateways.size(), 1u);
  EXPECT_EQ(client->gateways[0].host, "gateway.internal");
  EXPECT_EQ(client->gateways[0].port, 9501);
  EXPECT_EQ(client->certificate.certificate_path, "/etc/stellaops/certs/service.pfx");
  EXPECT_EQ(client->certificate.password, "svc-pass");
  EXPECT_EQ(client->expected_server_name, "gateway.stellaops.internal");
  EXPECT_EQ(client->tls.trust.ca_path, tls::kSystemCaBundle);  // the seed relies on system trust
}

TEST(TlsConfigTest, UnsetPasswordVariableIsNamed) {
  EXPECT_THAT(Server(kSeedYaml, FakeEnv({})),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("gateway.yaml:6: TlsTransport.CertificatePassword: environment "
                                 "variable GATEWAY_CERT_PASSWORD is not set")));
}

TEST(TlsConfigTest, EveryServerKey) {
  absl::StatusOr<tls::TlsServerConfig> config = Server(R"(
TlsTransport:
  ListenAddress: 127.0.0.1
  Port: 9601
  Backlog: 64
  CertificatePath: /certs/gw.crt
  CertificateKeyPath: /certs/gw.key
  CertificatePassword: pw
  CertificateThumbprint: "AB:CD"
  CertificateStorePath: /store
  RequireClientCertificate: false
  ClientCaCertificatePath: /certs/ca
  AllowedProtocols: [Tls13]
  RevocationMode: Offline
  CrlPaths: [/crl/a.crl, /crl/b.crl]
  RevocationFailureMode: HardFail
  CrlFetchTimeoutMs: 1500
  HandshakeTimeoutSeconds: 3
  MaxPayloadSize: 1048576
  HeartbeatIntervalMs: 2000
  CertificateReloadDebounceMs: 250
  CertificatePollIntervalSeconds: 0
)");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->listen_address, "127.0.0.1");
  EXPECT_EQ(config->port, 9601);
  EXPECT_EQ(config->backlog, 64);
  EXPECT_EQ(config->certificate.key_path, "/certs/gw.key");
  EXPECT_EQ(config->certificate.thumbprint, "AB:CD");
  EXPECT_EQ(config->certificate.store_path, "/store");
  EXPECT_FALSE(config->require_client_certificate);
  EXPECT_FALSE(config->tls.allow_tls12);
  EXPECT_TRUE(config->tls.allow_tls13);
  EXPECT_EQ(config->tls.trust.revocation_mode, RevocationMode::kOffline);
  EXPECT_THAT(config->tls.trust.crl_paths, ElementsAre("/crl/a.crl", "/crl/b.crl"));
  EXPECT_EQ(config->tls.revocation_failure_mode, tls::RevocationFailureMode::kHardFail);
  EXPECT_EQ(config->tls.crl_fetch_timeout, absl::Milliseconds(1500));
  EXPECT_EQ(config->tls.handshake_timeout, absl::Seconds(3));
  EXPECT_EQ(config->max_payload_size, 1048576u);
  EXPECT_EQ(config->heartbeat_interval, absl::Milliseconds(2000));
  EXPECT_EQ(config->tls.reload_debounce, absl::Milliseconds(250));
  EXPECT_EQ(config->tls.poll_interval, absl::ZeroDuration());
}

TEST(TlsConfigTest, DefaultsAndRevocationModeFollowsCrlPaths) {
  absl::StatusOr<tls::TlsServerConfig> config = Server(R"(
TlsTransport:
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/ca.pem
)");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->port, 9501);
  EXPECT_TRUE(config->require_client_certificate);
  EXPECT_EQ(config->tls.trust.revocation_mode, RevocationMode::kNoCheck);
  EXPECT_EQ(config->tls.handshake_timeout, absl::Seconds(10));

  config = Server(R"(
TlsTransport:
  CertificatePath: /certs/gw.pem
  ClientCaCertificatePath: /certs/ca.pem
  CrlPaths: /crl/root.crl
)");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->tls.trust.revocation_mode, RevocationMode::kOffline);
}

TEST(TlsConfigTest, EveryClientKey) {
  absl::StatusOr<tls::TlsClientConfig> config = Client(R"(
TlsClient:
  GatewayHost: 127.0.0.1
  GatewayPort: 9700
  ClientCertificatePath: /c.pem
  ClientCertificateKeyPath: /c.key
  ClientCertificatePassword: ${PW:-default-pw}
  ClientCertificateThumbprint: abc
  ClientCertificateStorePath: /store
  ExpectedServerName: gateway.internal
  ServerCaCertificatePath: /ca.pem
  InitialReconnectDelayMs: 200
  MaxReconnectDelayMs: 10000
  Region: eu-west
  ServiceVersion: 1.4.2
  AllowedProtocols: Tls12
  HandshakeTimeoutSeconds: 4
)");
  ASSERT_THAT(config, IsOk());
  EXPECT_EQ(config->gateways.at(0).port, 9700);
  EXPECT_EQ(config->certificate.password, "default-pw");
  EXPECT_EQ(config->certificate.thumbprint, "abc");
  EXPECT_EQ(config->expected_server_name, "gateway.internal");
  EXPECT_EQ(config->tls.trust.ca_path, "/ca.pem");
  EXPECT_EQ(config->initial_reconnect_delay, absl::Milliseconds(200));
  EXPECT_EQ(config->max_reconnect_delay, absl::Seconds(10));
  EXPECT_EQ(config->region, "eu-west");
  EXPECT_EQ(config->service_version, "1.4.2");
  EXPECT_TRUE(config->tls.allow_tls12);
  EXPECT_FALSE(config->tls.allow_tls13);
  EXPECT_EQ(config->tls.handshake_timeout, absl::Seconds(4));
}

TEST(TlsConfigTest, UnknownKeySuggestsTheNearest) {
  EXPECT_THAT(Server(R"(
TlsTransport:
  CertificatePath: /gw.pem
  ClientCaCertificatePath: /ca.pem
  RequireClientCertificat: true
)"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("gateway.yaml:5: TlsTransport.RequireClientCertificat: unknown "
                                 "key; did you mean RequireClientCertificate?")));
}

TEST(TlsConfigTest, WrongTypesAndRanges) {
  EXPECT_THAT(Server("TlsTransport:\n  Port: 70000\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("gateway.yaml:2: TlsTransport.Port: 70000 is out of range: it "
                                 "must be between 1 and 65535")));
  EXPECT_THAT(Server("TlsTransport:\n  Port: ninety\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TlsTransport.Port: expected a whole number, found \"ninety\"")));
  EXPECT_THAT(Server("TlsTransport:\n  RequireClientCertificate: maybe\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TlsTransport.RequireClientCertificate: expected true or false, "
                                 "found \"maybe\"")));
  EXPECT_THAT(Server("TlsTransport:\n  CertificatePath: [a, b]\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TlsTransport.CertificatePath: expected a single value, found a "
                                 "list")));
  EXPECT_THAT(Server("TlsTransport: 5\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("gateway.yaml:1: TlsTransport: expected a mapping of keys")));
}

TEST(TlsConfigTest, ProtocolsOtherThanTls12And13AreRefused) {
  EXPECT_THAT(Server("TlsTransport:\n  AllowedProtocols: \"Tls11, Tls12\"\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TlsTransport.AllowedProtocols: \"Tls11\" is not allowed: only "
                                 "Tls12 and Tls13 are supported")));
}

TEST(TlsConfigTest, BadRevocationSettings) {
  EXPECT_THAT(Server("TlsTransport:\n  RevocationMode: Sometimes\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("\"Sometimes\" is not a revocation mode: use NoCheck, Offline "
                                 "or Online")));
  EXPECT_THAT(Server("TlsTransport:\n  RevocationMode: Offline\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("is Offline, but CrlPaths lists no CRL file")));
}

TEST(TlsConfigTest, RequiredKeys) {
  EXPECT_THAT(Server("TlsTransport:\n  ClientCaCertificatePath: /ca\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TlsTransport.CertificatePath: is required")));
  EXPECT_THAT(Server("TlsTransport:\n  CertificatePath: /gw.pem\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TlsTransport.ClientCaCertificatePath: is required while "
                                 "RequireClientCertificate is true")));
  EXPECT_THAT(Client("TlsClient:\n  ClientCertificatePath: /c.pem\n"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TlsClient.GatewayHost: is required")));
}

TEST(TlsConfigTest, GatewaysListsEveryReplica) {
  absl::StatusOr<tls::TlsClientConfig> config = Client(R"(
TlsClient:
  Gateways: ["gw.internal:9601", "gw.internal", "[::1]:9701"]
  GatewayPort: 9600
  ExpectedServerName: gateway.internal
  ClientCertificatePath: /c.pem
)");
  ASSERT_THAT(config, IsOk());
  ASSERT_EQ(config->gateways.size(), 3u);
  EXPECT_EQ(config->gateways[0].host, "gw.internal");
  EXPECT_EQ(config->gateways[0].port, 9601);
  EXPECT_EQ(config->gateways[1].port, 9600);  // GatewayPort is the default port of the list
  EXPECT_EQ(config->gateways[2].host, "::1");
  EXPECT_EQ(config->gateways[2].port, 9701);

  absl::StatusOr<tls::TlsClientConfig> one_host = Client(
      "TlsClient:\n  Gateways: a.internal:1, a.internal:2\n  ClientCertificatePath: /c.pem\n");
  ASSERT_THAT(one_host, IsOk());
  EXPECT_EQ(one_host->expected_server_name, "a.internal");
}

TEST(TlsConfigTest, BadGatewaysAreNamed) {
  const auto parse = [](const std::string& gateways) {
    return Client("TlsClient:\n  Gateways: [" + gateways + "]\n  ClientCertificatePath: /c\n");
  };
  EXPECT_THAT(parse("\"gw:http\""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("TlsClient.Gateways: item \"gw:http\" is not host[:port] (the "
                                 "port must be a number from 1 to 65535)")));
  EXPECT_THAT(parse("\"::1:9501\""),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("write an IPv6 address as [address]:port")));
  EXPECT_THAT(parse("\":9501\""),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("the host is empty")));
  EXPECT_THAT(parse("a.internal, b.internal"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("names more than one host (a.internal, b.internal): set "
                                 "ExpectedServerName")));
  EXPECT_THAT(
      Client("TlsClient:\n  Gateways: [a]\n  GatewayHost: b\n  ClientCertificatePath: /c\n"),
      StatusIs(absl::StatusCode::kInvalidArgument,
               HasSubstr("TlsClient.Gateways: and GatewayHost are both set")));
}

TEST(TlsConfigTest, DevSwitchesNeedDevMode) {
  EXPECT_THAT(Server(R"(
TlsTransport:
  CertificatePath: /gw.pem
  ClientCaCertificatePath: /ca.pem
  AllowUntrustedRootCertificates: true
)"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("gateway.yaml:5: TlsTransport.AllowUntrustedRootCertificates: is "
                                 "true, but DevMode is not enabled")));
  EXPECT_THAT(Client(R"(
TlsClient:
  GatewayHost: localhost
  ClientCertificatePath: /c.pem
  SkipServerCertificateValidation: true
)"),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("SkipServerCertificateValidation: is true, but DevMode is not "
                                 "enabled")));
  absl::StatusOr<tls::TlsClientConfig> dev = Client(R"(
DevMode: true
TlsClient:
  GatewayHost: localhost
  ClientCertificatePath: /c.pem
  SkipServerCertificateValidation: true
)");
  ASSERT_THAT(dev, IsOk());
  EXPECT_TRUE(dev->skip_server_validation);
  EXPECT_TRUE(tls::ClientTlsOptions(*dev).skip_server_validation);
}

TEST(ConfigFileTest, YamlSyntaxErrorHasLineAndColumn) {
  EXPECT_THAT(
      ConfigFile::Parse("TlsTransport:\n  Port: [1, 2\n", "gateway.yaml"),
      StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("gateway.yaml:3:1: not valid YAML")));
}

TEST(ConfigFileTest, MissingFile) {
  EXPECT_THAT(ConfigFile::Load("/nonexistent/gateway.yaml"),
              StatusIs(absl::StatusCode::kNotFound,
                       HasSubstr("configuration file: cannot read /nonexistent/gateway.yaml")));
}

TEST(ConfigFileTest, UnknownTopLevelSectionAndKeys) {
  ConfigFile file = MustParse("TlsTransprot:\n  Port: 1\nDevMode: false\n");
  ConfigSection& root = file.root();
  ASSERT_THAT(root.Section("TlsTransport"), IsOk());
  ASSERT_THAT(tls::ReadDevMode(root), IsOk());
  EXPECT_THAT(root.Finish(), StatusIs(absl::StatusCode::kInvalidArgument,
                                      HasSubstr("gateway.yaml:1: TlsTransprot: unknown key; did "
                                                "you mean TlsTransport?")));
  EXPECT_THAT(root.Keys(), ElementsAre("TlsTransprot", "DevMode"));
}

TEST(ConfigFileTest, LoadsFromDisk) {
  testing::TempDir dir;
  const std::string path = dir.Write("g.yaml", "DevMode: true\n");
  absl::StatusOr<ConfigFile> file = ConfigFile::Load(path);
  ASSERT_THAT(file, IsOk());
  absl::StatusOr<bool> dev_mode = tls::ReadDevMode(file->root());
  ASSERT_THAT(dev_mode, IsOk());
  EXPECT_TRUE(*dev_mode);
}

}  // namespace
}  // namespace stella::runtime
