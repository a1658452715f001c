// Trust: the CA certificates a peer's chain must lead to, the CRLs that revoke certificates, and
// chain verification whose failures are sentences an operator can act on.
#ifndef STELLA_RUNTIME_TLS_TRUST_H_
#define STELLA_RUNTIME_TLS_TRUST_H_

#include <openssl/x509.h>

#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "runtime/boringssl.h"  // must come first: refuses OpenSSL 3 headers
#include "runtime/tls/credentials.h"

namespace stella::runtime::tls {

// How revocation is checked (configuration key RevocationMode).
enum class RevocationMode {
  kNoCheck,  // no revocation check
  kOffline,  // the peer's certificate is checked against its issuer's CRL from CrlPaths
  kOnline,   // as Offline, with CRLs fetched from the certificate's HTTP distribution point
};

// Returns "NoCheck", "Offline" or "Online".
const char* RevocationModeName(RevocationMode mode);

// Where trust comes from, in the configuration's words.
struct TrustSource {
  // A PEM bundle file, or a directory whose *.pem / *.crt / *.cer files are bundles.
  std::string ca_path;
  std::string ca_setting = "ClientCaCertificatePath";
  // PEM or DER CRL files.
  std::vector<std::string> crl_paths;
  RevocationMode revocation_mode = RevocationMode::kNoCheck;
};

// Loaded trust, immutable once built; shared by every handshake of one snapshot.
struct TrustBundle {
  std::vector<bssl::UniquePtr<X509>> cas;
  std::vector<bssl::UniquePtr<X509_CRL>> crls;
  // The CA certificates, plus the CRLs when revocation is Offline, ready for verification.
  bssl::UniquePtr<X509_STORE> store;
  RevocationMode revocation_mode = RevocationMode::kNoCheck;
  // "ClientCaCertificatePath=/etc/stella/client-ca.crt", for messages.
  std::string ca_origin;
  // "CrlPaths=/a.crl, /b.crl", for messages.
  std::string crl_origin;
};

// Loads the CA certificates and CRLs. Fails, naming the file and setting, when one is missing,
// holds nothing usable or does not parse; or when Offline/Online revocation is asked for without
// any CRL source (Offline needs CrlPaths).
absl::StatusOr<TrustBundle> LoadTrust(const TrustSource& source);

// Files LoadTrust reads (to be watched for rotation): the CA path and the CRL paths.
std::vector<std::string> TrustFiles(const TrustSource& source);

// Why a peer's certificate was refused; the name is a stable metrics label.
enum class VerifyFailureReason {
  kNoPeerCertificate,  // "no_certificate"
  kUnknownIssuer,      // "unknown_ca"
  kExpired,            // "expired"
  kNotYetValid,        // "not_yet_valid"
  kRevoked,            // "revoked"
  kCrlMissing,         // "crl_missing"
  kCrlExpired,         // "crl_expired"
  kCrlInvalid,         // "crl_invalid"
  kNameMismatch,       // "name_mismatch"
  kWrongUsage,         // "wrong_usage"
  kBadSignature,       // "bad_signature"
  kOther,              // "other"
};

// The metrics label of `reason`, e.g. "unknown_ca".
const char* VerifyFailureReasonName(VerifyFailureReason reason);

// A refused peer certificate: the reason, and a sentence with what was expected, what was found
// and which setting or file to look at.
struct VerifyFailure {
  VerifyFailureReason reason;
  std::string sentence;
};

// How to verify one peer chain.
struct VerifyOptions {
  // The usage the peer's certificate must allow: kClient when a server verifies its clients.
  CertificateUsage peer_usage = CertificateUsage::kClient;
  // Client side: the host name or IP address the server certificate must name; empty skips the
  // check.
  std::string expected_name;
  std::string expected_name_setting = "ExpectedServerName";
  absl::Time now = absl::Now();
  // Dev only: accept a chain whose root is not trusted (other checks still apply).
  bool allow_untrusted_root = false;
  // Extra CRLs to check against, with revocation checked even in NoCheck/Online modes (Online
  // uses this with the CRLs it fetched). Not owned.
  std::vector<X509_CRL*> extra_crls;
  std::string extra_crl_origin;
};

// The outcome of a verification that did not fail.
struct VerifyResult {
  CertificateIdentity peer;
  // True if the chain was accepted only because allow_untrusted_root was set.
  bool relied_on_untrusted_root = false;
};

// Verifies `chain` (the peer's leaf first, then whatever intermediates it sent) against `trust`.
// Returns the failure, or the verified peer's identity. Thread-safe: `trust` is only read.
std::variant<VerifyResult, VerifyFailure> VerifyPeerChain(const std::vector<X509*>& chain,
                                                          const TrustBundle& trust,
                                                          const VerifyOptions& options);

}  // namespace stella::runtime::tls

#endif  // STELLA_RUNTIME_TLS_TRUST_H_
