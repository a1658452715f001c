#include "service_sdk/service_config.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/config.h"

namespace stella::sdk {

namespace {

// The provider for a TlsClient section: the client certificate and the gateway's CA, reloaded
// when their files change.
absl::StatusOr<std::unique_ptr<runtime::tls::CertificateProvider>> StartClientProvider(
    const runtime::tls::TlsClientConfig& config) {
  runtime::tls::CertificateProvider::Options provider_options;
  provider_options.tls = runtime::tls::ClientTlsOptions(config);
  provider_options.certificate = config.certificate;
  provider_options.usage = runtime::tls::CertificateUsage::kClient;
  if (!config.skip_server_validation) {
    provider_options.trust = config.tls.trust;
  }
  provider_options.debounce = config.tls.reload_debounce;
  provider_options.poll_interval = config.tls.poll_interval;
  return runtime::tls::CertificateProvider::Start(std::move(provider_options));
}

// Reads `path`'s DevMode and TlsClient section.
absl::StatusOr<runtime::tls::TlsClientConfig> LoadTlsClient(const std::string& path) {
  absl::StatusOr<runtime::ConfigFile> file = runtime::ConfigFile::Load(path);
  if (!file.ok()) {
    return file.status();
  }
  absl::StatusOr<bool> dev_mode = runtime::tls::ReadDevMode(file->root());
  if (!dev_mode.ok()) {
    return dev_mode.status();
  }
  absl::StatusOr<std::optional<runtime::ConfigSection>> section = file->root().Section("TlsClient");
  if (!section.ok()) {
    return section.status();
  }
  if (!section->has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path,
                     ": has no TlsClient: section (the gateways to dial and the "
                     "certificate to present)"));
  }
  return runtime::tls::ParseTlsClientConfig(**section, *dev_mode);
}

}  // namespace

absl::StatusOr<ServiceSetup> SetUpService(const runtime::tls::TlsClientConfig& config,
                                          std::string service_name) {
  absl::StatusOr<std::unique_ptr<runtime::tls::CertificateProvider>> provider =
      StartClientProvider(config);
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

absl::StatusOr<ChannelSetup> SetUpChannel(const runtime::tls::TlsClientConfig& config,
                                          std::string name) {
  absl::StatusOr<std::unique_ptr<runtime::tls::CertificateProvider>> provider =
      StartClientProvider(config);
  if (!provider.ok()) {
    return provider.status();
  }
  ChannelSetup setup;
  setup.provider = *std::move(provider);
  ChannelOptions& options = setup.options;
  options.name = std::move(name);
  options.region = config.region;
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

absl::StatusOr<ChannelSetup> LoadChannelConfig(const std::string& path, std::string name) {
  absl::StatusOr<runtime::tls::TlsClientConfig> config = LoadTlsClient(path);
  if (!config.ok()) {
    return config.status();
  }
  return SetUpChannel(*config, std::move(name));
}

absl::StatusOr<ServiceSetup> LoadServiceConfig(const std::string& path, std::string service_name) {
  absl::StatusOr<runtime::tls::TlsClientConfig> config = LoadTlsClient(path);
  if (!config.ok()) {
    return config.status();
  }
  return SetUpService(*config, std::move(service_name));
}

}  // namespace stella::sdk
