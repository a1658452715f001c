#include "gateway/gateway_config.h"

#include <unistd.h>

#include <algorithm>
#include <limits>

#include "absl/strings/str_cat.h"
#include "runtime/status_macros.h"

namespace stella::gateway {
namespace {

using runtime::ConfigSection;

constexpr std::int64_t kMaxUint32 = std::numeric_limits<std::uint32_t>::max();

std::string HostName() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') {
    return "stella-gateway";
  }
  return name;
}

absl::Status ParseAdmin(ConfigSection& section, AdminConfig* out) {
  STELLA_RETURN_IF_ERROR(section.Read("ListenAddress", &out->listen_address));
  STELLA_RETURN_IF_ERROR(section.ReadInt("Port", 1, 65535, &out->port));
  return section.Finish();
}

absl::Status ParseLimits(ConfigSection& section, LimitsConfig* out) {
  STELLA_RETURN_IF_ERROR(section.ReadInt("MaxInFlightPerServiceConnection", 1, 1'000'000,
                                         &out->max_in_flight_per_service_connection));
  STELLA_RETURN_IF_ERROR(section.ReadInt("MaxInFlightPerCallerConnection", 1, 1'000'000,
                                         &out->max_in_flight_per_caller_connection));
  STELLA_RETURN_IF_ERROR(section.ReadInt("MaxQueuedBytesPerConnection", std::int64_t{64} << 10,
                                         std::int64_t{1} << 34,
                                         &out->max_queued_bytes_per_connection));
  STELLA_RETURN_IF_ERROR(section.ReadInt("StreamWindowBytes", std::int64_t{64} << 10,
                                         kMaxUint32 >> 1, &out->stream_window_bytes));
  STELLA_RETURN_IF_ERROR(runtime::ReadDuration(section, "DefaultTimeoutMs", absl::Milliseconds(1),
                                               1, 86'400'000, &out->default_timeout));
  STELLA_RETURN_IF_ERROR(runtime::ReadDuration(section, "DrainTimeoutSeconds", absl::Seconds(1), 0,
                                               3600, &out->drain_timeout));
  return section.Finish();
}

// ServiceIdentities: { service: [pattern, ...] }
absl::Status ParseServiceIdentities(ConfigSection& section, ServiceIdentityRules* out) {
  for (const std::string& service : section.Keys()) {
    std::vector<std::string> patterns;
    STELLA_RETURN_IF_ERROR(section.Read(service, &patterns));
    if (patterns.empty()) {
      return section.Error(service, "lists no identity: remove the entry to use the default rule");
    }
    if (absl::Status status = out->Add(service, patterns); !status.ok()) {
      return section.Error(service, status.message());
    }
  }
  return absl::OkStatus();
}

// CallerPolicy: { identity pattern: [method pattern, ...] }
absl::Status ParseCallerPolicy(ConfigSection& section, CallerPolicy* out) {
  for (const std::string& identity : section.Keys()) {
    std::vector<std::string> methods;
    STELLA_RETURN_IF_ERROR(section.Read(identity, &methods));
    if (absl::Status status = out->Add(identity, methods); !status.ok()) {
      return section.Error(identity, status.message());
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<GatewayConfig> ParseGatewayConfig(runtime::ConfigFile& file) {
  GatewayConfig config;
  ConfigSection& root = file.root();
  absl::StatusOr<bool> dev_mode = runtime::tls::ReadDevMode(root);
  if (!dev_mode.ok()) {
    return dev_mode.status();
  }
  config.dev_mode = *dev_mode;
  STELLA_RETURN_IF_ERROR(root.Read("GatewayId", &config.gateway_id));
  if (config.gateway_id.empty()) {
    config.gateway_id = HostName();
  }

  absl::StatusOr<std::optional<ConfigSection>> services = root.Section("TlsTransport");
  if (!services.ok()) {
    return services.status();
  }
  if (!services->has_value()) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.name(), ": the TlsTransport section (the service listener) is required"));
  }
  absl::StatusOr<runtime::tls::TlsServerConfig> service_tls =
      runtime::tls::ParseTlsServerConfig(**services, config.dev_mode);
  if (!service_tls.ok()) {
    return service_tls.status();
  }
  config.services = *std::move(service_tls);

  absl::StatusOr<std::optional<ConfigSection>> callers = root.Section("Callers");
  if (!callers.ok()) {
    return callers.status();
  }
  if (callers->has_value()) {
    const bool port_set = (*callers)->Has("Port");
    absl::StatusOr<runtime::tls::TlsServerConfig> caller_tls =
        runtime::tls::ParseTlsServerConfig(**callers, config.dev_mode);
    if (!caller_tls.ok()) {
      return caller_tls.status();
    }
    if (!port_set) {
      caller_tls->port = 9502;
    }
    if (caller_tls->port == config.services.port) {
      return (*callers)->Error("Port", absl::StrCat("is ", caller_tls->port,
                                                    ", the port of TlsTransport: the caller and "
                                                    "service listeners need ports of their own"));
    }
    config.callers = *std::move(caller_tls);
  }

  absl::StatusOr<std::optional<ConfigSection>> admin = root.Section("Admin");
  if (!admin.ok()) {
    return admin.status();
  }
  if (admin->has_value()) {
    STELLA_RETURN_IF_ERROR(ParseAdmin(**admin, &config.admin));
  }

  absl::StatusOr<std::optional<ConfigSection>> identities = root.Section("ServiceIdentities");
  if (!identities.ok()) {
    return identities.status();
  }
  if (identities->has_value()) {
    STELLA_RETURN_IF_ERROR(ParseServiceIdentities(**identities, &config.service_identities));
  }

  absl::StatusOr<std::optional<ConfigSection>> policy = root.Section("CallerPolicy");
  if (!policy.ok()) {
    return policy.status();
  }
  if (policy->has_value()) {
    STELLA_RETURN_IF_ERROR(ParseCallerPolicy(**policy, &config.caller_policy));
  }

  absl::StatusOr<std::optional<ConfigSection>> limits = root.Section("Limits");
  if (!limits.ok()) {
    return limits.status();
  }
  if (limits->has_value()) {
    STELLA_RETURN_IF_ERROR(ParseLimits(**limits, &config.limits));
    if (config.limits.stream_window_bytes < config.services.max_payload_size) {
      return (*limits)->Error("StreamWindowBytes",
                              absl::StrCat("is ", config.limits.stream_window_bytes,
                                           ", smaller than TlsTransport.MaxPayloadSize (",
                                           config.services.max_payload_size,
                                           "): a frame of the largest size could never be sent"));
    }
  } else {
    config.limits.stream_window_bytes =
        std::max(config.limits.stream_window_bytes, config.services.max_payload_size);
  }
  const std::uint16_t admin_port = config.admin.port;
  if (admin_port == config.services.port ||
      (config.callers && admin_port == config.callers->port)) {
    return absl::InvalidArgumentError(
        absl::StrCat(file.name(), ": Admin.Port ", admin_port, " is also a TLS listener's port"));
  }
  STELLA_RETURN_IF_ERROR(root.Finish());
  return config;
}

absl::StatusOr<GatewayConfig> LoadGatewayConfig(const std::string& path, runtime::EnvLookup env) {
  absl::StatusOr<runtime::ConfigFile> file = runtime::ConfigFile::Load(path, std::move(env));
  if (!file.ok()) {
    return file.status();
  }
  return ParseGatewayConfig(*file);
}

}  // namespace stella::gateway
