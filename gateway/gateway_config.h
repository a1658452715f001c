// The gateway's configuration file (`stella-gateway --config gateway.yaml`): its sections and
// their defaults. docs/tls.md lists the TLS keys shared with TlsTransport.
#ifndef STELLA_GATEWAY_GATEWAY_CONFIG_H_
#define STELLA_GATEWAY_GATEWAY_CONFIG_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "gateway/identity_rules.h"
#include "runtime/config.h"
#include "runtime/tls/tls_config.h"

namespace stella::gateway {

// Section `Admin:` — the HTTP listener for /healthz, /readyz, /metrics and /routes.
struct AdminConfig {
  std::string listen_address = "127.0.0.1";  // loopback only unless configured
  std::uint16_t port = 9503;
};

// Section `Limits:` — the bounds that keep one peer from taking the gateway's memory.
struct LimitsConfig {
  std::uint32_t max_in_flight_per_service_connection = 1024;  // MaxInFlightPerServiceConnection
  std::uint32_t max_in_flight_per_caller_connection = 1024;   // MaxInFlightPerCallerConnection
  std::uint64_t max_queued_bytes_per_connection = 16u << 20;  // MaxQueuedBytesPerConnection
  std::uint32_t stream_window_bytes = 4u << 20;               // StreamWindowBytes
  absl::Duration default_timeout = absl::Seconds(30);         // DefaultTimeoutMs
  absl::Duration drain_timeout = absl::Seconds(30);           // DrainTimeoutSeconds
};

struct GatewayConfig {
  bool dev_mode = false;
  // GatewayId: names this replica in HELLO_ACK and logs (default: the host name).
  std::string gateway_id;
  // TlsTransport: the service listener (default port 9501).
  runtime::tls::TlsServerConfig services;
  // Callers: the caller listener (default port 9502) with its own certificate and client CA;
  // absent means no caller listener.
  std::optional<runtime::tls::TlsServerConfig> callers;
  AdminConfig admin;
  ServiceIdentityRules service_identities;
  CallerPolicy caller_policy;
  LimitsConfig limits;
};

// Parses a whole gateway file. Every error names file, line and key: unknown sections and keys
// (with the nearest valid one), bad identity or method patterns, a stream window smaller than
// MaxPayloadSize, two listeners on one port, and everything the TLS sections check.
absl::StatusOr<GatewayConfig> ParseGatewayConfig(runtime::ConfigFile& file);

// Reads and parses `path`.
absl::StatusOr<GatewayConfig> LoadGatewayConfig(
    const std::string& path, runtime::EnvLookup env = runtime::ProcessEnvironment());

}  // namespace stella::gateway

#endif  // STELLA_GATEWAY_GATEWAY_CONFIG_H_
