// The TLS configuration sections, with the seed's key names: `TlsTransport:` for a listener (the
// gateway), `TlsClient:` for a peer that dials the gateway (a service or caller). docs/tls.md
// lists every key with its default.
#ifndef STELLA_RUNTIME_TLS_TLS_CONFIG_H_
#define STELLA_RUNTIME_TLS_TLS_CONFIG_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/config.h"
#include "runtime/tls/credentials.h"
#include "runtime/tls/tls_context.h"
#include "runtime/tls/trust.h"

namespace stella::runtime::tls {

// The system CA bundle, used as ServerCaCertificatePath when none is configured.
inline constexpr char kSystemCaBundle[] = "/etc/ssl/certs/ca-certificates.crt";

// Online revocation: what to do when a CRL cannot be fetched.
enum class RevocationFailureMode {
  kSoftFail,  // accept the peer and log a warning (default: an unreachable CDP is no outage)
  kHardFail,  // refuse the peer
};

// Settings both sections share.
struct CommonTlsSettings {
  bool allow_tls12 = true;
  bool allow_tls13 = true;
  TrustSource trust;
  absl::Duration handshake_timeout = absl::Seconds(10);
  absl::Duration crl_fetch_timeout = absl::Seconds(5);
  RevocationFailureMode revocation_failure_mode = RevocationFailureMode::kSoftFail;
  // Certificate rotation: bursts of file events within this window make one reload; files are
  // also re-read every poll interval, for file systems without inotify (0 disables polling).
  absl::Duration reload_debounce = absl::Milliseconds(500);
  absl::Duration poll_interval = absl::Seconds(60);
};

// Section `TlsTransport:` — the gateway's service listener.
struct TlsServerConfig {
  std::string listen_address = "0.0.0.0";
  std::uint16_t port = 9501;
  int backlog = 1024;
  CredentialSource certificate;
  bool require_client_certificate = true;
  bool allow_untrusted_root = false;  // AllowUntrustedRootCertificates, DevMode only
  std::uint32_t max_payload_size = 4u << 20;
  absl::Duration heartbeat_interval = absl::Seconds(5);
  CommonTlsSettings tls;
};

// Section `TlsClient:` — a service's (or caller's) connection to the gateway.
// One gateway a service dials: its service listener.
struct GatewayEndpoint {
  std::string host;
  std::uint16_t port = 9501;
};

struct TlsClientConfig {
  // Every gateway replica to keep a connection to: the `Gateways:` list ("host[:port]" items), or
  // the one GatewayHost/GatewayPort.
  std::vector<GatewayEndpoint> gateways;
  CredentialSource certificate;
  // Defaults to the gateways' host when they share one.
  std::string expected_server_name;
  bool skip_server_validation = false;  // SkipServerCertificateValidation, DevMode only
  absl::Duration initial_reconnect_delay = absl::Seconds(1);
  absl::Duration max_reconnect_delay = absl::Seconds(30);
  std::string region;
  std::string service_version;
  CommonTlsSettings tls;
};

// Reads the top-level `DevMode:` (default false).
absl::StatusOr<bool> ReadDevMode(ConfigSection& root);

// Parse a section; `dev_mode` is the file's DevMode. Every error names file, line and key: an
// unknown key, a wrong type, a value out of range, a protocol other than Tls12/Tls13, an unknown
// RevocationMode, a dev switch without DevMode, a missing required key.
absl::StatusOr<TlsServerConfig> ParseTlsServerConfig(ConfigSection& section, bool dev_mode);
absl::StatusOr<TlsClientConfig> ParseTlsClientConfig(ConfigSection& section, bool dev_mode);

// The TlsContext options these sections describe.
TlsOptions ServerTlsOptions(const TlsServerConfig& config);
TlsOptions ClientTlsOptions(const TlsClientConfig& config);

}  // namespace stella::runtime::tls

#endif  // STELLA_RUNTIME_TLS_TLS_CONFIG_H_
