// Loading a certificate chain and its private key — from PEM, from PKCS#12, or by thumbprint from
// a store directory — and checking that they are fit to serve before anything uses them.
#ifndef STELLA_RUNTIME_TLS_CREDENTIALS_H_
#define STELLA_RUNTIME_TLS_CREDENTIALS_H_

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/boringssl.h"  // must come first: refuses OpenSSL 3 headers
#include "runtime/tls/x509.h"

namespace stella::runtime::tls {

// Which extended key usage a leaf certificate needs for its role.
enum class CertificateUsage {
  kServer,  // serverAuth: the gateway's listener certificates
  kClient,  // clientAuth: services' and callers' certificates
};

// Where a certificate comes from, in the words of the configuration (setting names are used in
// error messages so an operator knows which line to fix).
struct CredentialSource {
  // A PEM file with the certificate chain (leaf first), or a PKCS#12 file (.p12/.pfx, or any file
  // that is not PEM).
  std::string certificate_path;
  // PEM private key. Empty: the key is in `certificate_path` (PEM with both, or PKCS#12).
  std::string key_path;
  // Password of an encrypted PEM key or of a PKCS#12 file.
  std::string password;
  // SHA-1 or SHA-256 thumbprint (hex, any case, colons allowed) to look up in `store_path`
  // instead of `certificate_path`.
  std::string thumbprint;
  // Directory of PEM (cert + key in one file, or NAME.crt/.pem beside NAME.key) and PKCS#12 files.
  std::string store_path;

  // Setting names for messages.
  std::string certificate_setting = "CertificatePath";
  std::string key_setting = "CertificateKeyPath";
  std::string password_setting = "CertificatePassword";
  std::string thumbprint_setting = "CertificateThumbprint";
  std::string store_setting = "CertificateStorePath";
};

// A loaded, checked certificate chain and key. Immutable once built.
struct Credentials {
  bssl::UniquePtr<EVP_PKEY> key;
  std::vector<bssl::UniquePtr<X509>> chain;  // leaf first, then intermediates
  CertificateIdentity leaf;
  // Where it came from, e.g. "CertificatePath=/etc/stella/gw.crt".
  std::string origin;
};

// Loads and checks credentials. Fails with a sentence naming the file and setting when a file is
// missing or unreadable (NOT_FOUND, PERMISSION_DENIED), does not parse, the password is wrong or
// missing, the key does not match the certificate (INVALID_ARGUMENT), the leaf is expired or not
// yet valid at `now`, or it lacks the extended key usage `usage` needs (FAILED_PRECONDITION). A
// leaf with no extended key usage extension at all is accepted, as RFC 5280 allows.
absl::StatusOr<Credentials> LoadCredentials(const CredentialSource& source, CertificateUsage usage,
                                            absl::Time now);

// Every file that LoadCredentials reads for `source` (to be watched for rotation); for a store,
// the store directory itself.
std::vector<std::string> CredentialFiles(const CredentialSource& source);

}  // namespace stella::runtime::tls

#endif  // STELLA_RUNTIME_TLS_CREDENTIALS_H_
