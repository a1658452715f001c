// Minting certificates, keys, CRLs and PKCS#12 files with BoringSSL: the development PKI of
// `stella certs dev` and the test PKI of tests/support/. Nothing here is used on a handshake path.
#ifndef STELLA_RUNTIME_TLS_CERT_BUILDER_H_
#define STELLA_RUNTIME_TLS_CERT_BUILDER_H_

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "runtime/boringssl.h"  // must come first: refuses OpenSSL 3 headers

namespace stella::runtime::tls {

enum class KeyType { kEcdsaP256, kEd25519 };

// What to put in a certificate.
struct CertSpec {
  std::string common_name;
  std::string organization;
  std::vector<std::string> dns_names;
  std::vector<std::string> uris;
  std::vector<std::string> ips;
  bool is_ca = false;
  // Extended key usages; with neither set, the certificate has no EKU extension.
  bool server_auth = false;
  bool client_auth = false;
  absl::Time not_before = absl::Now() - absl::Hours(1);
  absl::Time not_after = absl::Now() + absl::Hours(24 * 365);
  // If set, a CRL distribution point with this URL.
  std::string crl_url;
  // 0 picks a random 64-bit serial.
  std::uint64_t serial = 0;
  KeyType key_type = KeyType::kEcdsaP256;
};

// A certificate and its private key.
struct MintedCert {
  bssl::UniquePtr<X509> cert;
  bssl::UniquePtr<EVP_PKEY> key;
};

// Mints a key of `spec.key_type` and a certificate for it, signed by `issuer` or, when `issuer`
// is null, self-signed. INTERNAL with BoringSSL's reasons if a step fails.
absl::StatusOr<MintedCert> MintCertificate(const CertSpec& spec, const MintedCert* issuer);

// PEM text of a certificate.
absl::StatusOr<std::string> CertificateToPem(X509* cert);

// PKCS#8 PEM of a private key; encrypted with AES-256-CBC under `password` unless it is empty.
absl::StatusOr<std::string> PrivateKeyToPem(EVP_PKEY* key, absl::string_view password = "");

// One revoked certificate for MintCrl.
struct RevokedCert {
  X509* cert;
  absl::Time revoked_at;
};

// A PEM CRL signed by `issuer`, listing `revoked`.
absl::StatusOr<std::string> MintCrl(const MintedCert& issuer,
                                    const std::vector<RevokedCert>& revoked, absl::Time this_update,
                                    absl::Time next_update);

// A DER PKCS#12 file holding `cert`, its `key` and the `chain` certificates, under `password`,
// in the legacy encoding (3DES-encrypted key, RC2-40-encrypted certificates, SHA-1 MAC) that
// BoringSSL can write. (Modern AES/SHA-256 files are read too; tests make them with `openssl`.)
absl::StatusOr<std::string> MintLegacyPkcs12(X509* cert, EVP_PKEY* key,
                                             const std::vector<X509*>& chain,
                                             absl::string_view password);

}  // namespace stella::runtime::tls

#endif  // STELLA_RUNTIME_TLS_CERT_BUILDER_H_
