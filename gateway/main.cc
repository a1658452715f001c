// stella-gateway: the gateway process. `stella-gateway --config gateway.yaml`; `--help` lists the
// flags; `--check-config` loads the configuration and its certificates, reports, and exits.
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>
#include <memory>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gateway/admin_server.h"
#include "gateway/gateway.h"
#include "gateway/gateway_config.h"
#include "runtime/tls/certificate_provider.h"
#include "spdlog/spdlog.h"

ABSL_FLAG(std::string, config, "", "Path of the gateway's YAML configuration file (required).");
ABSL_FLAG(bool, check_config, false,
          "Load the configuration and every certificate, report problems, and exit: 0 if all is "
          "well, 2 otherwise.");

namespace stella::gateway {
namespace {

using runtime::tls::CertificateProvider;

// Starts a provider for one listener, reporting reloads to the metrics.
absl::StatusOr<std::unique_ptr<CertificateProvider>> StartProvider(
    const runtime::tls::TlsServerConfig& tls, const std::string& listener,
    const std::shared_ptr<GatewayMetrics>& metrics) {
  CertificateProvider::Options options;
  options.tls = runtime::tls::ServerTlsOptions(tls);
  options.certificate = tls.certificate;
  options.usage = runtime::tls::CertificateUsage::kServer;
  if (!tls.tls.trust.ca_path.empty()) {
    options.trust = tls.tls.trust;
  }
  options.debounce = tls.tls.reload_debounce;
  options.poll_interval = tls.tls.poll_interval;
  options.on_reload = [metrics, listener](const runtime::tls::ReloadEvent& event) {
    metrics->CertificateReloaded(listener, event.status.ok());
  };
  return CertificateProvider::Start(std::move(options));
}

int Run(const std::string& config_path, bool check_only) {
  absl::StatusOr<GatewayConfig> config = LoadGatewayConfig(config_path);
  if (!config.ok()) {
    std::fprintf(stderr, "stella-gateway: %s\n", std::string(config.status().message()).c_str());
    return 2;
  }
  auto metrics = std::make_shared<GatewayMetrics>();
  auto services = StartProvider(config->services, "services", metrics);
  if (!services.ok()) {
    std::fprintf(stderr, "stella-gateway: TlsTransport: %s\n",
                 std::string(services.status().message()).c_str());
    return 2;
  }
  std::unique_ptr<CertificateProvider> callers;
  if (config->callers.has_value()) {
    auto started = StartProvider(*config->callers, "callers", metrics);
    if (!started.ok()) {
      std::fprintf(stderr, "stella-gateway: Callers: %s\n",
                   std::string(started.status().message()).c_str());
      return 2;
    }
    callers = *std::move(started);
  }
  if (check_only) {
    std::printf("%s: configuration OK; service listener %s:%u serves %s\n", config_path.c_str(),
                config->services.listen_address.c_str(), config->services.port,
                (*services)->Current()->credentials().leaf.Describe().c_str());
    return 0;
  }

  boost::asio::io_context io;
  GatewayOptions options;
  options.config = *config;
  options.metrics = metrics;
  CertificateProvider* service_provider = services->get();
  options.service_tls = [service_provider] { return service_provider->Current(); };
  if (callers) {
    CertificateProvider* caller_provider = callers.get();
    options.caller_tls = [caller_provider] { return caller_provider->Current(); };
  }
  auto gateway = Gateway::Start(io, std::move(options));
  if (!gateway.ok()) {
    std::fprintf(stderr, "stella-gateway: %s\n", std::string(gateway.status().message()).c_str());
    return 1;
  }
  Gateway* running = gateway->get();
  AdminSources sources;
  sources.ready = [running] {
    return running->service_port() != 0 ? absl::OkStatus()
                                        : absl::UnavailableError("the service listener is down");
  };
  sources.metrics = [metrics, service_provider, caller_provider = callers.get()] {
    metrics->SetCertificateExpiry("services", service_provider->LeafNotAfter());
    if (caller_provider != nullptr) {
      metrics->SetCertificateExpiry("callers", caller_provider->LeafNotAfter());
    }
    return metrics->Serialize();
  };
  sources.routes = [running] { return RoutesJson(*running->routes().Snapshot()); };
  sources.schema = [running](const std::string& service) {
    return SchemaOf(*running->routes().Snapshot(), service);
  };
  auto admin = AdminServer::Start(io, config->admin, sources);
  if (!admin.ok()) {
    std::fprintf(stderr, "stella-gateway: %s\n", std::string(admin.status().message()).c_str());
    return 1;
  }
  spdlog::info("admin HTTP on {}:{}", config->admin.listen_address, (*admin)->port());

  boost::asio::signal_set signals(io, SIGINT, SIGTERM);
  signals.async_wait([&](const boost::system::error_code& ec, int signal) {
    if (ec) {
      return;
    }
    spdlog::info("received signal {}: draining for up to {}", signal,
                 absl::FormatDuration(config->limits.drain_timeout));
    running->Drain(config->limits.drain_timeout, [&] {
      admin->reset();
      io.stop();
    });
  });
  io.run();
  spdlog::info("stella-gateway stopped");
  return 0;
}

}  // namespace
}  // namespace stella::gateway

int main(int argc, char** argv) {
  // Spelled with a hyphen in the docs, as operators type it; absl flags use underscores.
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--check-config") {
      argv[i] = const_cast<char*>("--check_config");
    }
  }
  absl::FlagsUsageConfig usage;
  usage.contains_help_flags = [](absl::string_view path) {
    return absl::StrContains(path, "gateway/main.cc");
  };
  usage.contains_helpshort_flags = usage.contains_help_flags;
  absl::SetFlagsUsageConfig(usage);
  absl::SetProgramUsageMessage(
      "Stella Router gateway: routes typed RPCs from callers to the services registered with it "
      "over mutual TLS.\nUsage: stella-gateway --config gateway.yaml [--check-config]\nSignals: "
      "SIGTERM "
      "or SIGINT drains (GOAWAY, calls in flight finish within Limits.DrainTimeoutSeconds) and "
      "exits 0.");
  absl::ParseCommandLine(argc, argv);
  const std::string config = absl::GetFlag(FLAGS_config);
  if (config.empty()) {
    std::fprintf(stderr, "stella-gateway: --config is required (see --help)\n");
    return 2;
  }
  return stella::gateway::Run(config, absl::GetFlag(FLAGS_check_config));
}
