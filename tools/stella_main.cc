// stella: the operator's tool.
//   stella certs dev --out DIR [--services greeter,billing] [--key-type ecdsa-p256|ed25519]
//   [--force] stella certs inspect FILE [--key KEY] [--ca CA_BUNDLE] [--password PW]
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "runtime/tls/cert_builder.h"
#include "runtime/tls/credentials.h"
#include "runtime/tls/trust.h"
#include "runtime/tls/x509.h"

namespace {

namespace tls = stella::runtime::tls;

constexpr char kUsage[] =
    "usage:\n"
    "  stella certs dev --out DIR [--services greeter,billing] [--key-type ecdsa-p256|ed25519]\n"
    "                   [--force]\n"
    "      Mints a development PKI: a CA, a gateway certificate for localhost/127.0.0.1/::1, one\n"
    "      certificate per service named the way the gateway's default identity rule expects,\n"
    "      and a caller certificate. PEM files and a README in DIR. Not for production.\n"
    "  stella certs inspect FILE [--key KEY] [--ca CA_BUNDLE] [--password PW]\n"
    "      Prints what a certificate (PEM chain or PKCS#12) says, and whether it matches KEY and\n"
    "      chains to CA_BUNDLE.\n";

int Usage(const std::string& problem) {
  std::fprintf(stderr, "stella: %s\n\n%s", problem.c_str(), kUsage);
  return 2;
}

// --flag value pairs and positional arguments after the subcommand.
struct Args {
  std::map<std::string, std::string> flags;
  std::vector<std::string> positional;
};

absl::StatusOr<Args> ParseArgs(int argc, char** argv, int first,
                               const std::vector<std::string>& known,
                               const std::vector<std::string>& switches) {
  Args args;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      args.positional.push_back(arg);
      continue;
    }
    std::string value;
    const std::size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    const std::string name = arg.substr(2);
    if (std::find(switches.begin(), switches.end(), name) != switches.end()) {
      args.flags[name] = "true";
      continue;
    }
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg));
    }
    if (eq == std::string::npos) {
      if (i + 1 >= argc) {
        return absl::InvalidArgumentError(absl::StrCat(arg, " needs a value"));
      }
      value = argv[++i];
    }
    args.flags[name] = value;
  }
  return args;
}

// Writes `text` to `path`, replacing it. A secret (a private key) is created owner-only (0600)
// before a byte of it is written, and an existing file is narrowed to 0600 first.
absl::Status WriteFile(const std::filesystem::path& path, const std::string& text, bool secret) {
  const int fd =
      ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, secret ? 0600 : 0644);
  if (fd < 0) {
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", path.string(), ": ", std::strerror(errno)));
  }
  if (secret && ::fchmod(fd, 0600) != 0) {
    const int error = errno;
    ::close(fd);
    return absl::PermissionDeniedError(
        absl::StrCat("cannot make ", path.string(), " owner-only: ", std::strerror(error)));
  }
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n <= 0) {
      const int error = errno;
      ::close(fd);
      return absl::DataLossError(
          absl::StrCat("cannot write ", path.string(), ": ", std::strerror(error)));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) {
    return absl::DataLossError(
        absl::StrCat("cannot write ", path.string(), ": ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::Status WritePair(const std::filesystem::path& dir, const std::string& name,
                       const tls::MintedCert& cert, const std::vector<X509*>& chain = {}) {
  absl::StatusOr<std::string> pem = tls::CertificateToPem(cert.cert.get());
  if (!pem.ok()) {
    return pem.status();
  }
  std::string text = *pem;
  for (X509* extra : chain) {
    absl::StatusOr<std::string> more = tls::CertificateToPem(extra);
    if (!more.ok()) {
      return more.status();
    }
    text += *more;
  }
  absl::StatusOr<std::string> key = tls::PrivateKeyToPem(cert.key.get());
  if (!key.ok()) {
    return key.status();
  }
  if (absl::Status status = WriteFile(dir / (name + ".crt"), text, false); !status.ok()) {
    return status;
  }
  return WriteFile(dir / (name + ".key"), *key, true);
}

int CertsDev(const Args& args) {
  if (!args.flags.contains("out")) {
    return Usage("certs dev needs --out DIR");
  }
  const std::filesystem::path dir = args.flags.at("out");
  std::vector<std::string> services = {"greeter"};
  if (args.flags.contains("services")) {
    services = absl::StrSplit(args.flags.at("services"), ',', absl::SkipWhitespace());
  }
  tls::KeyType key_type = tls::KeyType::kEcdsaP256;
  if (args.flags.contains("key-type")) {
    const std::string& type = args.flags.at("key-type");
    if (type == "ed25519") {
      key_type = tls::KeyType::kEd25519;
    } else if (type != "ecdsa-p256") {
      return Usage(absl::StrCat("--key-type is \"", type, "\"; use ecdsa-p256 or ed25519"));
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) {
    return Usage(absl::StrCat("cannot create ", dir.string(), ": ", ec.message()));
  }
  if (std::filesystem::exists(dir / "ca.key") && !args.flags.contains("force")) {
    std::fprintf(stderr,
                 "stella: %s already holds a development PKI (ca.key); pass --force to replace "
                 "it\n",
                 dir.c_str());
    return 1;
  }
  // Each name becomes a SAN DNS entry, a URI path segment and a file name: letters, digits, '-'
  // and '.', and none of the PKI's own file names.
  for (std::size_t i = 0; i < services.size(); ++i) {
    const std::string& service = services[i];
    if (service.empty() || service.size() > 63 ||
        service.find_first_not_of(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") !=
            std::string::npos ||
        service.front() == '-' || service.front() == '.' || service.back() == '.') {
      return Usage(
          absl::StrCat("service name \"", service,
                       "\" is not a plain name (letters, digits, '-' and '.', at most 63)"));
    }
    if (service == "ca" || service == "gateway" || service == "caller") {
      return Usage(absl::StrCat("service name \"", service, "\" would overwrite the PKI's own ",
                                service, ".crt"));
    }
    if (std::find(services.begin(), services.begin() + static_cast<std::ptrdiff_t>(i), service) !=
        services.begin() + static_cast<std::ptrdiff_t>(i)) {
      return Usage(absl::StrCat("service name \"", service, "\" is listed twice"));
    }
  }

  auto fail = [](const absl::Status& status) {
    std::fprintf(stderr, "stella: %s\n", std::string(status.message()).c_str());
    return 1;
  };
  tls::CertSpec ca_spec;
  ca_spec.common_name = "Stella Development CA";
  ca_spec.organization = "Stella Router (development only)";
  ca_spec.is_ca = true;
  ca_spec.not_after = absl::Now() + absl::Hours(24 * 365);
  ca_spec.key_type = key_type;
  absl::StatusOr<tls::MintedCert> ca = tls::MintCertificate(ca_spec, nullptr);
  if (!ca.ok()) {
    return fail(ca.status());
  }
  if (absl::Status status = WritePair(dir, "ca", *ca); !status.ok()) {
    return fail(status);
  }

  tls::CertSpec gateway;
  gateway.common_name = "stella-gateway";
  gateway.organization = "Stella Router (development only)";
  gateway.dns_names = {"localhost"};
  gateway.ips = {"127.0.0.1", "::1"};
  gateway.server_auth = true;
  gateway.key_type = key_type;
  absl::StatusOr<tls::MintedCert> gateway_cert = tls::MintCertificate(gateway, &*ca);
  if (!gateway_cert.ok()) {
    return fail(gateway_cert.status());
  }
  if (absl::Status status = WritePair(dir, "gateway", *gateway_cert); !status.ok()) {
    return fail(status);
  }

  std::string service_lines;
  for (const std::string& service : services) {
    tls::CertSpec spec;
    spec.common_name = service;
    spec.organization = "Stella Router (development only)";
    spec.dns_names = {service};
    spec.uris = {"spiffe://stella.dev/service/" + service};
    spec.client_auth = true;
    spec.key_type = key_type;
    absl::StatusOr<tls::MintedCert> cert = tls::MintCertificate(spec, &*ca);
    if (!cert.ok()) {
      return fail(cert.status());
    }
    if (absl::Status status = WritePair(dir, service, *cert); !status.ok()) {
      return fail(status);
    }
    absl::StrAppend(&service_lines, "  ", service, ".crt / ", service, ".key   the service \"",
                    service, "\": SAN DNS ", service, " and URI spiffe://stella.dev/service/",
                    service, " (clientAuth). It may register \"", service,
                    "\" under the gateway's default identity rule.\n");
  }

  tls::CertSpec caller;
  caller.common_name = "caller";
  caller.organization = "Stella Router (development only)";
  caller.uris = {"spiffe://stella.dev/caller/caller"};
  caller.client_auth = true;
  caller.key_type = key_type;
  absl::StatusOr<tls::MintedCert> caller_cert = tls::MintCertificate(caller, &*ca);
  if (!caller_cert.ok()) {
    return fail(caller_cert.status());
  }
  if (absl::Status status = WritePair(dir, "caller", *caller_cert); !status.ok()) {
    return fail(status);
  }

  const std::string readme = absl::StrCat(
      "Development PKI minted by `stella certs dev` on ", tls::FormatUtc(absl::Now()),
      ". Valid for a year; for development only:\n"
      "the CA key sits next to the certificates.\n\n"
      "  ca.crt / ca.key             the CA. ca.crt goes in the gateway's ClientCaCertificatePath\n"
      "                              (TlsTransport and Callers) and in every TlsClient's\n"
      "                              ServerCaCertificatePath.\n"
      "  gateway.crt / gateway.key   the gateway's listeners (CertificatePath,\n"
      "                              CertificateKeyPath): DNS localhost, IP 127.0.0.1 and ::1\n"
      "                              (serverAuth).\n",
      service_lines,
      "  caller.crt / caller.key     a caller (TlsClient in the caller's file): URI\n"
      "                              spiffe://stella.dev/caller/caller (clientAuth).\n\n"
      "Check one with: stella certs inspect gateway.crt --key gateway.key --ca ca.crt\n");
  if (absl::Status status = WriteFile(dir / "README", readme, false); !status.ok()) {
    return fail(status);
  }
  std::printf("wrote a development PKI to %s: ca, gateway, %s, caller (see %s/README)\n",
              dir.c_str(), absl::StrJoin(services, ", ").c_str(), dir.c_str());
  return 0;
}

int CertsInspect(const Args& args) {
  if (args.positional.size() != 1) {
    return Usage("certs inspect needs exactly one FILE");
  }
  const std::string& path = args.positional[0];
  tls::CredentialSource source;
  source.certificate_path = path;
  if (args.flags.contains("password")) {
    source.password = args.flags.at("password");
  }
  // Load the chain without a key check first: inspect is for broken files too.
  std::vector<bssl::UniquePtr<X509>> chain;
  absl::StatusOr<std::string> text = tls::ReadFile(path);
  if (!text.ok()) {
    std::fprintf(stderr, "stella: %s\n", std::string(text.status().message()).c_str());
    return 1;
  }
  absl::StatusOr<std::vector<bssl::UniquePtr<X509>>> pem = tls::ParsePemCertificates(*text, path);
  if (pem.ok() && !pem->empty()) {
    chain = *std::move(pem);
  } else {
    // Not PEM: try PKCS#12 through the credential loader (it needs the password).
    absl::StatusOr<tls::Credentials> loaded =
        tls::LoadCredentials(source, tls::CertificateUsage::kClient, absl::Now());
    if (!loaded.ok()) {
      std::fprintf(stderr, "stella: %s holds no PEM certificate, and as PKCS#12: %s\n",
                   path.c_str(), std::string(loaded.status().message()).c_str());
      return 1;
    }
    chain = std::move(loaded->chain);
  }

  const absl::Time now = absl::Now();
  for (std::size_t i = 0; i < chain.size(); ++i) {
    const tls::CertificateIdentity id = tls::IdentityOf(chain[i].get());
    std::printf("%s %zu of %zu\n", i == 0 ? "certificate (leaf)" : "certificate", i + 1,
                chain.size());
    std::printf("  subject:      %s\n", id.subject.c_str());
    std::printf("  issuer:       %s\n", id.issuer.c_str());
    std::printf("  serial:       %s\n", id.serial_hex.c_str());
    std::printf("  names:        %s\n", id.DescribeNames().c_str());
    std::string validity;
    if (now < id.not_before) {
      validity = "NOT YET VALID";
    } else if (now > id.not_after) {
      validity = absl::StrCat(
          "EXPIRED ", absl::FormatDuration(absl::Trunc(now - id.not_after, absl::Minutes(1))),
          " ago");
    } else {
      validity =
          absl::StrCat("valid, expires in ",
                       absl::FormatDuration(absl::Trunc(id.not_after - now, absl::Minutes(1))));
    }
    std::printf("  valid:        %s to %s (%s)\n", tls::FormatUtc(id.not_before).c_str(),
                tls::FormatUtc(id.not_after).c_str(), validity.c_str());
    std::printf("  sha256:       %s\n", id.sha256_thumbprint.c_str());
    std::printf("  sha1:         %s\n", tls::Thumbprint(chain[i].get(), EVP_sha1()).c_str());
  }

  int code = 0;
  if (args.flags.contains("key")) {
    tls::CredentialSource with_key = source;
    with_key.key_path = args.flags.at("key");
    with_key.certificate_setting = "FILE";
    with_key.key_setting = "--key";
    absl::StatusOr<tls::Credentials> loaded =
        tls::LoadCredentials(with_key, tls::CertificateUsage::kClient, now);
    // Usage and validity are reported above; here only whether the key belongs.
    if (loaded.ok() || loaded.status().code() == absl::StatusCode::kFailedPrecondition) {
      std::printf("key:            %s matches the certificate\n", with_key.key_path.c_str());
    } else {
      std::printf("key:            DOES NOT MATCH: %s\n",
                  std::string(loaded.status().message()).c_str());
      code = 1;
    }
  }
  if (args.flags.contains("ca")) {
    tls::TrustSource trust_source;
    trust_source.ca_path = args.flags.at("ca");
    trust_source.ca_setting = "--ca";
    absl::StatusOr<tls::TrustBundle> trust = tls::LoadTrust(trust_source);
    if (!trust.ok()) {
      std::fprintf(stderr, "stella: %s\n", std::string(trust.status().message()).c_str());
      return 1;
    }
    std::vector<X509*> raw;
    raw.reserve(chain.size());
    for (const auto& cert : chain) {
      raw.push_back(cert.get());
    }
    // Either usage will do for "does it chain": try the one the certificate has.
    tls::VerifyOptions options;
    options.now = now;
    options.peer_usage = tls::CertificateUsage::kClient;
    auto result = tls::VerifyPeerChain(raw, *trust, options);
    if (std::holds_alternative<tls::VerifyFailure>(result) &&
        std::get<tls::VerifyFailure>(result).reason == tls::VerifyFailureReason::kWrongUsage) {
      options.peer_usage = tls::CertificateUsage::kServer;
      result = tls::VerifyPeerChain(raw, *trust, options);
    }
    if (std::holds_alternative<tls::VerifyResult>(result)) {
      std::printf("chain:          chains to a CA in %s\n", trust_source.ca_path.c_str());
    } else {
      const auto& failure = std::get<tls::VerifyFailure>(result);
      std::printf("chain:          REFUSED [%s]: %s\n",
                  tls::VerifyFailureReasonName(failure.reason), failure.sentence.c_str());
      code = 1;
    }
  }
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && (std::string(argv[1]) == "--help" || std::string(argv[1]) == "help")) {
    std::printf("%s", kUsage);
    return 0;
  }
  if (argc < 3 || std::string(argv[1]) != "certs") {
    return Usage(argc < 2 ? "no command" : absl::StrCat("unknown command \"", argv[1], "\""));
  }
  const std::string command = argv[2];
  if (command == "dev") {
    absl::StatusOr<Args> args =
        ParseArgs(argc, argv, 3, {"out", "services", "key-type"}, {"force"});
    return args.ok() ? CertsDev(*args) : Usage(std::string(args.status().message()));
  }
  if (command == "inspect") {
    absl::StatusOr<Args> args = ParseArgs(argc, argv, 3, {"key", "ca", "password"}, {});
    return args.ok() ? CertsInspect(*args) : Usage(std::string(args.status().message()));
  }
  return Usage(absl::StrCat("unknown command \"certs ", command, "\""));
}
