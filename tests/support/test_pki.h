// The test PKI, minted in-process with BoringSSL for every test that needs one: no key is ever
// checked in. Every certificate a TLS test needs — good, expired, wrong CA, wrong usage,
// revoked — with helpers to write them to files in the formats the runtime reads.
#ifndef STELLA_TESTS_SUPPORT_TEST_PKI_H_
#define STELLA_TESTS_SUPPORT_TEST_PKI_H_

#include <memory>
#include <string>
#include <vector>

#include "runtime/tls/cert_builder.h"
#include "runtime/tls/tls_context.h"
#include "tests/support/temp_dir.h"

namespace stella::testing {

using runtime::tls::CertSpec;
using runtime::tls::MintedCert;

// A leaf spec valid for a year, for `cn`, with the given usages.
CertSpec LeafSpec(const std::string& cn, bool server_auth, bool client_auth);

// Mints or dies (tests only): a failure here is a broken test environment.
MintedCert MustMint(const CertSpec& spec, const MintedCert* issuer);

class TestPki {
 public:
  // Mints the whole set. Cheap (P-256): tests make their own.
  TestPki();

  MintedCert root;          // "Stella Test Root CA"
  MintedCert intermediate;  // "Stella Test Intermediate CA", issued by root
  MintedCert other_ca;      // "Other CA", trusted by nobody
  // Gateway: CN=gateway.internal, DNS:gateway.internal, DNS:localhost, IP:127.0.0.1, serverAuth;
  // issued by root.
  MintedCert server;
  // Service "greeter": CN=greeter, DNS:greeter, URI:spiffe://example.org/ns/prod/greeter,
  // clientAuth; issued by root.
  MintedCert client;
  MintedCert client_via_intermediate;  // CN=billing, clientAuth, issued by the intermediate
  MintedCert client_other_ca;          // CN=intruder, clientAuth, issued by other_ca
  MintedCert client_expired;           // CN=expired, expired a day ago
  MintedCert client_not_yet_valid;     // CN=future, valid from tomorrow
  MintedCert client_server_auth_only;  // CN=wrong-usage, serverAuth only
  MintedCert client_revoked;           // CN=revoked, listed in crl_pem
  std::string crl_pem;                 // root's CRL revoking client_revoked; next update in 7 days

  // PEM text of a certificate, of a chain (leaf first), of a key (encrypted if a password).
  static std::string Pem(const MintedCert& cert);
  static std::string ChainPem(const std::vector<const MintedCert*>& chain);
  static std::string KeyPem(const MintedCert& cert, const std::string& password = "");

  // A TLS snapshot presenting `cert` and trusting `root`, for `role` (a client expects the server
  // name "localhost"); its files are written to `dir`.
  std::shared_ptr<const runtime::tls::TlsContext> Context(const MintedCert& cert,
                                                          runtime::tls::TlsRole role,
                                                          TempDir& dir) const;
};

}  // namespace stella::testing

#endif  // STELLA_TESTS_SUPPORT_TEST_PKI_H_
