#include "runtime/tls/tls_config.h"

#include <filesystem>
#include <limits>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"
#include "runtime/tls/online_revocation.h"

namespace stella::runtime::tls {
namespace {

constexpr std::int64_t kMaxInt32 = std::numeric_limits<std::int32_t>::max();

absl::Status ReadProtocols(ConfigSection& section, CommonTlsSettings* out) {
  std::vector<std::string> protocols;
  STELLA_RETURN_IF_ERROR(section.Read("AllowedProtocols", &protocols));
  if (!section.Has("AllowedProtocols")) {
    return absl::OkStatus();
  }
  out->allow_tls12 = false;
  out->allow_tls13 = false;
  for (const std::string& protocol : protocols) {
    const std::string lower = absl::AsciiStrToLower(protocol);
    if (lower == "tls12") {
      out->allow_tls12 = true;
    } else if (lower == "tls13") {
      out->allow_tls13 = true;
    } else {
      return section.Error("AllowedProtocols",
                           absl::StrCat("\"", protocol,
                                        "\" is not allowed: only Tls12 and Tls13 are supported "
                                        "(TLS 1.1 and older are insecure)"));
    }
  }
  if (!out->allow_tls12 && !out->allow_tls13) {
    return section.Error("AllowedProtocols", "lists no protocol: write \"Tls12, Tls13\"");
  }
  return absl::OkStatus();
}

absl::Status ReadRevocation(ConfigSection& section, CommonTlsSettings* out) {
  STELLA_RETURN_IF_ERROR(section.Read("CrlPaths", &out->trust.crl_paths));
  out->trust.revocation_mode =
      out->trust.crl_paths.empty() ? RevocationMode::kNoCheck : RevocationMode::kOffline;
  std::string mode;
  STELLA_RETURN_IF_ERROR(section.Read("RevocationMode", &mode));
  if (!mode.empty()) {
    const std::string lower = absl::AsciiStrToLower(mode);
    if (lower == "nocheck") {
      out->trust.revocation_mode = RevocationMode::kNoCheck;
    } else if (lower == "offline") {
      out->trust.revocation_mode = RevocationMode::kOffline;
    } else if (lower == "online") {
      out->trust.revocation_mode = RevocationMode::kOnline;
    } else {
      return section.Error("RevocationMode", absl::StrCat("\"", mode,
                                                          "\" is not a revocation mode: use "
                                                          "NoCheck, Offline or Online"));
    }
  }
  if (out->trust.revocation_mode == RevocationMode::kOffline && out->trust.crl_paths.empty()) {
    return section.Error("RevocationMode",
                         "is Offline, but CrlPaths lists no CRL file: list the CRLs of your CAs "
                         "or use NoCheck");
  }
  std::string failure_mode;
  STELLA_RETURN_IF_ERROR(section.Read("RevocationFailureMode", &failure_mode));
  if (!failure_mode.empty()) {
    const std::string lower = absl::AsciiStrToLower(failure_mode);
    if (lower == "softfail") {
      out->revocation_failure_mode = RevocationFailureMode::kSoftFail;
    } else if (lower == "hardfail") {
      out->revocation_failure_mode = RevocationFailureMode::kHardFail;
    } else {
      return section.Error("RevocationFailureMode",
                           absl::StrCat("\"", failure_mode, "\" is not SoftFail or HardFail"));
    }
  }
  return ReadDuration(section, "CrlFetchTimeoutMs", absl::Milliseconds(1), 1, 600'000,
                      &out->crl_fetch_timeout);
}

absl::Status ReadCommon(ConfigSection& section, CommonTlsSettings* out) {
  STELLA_RETURN_IF_ERROR(ReadProtocols(section, out));
  STELLA_RETURN_IF_ERROR(ReadRevocation(section, out));
  STELLA_RETURN_IF_ERROR(ReadDuration(section, "HandshakeTimeoutSeconds", absl::Seconds(1), 1, 3600,
                                      &out->handshake_timeout));
  STELLA_RETURN_IF_ERROR(ReadDuration(section, "CertificateReloadDebounceMs", absl::Milliseconds(1),
                                      0, 60'000, &out->reload_debounce));
  return ReadDuration(section, "CertificatePollIntervalSeconds", absl::Seconds(1), 0, 86'400,
                      &out->poll_interval);
}

// Refuses a dev switch that is on without DevMode.
absl::Status CheckDevSwitch(ConfigSection& section, const char* key, bool value, bool dev_mode) {
  if (value && !dev_mode) {
    return section.Error(
        key, absl::StrCat("is true, but DevMode is not enabled: this switch turns off "
                          "certificate checks, so it is refused unless the file also "
                          "sets \"DevMode: true\" at the top level (never in production)"));
  }
  return absl::OkStatus();
}

// "host", "host:port" or "[v6 address]:port"; `default_port` when the port is left out.
absl::StatusOr<GatewayEndpoint> ParseHostPort(const std::string& item, std::uint16_t default_port) {
  const auto bad = [&item](absl::string_view why) {
    return absl::InvalidArgumentError(
        absl::StrCat("item \"", item, "\" is not host[:port] (", why, ")"));
  };
  GatewayEndpoint endpoint;
  endpoint.port = default_port;
  std::string port;
  if (absl::StartsWith(item, "[")) {
    const std::size_t close = item.find(']');
    if (close == std::string::npos) {
      return bad("an IPv6 address needs its closing ]");
    }
    endpoint.host = item.substr(1, close - 1);
    if (close + 1 < item.size()) {
      if (item[close + 1] != ':') {
        return bad("expected :port after ]");
      }
      port = item.substr(close + 2);
    }
  } else {
    const std::size_t colon = item.find(':');
    if (colon != std::string::npos && item.find(':', colon + 1) != std::string::npos) {
      return bad("write an IPv6 address as [address]:port");
    }
    endpoint.host = item.substr(0, colon);
    if (colon != std::string::npos) {
      port = item.substr(colon + 1);
    }
  }
  if (endpoint.host.empty()) {
    return bad("the host is empty");
  }
  if (!port.empty() || absl::EndsWith(item, ":")) {
    int value = 0;
    if (!absl::SimpleAtoi(port, &value) || value < 1 || value > 65535) {
      return bad("the port must be a number from 1 to 65535");
    }
    endpoint.port = static_cast<std::uint16_t>(value);
  }
  return endpoint;
}

}  // namespace

absl::StatusOr<bool> ReadDevMode(ConfigSection& root) {
  bool dev_mode = false;
  STELLA_RETURN_IF_ERROR(root.Read("DevMode", &dev_mode));
  return dev_mode;
}

absl::StatusOr<TlsServerConfig> ParseTlsServerConfig(ConfigSection& section, bool dev_mode) {
  TlsServerConfig config;
  STELLA_RETURN_IF_ERROR(section.Read("ListenAddress", &config.listen_address));
  STELLA_RETURN_IF_ERROR(section.ReadInt("Port", 1, 65535, &config.port));
  STELLA_RETURN_IF_ERROR(section.ReadInt("Backlog", 1, 65535, &config.backlog));
  CredentialSource& cert = config.certificate;
  STELLA_RETURN_IF_ERROR(section.Read("CertificatePath", &cert.certificate_path));
  STELLA_RETURN_IF_ERROR(section.Read("CertificateKeyPath", &cert.key_path));
  STELLA_RETURN_IF_ERROR(section.Read("CertificatePassword", &cert.password));
  STELLA_RETURN_IF_ERROR(section.Read("CertificateThumbprint", &cert.thumbprint));
  STELLA_RETURN_IF_ERROR(section.Read("CertificateStorePath", &cert.store_path));
  STELLA_RETURN_IF_ERROR(
      section.Read("RequireClientCertificate", &config.require_client_certificate));
  config.tls.trust.ca_setting = "ClientCaCertificatePath";
  STELLA_RETURN_IF_ERROR(section.Read("ClientCaCertificatePath", &config.tls.trust.ca_path));
  STELLA_RETURN_IF_ERROR(
      section.Read("AllowUntrustedRootCertificates", &config.allow_untrusted_root));
  STELLA_RETURN_IF_ERROR(section.ReadInt("MaxPayloadSize", std::int64_t{64} * 1024, kMaxInt32,
                                         &config.max_payload_size));
  STELLA_RETURN_IF_ERROR(ReadDuration(section, "HeartbeatIntervalMs", absl::Milliseconds(1), 100,
                                      3'600'000, &config.heartbeat_interval));
  STELLA_RETURN_IF_ERROR(ReadCommon(section, &config.tls));
  STELLA_RETURN_IF_ERROR(section.Finish());

  STELLA_RETURN_IF_ERROR(CheckDevSwitch(section, "AllowUntrustedRootCertificates",
                                        config.allow_untrusted_root, dev_mode));
  if (cert.certificate_path.empty() && cert.thumbprint.empty()) {
    return section.Error("CertificatePath",
                         "is required (or CertificateThumbprint with CertificateStorePath): the "
                         "listener needs a certificate");
  }
  if (!cert.thumbprint.empty() && cert.store_path.empty()) {
    return section.Error("CertificateThumbprint", "is set, but CertificateStorePath is not");
  }
  if (config.require_client_certificate && config.tls.trust.ca_path.empty()) {
    return section.Error("ClientCaCertificatePath",
                         "is required while RequireClientCertificate is true: it names the CA "
                         "bundle that issued the clients' certificates");
  }
  return config;
}

absl::StatusOr<TlsClientConfig> ParseTlsClientConfig(ConfigSection& section, bool dev_mode) {
  TlsClientConfig config;
  std::string gateway_host;
  std::uint16_t gateway_port = 9501;
  std::vector<std::string> gateways;
  STELLA_RETURN_IF_ERROR(section.Read("GatewayHost", &gateway_host));
  STELLA_RETURN_IF_ERROR(section.ReadInt("GatewayPort", 1, 65535, &gateway_port));
  STELLA_RETURN_IF_ERROR(section.Read("Gateways", &gateways));
  CredentialSource& cert = config.certificate;
  cert.certificate_setting = "ClientCertificatePath";
  cert.key_setting = "ClientCertificateKeyPath";
  cert.password_setting = "ClientCertificatePassword";
  cert.thumbprint_setting = "ClientCertificateThumbprint";
  cert.store_setting = "ClientCertificateStorePath";
  STELLA_RETURN_IF_ERROR(section.Read("ClientCertificatePath", &cert.certificate_path));
  STELLA_RETURN_IF_ERROR(section.Read("ClientCertificateKeyPath", &cert.key_path));
  STELLA_RETURN_IF_ERROR(section.Read("ClientCertificatePassword", &cert.password));
  STELLA_RETURN_IF_ERROR(section.Read("ClientCertificateThumbprint", &cert.thumbprint));
  STELLA_RETURN_IF_ERROR(section.Read("ClientCertificateStorePath", &cert.store_path));
  STELLA_RETURN_IF_ERROR(section.Read("ExpectedServerName", &config.expected_server_name));
  config.tls.trust.ca_setting = "ServerCaCertificatePath";
  STELLA_RETURN_IF_ERROR(section.Read("ServerCaCertificatePath", &config.tls.trust.ca_path));
  STELLA_RETURN_IF_ERROR(
      section.Read("SkipServerCertificateValidation", &config.skip_server_validation));
  STELLA_RETURN_IF_ERROR(ReadDuration(section, "InitialReconnectDelayMs", absl::Milliseconds(1), 1,
                                      3'600'000, &config.initial_reconnect_delay));
  STELLA_RETURN_IF_ERROR(ReadDuration(section, "MaxReconnectDelayMs", absl::Milliseconds(1), 1,
                                      3'600'000, &config.max_reconnect_delay));
  STELLA_RETURN_IF_ERROR(section.Read("Region", &config.region));
  STELLA_RETURN_IF_ERROR(section.Read("ServiceVersion", &config.service_version));
  STELLA_RETURN_IF_ERROR(ReadCommon(section, &config.tls));
  STELLA_RETURN_IF_ERROR(section.Finish());

  STELLA_RETURN_IF_ERROR(CheckDevSwitch(section, "SkipServerCertificateValidation",
                                        config.skip_server_validation, dev_mode));
  if (!gateways.empty() && !gateway_host.empty()) {
    return section.Error("Gateways",
                         "and GatewayHost are both set: list every gateway under Gateways, or "
                         "name the one gateway with GatewayHost");
  }
  if (gateways.empty() && gateway_host.empty()) {
    return section.Error("GatewayHost",
                         "is required (or Gateways): the host name or address of the gateway");
  }
  if (gateways.empty()) {
    config.gateways.push_back({gateway_host, gateway_port});
  }
  for (const std::string& item : gateways) {
    absl::StatusOr<GatewayEndpoint> endpoint = ParseHostPort(item, gateway_port);
    if (!endpoint.ok()) {
      return section.Error("Gateways", endpoint.status().message());
    }
    config.gateways.push_back(*std::move(endpoint));
  }
  if (cert.certificate_path.empty() && cert.thumbprint.empty()) {
    return section.Error("ClientCertificatePath",
                         "is required (or ClientCertificateThumbprint with "
                         "ClientCertificateStorePath): the gateway requires a client "
                         "certificate");
  }
  if (config.max_reconnect_delay < config.initial_reconnect_delay) {
    return section.Error("MaxReconnectDelayMs",
                         "is smaller than InitialReconnectDelayMs: the backoff could not grow");
  }
  if (config.expected_server_name.empty()) {
    for (const GatewayEndpoint& gateway : config.gateways) {
      if (gateway.host != config.gateways.front().host) {
        return section.Error(
            "Gateways", absl::StrCat("names more than one host (", config.gateways.front().host,
                                     ", ", gateway.host,
                                     "): set ExpectedServerName to the name every gateway's "
                                     "certificate carries"));
      }
    }
    config.expected_server_name = config.gateways.front().host;
  }
  if (config.tls.trust.ca_path.empty() && !config.skip_server_validation) {
    config.tls.trust.ca_path = kSystemCaBundle;
  }
  return config;
}

namespace {

std::shared_ptr<OnlineRevocation> MakeOnlineRevocation(const CommonTlsSettings& tls) {
  if (tls.trust.revocation_mode != RevocationMode::kOnline) {
    return nullptr;
  }
  OnlineRevocation::Options options;
  options.fetch_timeout = tls.crl_fetch_timeout;
  options.hard_fail = tls.revocation_failure_mode == RevocationFailureMode::kHardFail;
  return std::make_shared<OnlineRevocation>(options);
}

// The options both roles take from their CommonTlsSettings.
TlsOptions CommonOptions(TlsRole role, const CommonTlsSettings& tls) {
  TlsOptions options;
  options.role = role;
  options.allow_tls12 = tls.allow_tls12;
  options.allow_tls13 = tls.allow_tls13;
  options.online_revocation = MakeOnlineRevocation(tls);
  return options;
}

}  // namespace

TlsOptions ServerTlsOptions(const TlsServerConfig& config) {
  TlsOptions options = CommonOptions(TlsRole::kServer, config.tls);
  options.require_client_certificate = config.require_client_certificate;
  options.allow_untrusted_root = config.allow_untrusted_root;
  return options;
}

TlsOptions ClientTlsOptions(const TlsClientConfig& config) {
  TlsOptions options = CommonOptions(TlsRole::kClient, config.tls);
  options.expected_server_name = config.expected_server_name;
  options.skip_server_validation = config.skip_server_validation;
  return options;
}

}  // namespace stella::runtime::tls
