// Wiring a `TlsClient:` configuration section into a ServiceHost: the certificate provider (so
// the service's certificate rotates without a restart) and the host options.
#ifndef STELLA_SERVICE_SDK_SERVICE_CONFIG_H_
#define STELLA_SERVICE_SDK_SERVICE_CONFIG_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "runtime/tls/certificate_provider.h"
#include "runtime/tls/tls_config.h"
#include "service_sdk/channel.h"
#include "service_sdk/service_host.h"

namespace stella::sdk {

struct ServiceSetup {
  // Owns the service's TLS snapshots; must outlive the host built from `options`.
  std::unique_ptr<runtime::tls::CertificateProvider> provider;
  ServiceHostOptions options;
};

// Starts the certificate provider for `config` (failing, with the loader's sentence, when the
// certificate or the gateway's CA cannot be loaded) and fills ServiceHostOptions: the gateway
// (Gateways, or GatewayHost:GatewayPort), region and version, reconnect delays, handshake timeout,
// and a TLS source that always takes the provider's current snapshot.
absl::StatusOr<ServiceSetup> SetUpService(const runtime::tls::TlsClientConfig& config,
                                          std::string service_name);

// Reads the service's YAML file at `path` — its `DevMode:` and `TlsClient:` section; other
// top-level sections are left to the application — and calls SetUpService. Errors name the file,
// line and key.
absl::StatusOr<ServiceSetup> LoadServiceConfig(const std::string& path, std::string service_name);

struct ChannelSetup {
  // Owns the caller's TLS snapshots; must outlive the channels built from `options`.
  std::unique_ptr<runtime::tls::CertificateProvider> provider;
  ChannelOptions options;
};

// The same for a caller: a `TlsClient:` section naming the gateways' caller listeners (port 9502)
// and the caller's certificate becomes ChannelOptions. `name` goes to the gateway's logs.
absl::StatusOr<ChannelSetup> SetUpChannel(const runtime::tls::TlsClientConfig& config,
                                          std::string name);
absl::StatusOr<ChannelSetup> LoadChannelConfig(const std::string& path, std::string name);

}  // namespace stella::sdk

#endif  // STELLA_SERVICE_SDK_SERVICE_CONFIG_H_
