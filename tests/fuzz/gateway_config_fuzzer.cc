// libFuzzer target for the YAML configuration loader, through the gateway's whole file parser
// (every section: TlsTransport, Callers, Admin, ServiceIdentities, CallerPolicy, Limits, ...) and
// the TlsClient parser services use. Any text must end in a configuration or an error that names
// the file — never a crash, a hang or an exception escaping yaml-cpp.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
#include "gateway/gateway_config.h"
#include "runtime/config.h"
#include "runtime/tls/tls_config.h"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

constexpr char kFile[] = "fuzz.yaml";

// ${VARS} expand to fixed values (and one is unset) so runs are reproducible.
std::optional<std::string> Env(const std::string& name) {
  if (name == "UNSET") {
    return std::nullopt;
  }
  return name == "PORT" ? "9501" : "/etc/stella/" + name;
}

void CheckError(const absl::Status& status, const char* what) {
  if (!status.ok()) {
    Check(!status.message().empty(), what);
    Check(absl::StrContains(status.message(), kFile), "a configuration error names the file");
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  {
    absl::StatusOr<stella::runtime::ConfigFile> file =
        stella::runtime::ConfigFile::Parse(text, kFile, Env);
    if (!file.ok()) {
      CheckError(file.status(), "a YAML error says why");
      return 0;
    }
    absl::StatusOr<stella::gateway::GatewayConfig> config =
        stella::gateway::ParseGatewayConfig(*file);
    CheckError(config.status(), "a gateway configuration error says why");
  }
  {
    absl::StatusOr<stella::runtime::ConfigFile> file =
        stella::runtime::ConfigFile::Parse(text, kFile, Env);
    Check(file.ok(), "the same text parses twice");
    absl::StatusOr<std::optional<stella::runtime::ConfigSection>> section =
        file->root().Section("TlsClient");
    if (section.ok() && section->has_value()) {
      auto client = stella::runtime::tls::ParseTlsClientConfig(**section, /*dev_mode=*/false);
      CheckError(client.status(), "a TlsClient error says why");
    }
  }
  return 0;
}
