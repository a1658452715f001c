#include "service_sdk/service_config.h"

#include <utility>

namespace stella::sdk {

absl::StatusOr<ServiceSetup> SetUpService(const runtime::tls::TlsClientConfig& config,
                                          std::string service_name) {
  runtime::tls::CertificateProvider::Options provider_options;
  provider_options.tls = runtime::tls::ClientTlsOptions(config);
  provider_options.certificate = config.certificate;
  provider_options.usage = runtime::tls::CertificateUsage::kClient;
  if (!config.skip_server_validation) {
    provider_options.trust = config.tls.trust;
  }
  provider_options.debounce = config.tls.reload_debounce;
  provider_options.poll_interval = config.tls.poll_interval;
  absl::StatusOr<std::unique_ptr<runtime::tls::CertificateProvider>> provider =
      runtime::tls::CertificateProvider::Start(std::move(provider_options));
  if (!provider.ok()) {
    return provider.status();
  }
  ServiceSetup setup;
  setup.provider = *std::move(provider);
  ServiceHostOptions& options = setup.options;
  options.service_name = std::move(service_name);
  options.region = config.region;
  options.version = config.service_version;
  for (const runtime::tls::GatewayEndpoint& gateway : config.gateways) {
    options.gateways.push_back({gateway.host, gateway.port});
  }
  runtime::tls::CertificateProvider* source = setup.provider.get();
  options.tls = [source] { return source->Current(); };
  options.connection.handshake_timeout = config.tls.handshake_timeout;
  options.initial_reconnect_delay = config.initial_reconnect_delay;
  options.max_reconnect_delay = config.max_reconnect_delay;
  return setup;
}

}  // namespace stella::sdk
