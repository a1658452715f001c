#include "tests/support/test_pki.h"

#include <cstdio>
#include <cstdlib>

#include "runtime/tls/credentials.h"
#include "runtime/tls/trust.h"

namespace stella::testing {

using runtime::tls::MintCertificate;

CertSpec LeafSpec(const std::string& cn, bool server_auth, bool client_auth) {
  CertSpec spec;
  spec.common_name = cn;
  spec.organization = "Stella Tests";
  spec.server_auth = server_auth;
  spec.client_auth = client_auth;
  return spec;
}

MintedCert MustMint(const CertSpec& spec, const MintedCert* issuer) {
  absl::StatusOr<MintedCert> cert = MintCertificate(spec, issuer);
  if (!cert.ok()) {
    std::fprintf(stderr, "test PKI: cannot mint %s: %s\n", spec.common_name.c_str(),
                 cert.status().ToString().c_str());
    std::abort();
  }
  return *std::move(cert);
}

namespace {

CertSpec CaSpec(const std::string& cn) {
  CertSpec spec;
  spec.common_name = cn;
  spec.organization = "Stella Tests";
  spec.is_ca = true;
  spec.not_after = absl::Now() + absl::Hours(24 * 3650);
  return spec;
}

std::string MustText(absl::StatusOr<std::string> text) {
  if (!text.ok()) {
    std::fprintf(stderr, "test PKI: %s\n", text.status().ToString().c_str());
    std::abort();
  }
  return *std::move(text);
}

}  // namespace

TestPki::TestPki() {
  root = MustMint(CaSpec("Stella Test Root CA"), nullptr);
  intermediate = MustMint(CaSpec("Stella Test Intermediate CA"), &root);
  other_ca = MustMint(CaSpec("Other CA"), nullptr);

  CertSpec server_spec = LeafSpec("gateway.internal", true, false);
  server_spec.dns_names = {"gateway.internal", "localhost"};
  server_spec.ips = {"127.0.0.1"};
  server = MustMint(server_spec, &root);

  CertSpec client_spec = LeafSpec("greeter", false, true);
  client_spec.dns_names = {"greeter"};
  client_spec.uris = {"spiffe://example.org/ns/prod/greeter"};
  client = MustMint(client_spec, &root);

  client_via_intermediate = MustMint(LeafSpec("billing", false, true), &intermediate);
  client_other_ca = MustMint(LeafSpec("intruder", false, true), &other_ca);

  CertSpec expired = LeafSpec("expired", false, true);
  expired.not_before = absl::Now() - absl::Hours(24 * 30);
  expired.not_after = absl::Now() - absl::Hours(24);
  client_expired = MustMint(expired, &root);

  CertSpec future = LeafSpec("future", false, true);
  future.not_before = absl::Now() + absl::Hours(24);
  future.not_after = absl::Now() + absl::Hours(24 * 30);
  client_not_yet_valid = MustMint(future, &root);

  client_server_auth_only = MustMint(LeafSpec("wrong-usage", true, false), &root);
  client_revoked = MustMint(LeafSpec("revoked", false, true), &root);
  crl_pem = MustText(runtime::tls::MintCrl(
      root, {{client_revoked.cert.get(), absl::FromUnixSeconds(1'790'000'000)}},
      absl::Now() - absl::Hours(1), absl::Now() + absl::Hours(24 * 7)));
}

std::string TestPki::Pem(const MintedCert& cert) {
  return MustText(runtime::tls::CertificateToPem(cert.cert.get()));
}

std::string TestPki::ChainPem(const std::vector<const MintedCert*>& chain) {
  std::string out;
  for (const MintedCert* cert : chain) {
    out += Pem(*cert);
  }
  return out;
}

std::string TestPki::KeyPem(const MintedCert& cert, const std::string& password) {
  return MustText(runtime::tls::PrivateKeyToPem(cert.key.get(), password));
}

std::shared_ptr<const runtime::tls::TlsContext> TestPki::Context(const MintedCert& cert,
                                                                 runtime::tls::TlsRole role,
                                                                 TempDir& dir) const {
  static int files = 0;
  const std::string name = "context-" + std::to_string(++files);
  runtime::tls::CredentialSource source;
  source.certificate_path = dir.Write(name + ".pem", Pem(cert) + KeyPem(cert));
  runtime::tls::TrustSource trust;
  trust.ca_path = dir.Write(name + "-ca.pem", Pem(root));
  runtime::tls::TlsOptions options;
  options.role = role;
  options.expected_server_name = role == runtime::tls::TlsRole::kClient ? "localhost" : "";
  const auto usage = role == runtime::tls::TlsRole::kServer
                         ? runtime::tls::CertificateUsage::kServer
                         : runtime::tls::CertificateUsage::kClient;
  auto credentials = runtime::tls::LoadCredentials(source, usage, absl::Now());
  auto trust_bundle = runtime::tls::LoadTrust(trust);
  if (!credentials.ok() || !trust_bundle.ok()) {
    std::fprintf(stderr, "test PKI: %s %s\n", credentials.status().ToString().c_str(),
                 trust_bundle.status().ToString().c_str());
    std::abort();
  }
  auto context =
      runtime::tls::TlsContext::Create(options, *std::move(credentials), *std::move(trust_bundle));
  if (!context.ok()) {
    std::fprintf(stderr, "test PKI: %s\n", context.status().ToString().c_str());
    std::abort();
  }
  return *std::move(context);
}

}  // namespace stella::testing
